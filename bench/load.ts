/**
 * The load generators.
 *
 * Open loop ({@link runOpenLoop}): every send is scheduled in advance
 * ({@link planLoad}); each simulated recording sends its chunks in order,
 * one at a time as a browser does, and a send whose previous chunk is still
 * in flight waits, but its latency is always counted from its scheduled
 * time, so a slow server cannot hide behind a slow client.
 *
 * Closed loop ({@link runClosedLoop}): K uploaders send fixed-size chunks
 * back to back, for raw saturation throughput.
 */

import { selfCpuS } from "./proc_stats.ts";
import {
  type LatencySummary,
  normal,
  seededRandom,
  summarize,
  toMB,
} from "./stats.ts";
import { type UploadClient, UploadError } from "./upload_clients.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

/** What an open-loop phase plays. */
export interface LoadShape {
  /** Recordings being recorded at once. */
  slots: number;
  /** Length of the phase, in seconds. */
  durationS: number;
  /** Multiplies every chunk interval (1: one chunk every 0.5-2 s). */
  intervalScale?: number;
  /**
   * Length of one recording, [min, max] seconds; when a recording ends its
   * slot starts a new one. Default: one recording per slot for the phase.
   */
  recordingS?: [number, number];
  /** Seed of the schedule (the same seed plays the same schedule). */
  seed?: number;
}

/** One scheduled chunk. */
export interface PlannedSend {
  /** When to send it, ms after the phase start. */
  atMs: number;
  /** Its first byte in the recording. */
  offset: number;
  size: number;
}

/** One simulated recording: created at `startMs`, then its chunks. */
export interface PlannedRecording {
  startMs: number;
  sends: PlannedSend[];
}

/**
 * A MediaRecorder-like chunk size: log-normal around a 512 KiB median
 * (sigma 0.6), clamped to 100 KiB - 2 MiB.
 */
export function chunkSize(random: () => number): number {
  const size = Math.round(512 * KIB * Math.exp(0.6 * normal(random)));
  return Math.min(2 * MIB, Math.max(100 * KIB, size));
}

/**
 * Plans every create and send of a phase. Each recording gets a base chunk
 * interval uniform in 0.5-2 s (times `intervalScale`) and each gap is that
 * base with +-15% jitter; slots start spread over the first 2 s.
 */
export function planLoad(shape: LoadShape): PlannedRecording[] {
  const random = seededRandom(shape.seed ?? 1);
  const scale = shape.intervalScale ?? 1;
  const endMs = shape.durationS * 1000;
  const plans: PlannedRecording[] = [];
  for (let slot = 0; slot < shape.slots; slot++) {
    let t = random() * 2000 * scale;
    while (t < endMs) {
      const [min, max] = shape.recordingS ?? [shape.durationS, shape.durationS];
      const stopMs = Math.min(endMs, t + (min + random() * (max - min)) * 1000);
      const base = (0.5 + 1.5 * random()) * 1000 * scale;
      const sends: PlannedSend[] = [];
      let at = t;
      let offset = 0;
      while (true) {
        at += base * (0.85 + 0.3 * random());
        if (at > stopMs) break;
        const size = chunkSize(random);
        sends.push({ atMs: at, offset, size });
        offset += size;
      }
      if (sends.length > 0) plans.push({ startMs: t, sends });
      t = stopMs + random() * 1000 * scale;
    }
  }
  return plans;
}

/** Bytes the plan sends per second, in MB/s. */
export function offeredMBps(plans: PlannedRecording[], durationS: number) {
  const bytes = plans.reduce(
    (sum, p) => sum + p.sends.reduce((s, c) => s + c.size, 0),
    0,
  );
  return toMB(bytes) / durationS;
}

/** `size` bytes of the source from `offset`, wrapping around its end. */
export function sliceSource(
  source: Uint8Array<ArrayBuffer>,
  offset: number,
  size: number,
): Uint8Array<ArrayBuffer> {
  const start = offset % source.length;
  if (start + size <= source.length) {
    return source.subarray(start, start + size);
  }
  const out = new Uint8Array(size);
  let filled = 0;
  let from = start;
  while (filled < size) {
    const n = Math.min(size - filled, source.length - from);
    out.set(source.subarray(from, from + n), filled);
    filled += n;
    from = 0;
  }
  return out;
}

/** A recording the open loop created, and when it was completed. */
export interface PlayedRecording {
  handle: string;
  bytes: number;
  /** performance.now() when complete_job was sent, if it was. */
  completeSentAt?: number;
  /** performance.now() when complete_job answered 200, if it did. */
  completedAt?: number;
}

/** The outcome of an open-loop phase. */
export interface OpenLoopResult {
  recordings: number;
  sends: number;
  offeredMBps: number;
  /** Acknowledged bytes over the time from the phase start to the last ack. */
  ackedMBps: number;
  bytesAcked: number;
  /** add_data latency from the scheduled time to the answer. */
  latency: LatencySummary;
  /** add_data time from the request start to the answer. */
  serviceMs: LatencySummary;
  /** How late the client's own timers fired (client overload shows here). */
  clientLagMs: LatencySummary;
  createMs: LatencySummary;
  completeMs: LatencySummary;
  errors: number;
  /** Errors by kind: "add_data 507", "create network", ... */
  errorKinds: Record<string, number>;
  wallS: number;
  /** CPU of the bench process (the client) over the phase, % of one core. */
  clientCpuPercent: number;
  played: PlayedRecording[];
}

function sleepUntil(t: number): Promise<void> {
  const wait = t - performance.now();
  return wait > 0
    ? new Promise((resolve) => setTimeout(resolve, wait))
    : Promise.resolve();
}

function errorKind(what: string, err: unknown): string {
  const status = err instanceof UploadError ? err.status : -1;
  return `${what} ${status === 0 ? "network" : status}`;
}

/** Options of {@link runOpenLoop}. */
export interface OpenLoopOptions {
  /** Send complete_job after a recording's last chunk (default true). */
  complete?: boolean;
  /** Called after each add_data with its scheduled time and latency (ms). */
  onSample?: (scheduledAt: number, latencyMs: number) => void;
}

/** Plays `plans` against `client`, open loop. */
export async function runOpenLoop(
  client: UploadClient,
  plans: PlannedRecording[],
  source: Uint8Array<ArrayBuffer>,
  options: OpenLoopOptions = {},
): Promise<OpenLoopResult> {
  const complete = options.complete ?? true;
  const latencies: number[] = [];
  const service: number[] = [];
  const lags: number[] = [];
  const creates: number[] = [];
  const completes: number[] = [];
  const errorKinds: Record<string, number> = {};
  const played: PlayedRecording[] = [];
  let errors = 0;
  let bytesAcked = 0;
  let lastAck = 0;
  const fail = (kind: string, count = 1) => {
    errors += count;
    errorKinds[kind] = (errorKinds[kind] ?? 0) + count;
  };
  const cpu0 = selfCpuS();
  const t0 = performance.now() + 250;

  async function play(plan: PlannedRecording): Promise<void> {
    await sleepUntil(t0 + plan.startMs);
    lags.push(performance.now() - (t0 + plan.startMs));
    let handle: string;
    const createStart = performance.now();
    try {
      handle = await client.create();
      creates.push(performance.now() - createStart);
    } catch (err) {
      fail(errorKind("create", err));
      fail("add_data not sent (create failed)", plan.sends.length);
      return;
    }
    const rec: PlayedRecording = { handle, bytes: 0 };
    played.push(rec);
    let previousEnd = 0;
    for (const [index, send] of plan.sends.entries()) {
      const scheduled = t0 + send.atMs;
      await sleepUntil(scheduled);
      const start = performance.now();
      lags.push(start - Math.max(scheduled, previousEnd));
      try {
        await client.send(
          handle,
          index,
          sliceSource(source, send.offset, send.size),
          send.offset,
        );
        const end = performance.now();
        bytesAcked += send.size;
        rec.bytes = send.offset + send.size;
        lastAck = Math.max(lastAck, end);
      } catch (err) {
        fail(errorKind("add_data", err));
      }
      previousEnd = performance.now();
      latencies.push(previousEnd - scheduled);
      service.push(previousEnd - start);
      options.onSample?.(scheduled, previousEnd - scheduled);
    }
    if (!complete || rec.bytes === 0) return;
    rec.completeSentAt = performance.now();
    try {
      await client.complete(handle, rec.bytes);
      rec.completedAt = performance.now();
      completes.push(rec.completedAt - rec.completeSentAt);
    } catch (err) {
      fail(errorKind("complete", err));
    }
  }

  const lastPlanned = Math.max(
    ...plans.map((p) => p.sends[p.sends.length - 1].atMs),
  );
  await Promise.all(plans.map(play));
  const wallS = (performance.now() - t0) / 1000;
  return {
    recordings: plans.length,
    sends: latencies.length,
    offeredMBps: offeredMBps(plans, lastPlanned / 1000),
    ackedMBps: toMB(bytesAcked) / Math.max(1e-3, (lastAck - t0) / 1000),
    bytesAcked,
    latency: summarize(latencies),
    serviceMs: summarize(service),
    clientLagMs: summarize(lags),
    createMs: summarize(creates),
    completeMs: summarize(completes),
    errors,
    errorKinds,
    wallS,
    clientCpuPercent: ((selfCpuS() - cpu0) / wallS) * 100,
    played,
  };
}

/** The outcome of a closed-loop run. */
export interface ClosedLoopResult {
  uploaders: number;
  chunkBytes: number;
  MBps: number;
  bytesAcked: number;
  latency: LatencySummary;
  errors: number;
  errorKinds: Record<string, number>;
  wallS: number;
  clientCpuPercent: number;
}

/**
 * `uploaders` recordings each send `chunkBytes` chunks back to back for
 * `durationS`; throughput counts acknowledged bytes only.
 */
export async function runClosedLoop(
  client: UploadClient,
  source: Uint8Array<ArrayBuffer>,
  options: { uploaders: number; durationS: number; chunkBytes: number },
): Promise<ClosedLoopResult> {
  const latencies: number[] = [];
  const errorKinds: Record<string, number> = {};
  let errors = 0;
  let bytesAcked = 0;
  const handles = await Promise.all(
    Array.from({ length: options.uploaders }, () => client.create()),
  );
  const cpu0 = selfCpuS();
  const start = performance.now();
  const deadline = start + options.durationS * 1000;
  let lastEnd = start;
  await Promise.all(handles.map(async (handle) => {
    let offset = 0;
    for (let index = 0; performance.now() < deadline; index++) {
      const t = performance.now();
      try {
        await client.send(
          handle,
          index,
          sliceSource(source, offset, options.chunkBytes),
          offset,
        );
        bytesAcked += options.chunkBytes;
        offset += options.chunkBytes;
      } catch (err) {
        errors++;
        const kind = errorKind("add_data", err);
        errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
        if (errors > 1000) break;
      }
      lastEnd = performance.now();
      latencies.push(lastEnd - t);
    }
  }));
  const wallS = (lastEnd - start) / 1000;
  return {
    uploaders: options.uploaders,
    chunkBytes: options.chunkBytes,
    MBps: toMB(bytesAcked) / wallS,
    bytesAcked,
    latency: summarize(latencies),
    errors,
    errorKinds,
    wallS,
    clientCpuPercent: ((selfCpuS() - cpu0) / wallS) * 100,
  };
}
