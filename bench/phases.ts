/**
 * The phases of the benchmark. Each phase starts its servers as separate
 * processes over a fresh data folder, samples their memory and CPU from
 * /proc, and removes the folder afterwards.
 */

import { statfs } from "node:fs/promises";
import {
  type ByHandResult,
  diskFilePerChunk,
  diskFlushedWrite,
  type DiskResult,
  ffmpegByHand,
} from "./baselines.ts";
import {
  type ClosedLoopResult,
  type OpenLoopResult,
  planLoad,
  runClosedLoop,
  runOpenLoop,
} from "./load.ts";
import {
  type LiveProbe,
  type LiveSummary,
  openLiveProbe,
  summarizeProbe,
} from "./live_probe.ts";
import type { MediaFile } from "./media.ts";
import { ProcSampler, type ProcSummary } from "./proc_stats.ts";
import { finishedFiles, uploadFile, waitForDone } from "./recording_io.ts";
import { type ServerKind, type ServerProcess, startServer } from "./servers.ts";
import { type LatencySummary, median, summarize } from "./stats.ts";
import { apiClient, tusClient, type UploadClient } from "./upload_clients.ts";

export { liveViewPhase, type LiveViewRun } from "./live_view.ts";
export { liveMp4Phase, type LiveMp4Run } from "./live_mp4.ts";

/** How long and how hard each phase runs. */
export interface BenchSettings {
  quick: boolean;
  /** The start of the source recording, for each server's warm-up. */
  warmUpSource?: Uint8Array<ArrayBuffer>;
  /** Folder under which every phase gets its own data folder. */
  dataRoot: string;
  diskS: number;
  closedLoopS: number;
  closedLoopUploaders: number[];
  steady: { slots: number; durationS: number }[];
  stepKinds: ServerKind[];
  stepS: number;
  /** Offered load of each step, as multiples of 100 recordings at 0.5-2 s. */
  stepMultipliers: number[];
  processingReps: number;
  reencodeIngestS: number;
  /** Also time the re-encode by hand (about 20 s of CPU). */
  reencodeByHand: boolean;
  /** Wait for the re-encode to finish (to time it under load). */
  reencodeWait: boolean;
  soakS: number;
  soakSlots: number;
}

/** The settings of `deno task bench --quick` and of the full run. */
export function settingsFor(quick: boolean, dataRoot: string): BenchSettings {
  return quick
    ? {
      quick,
      dataRoot,
      diskS: 3,
      closedLoopS: 3,
      closedLoopUploaders: [8],
      steady: [
        { slots: 10, durationS: 6 },
        { slots: 50, durationS: 12 },
        { slots: 100, durationS: 6 },
      ],
      stepKinds: ["tapedeck"],
      stepS: 4,
      stepMultipliers: [1, 2, 3, 4, 6, 8],
      processingReps: 1,
      reencodeIngestS: 12,
      reencodeByHand: false,
      reencodeWait: false,
      soakS: 0,
      soakSlots: 0,
    }
    : {
      quick,
      dataRoot,
      diskS: 8,
      closedLoopS: 8,
      closedLoopUploaders: [1, 4, 16, 32],
      steady: [10, 50, 100, 200].map((slots) => ({ slots, durationS: 60 })),
      stepKinds: ["tapedeck", "bare", "tus"],
      stepS: 10,
      stepMultipliers: [1, 2, 3, 4, 5, 6, 7, 8, 12, 16],
      processingReps: 3,
      reencodeIngestS: 60,
      reencodeByHand: true,
      reencodeWait: true,
      soakS: 600,
      soakSlots: 25,
    };
}

function clientFor(server: ServerProcess): UploadClient {
  return server.kind === "tus" ? tusClient(server.url) : apiClient(server.url);
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return Number(s.bavail) * Number(s.bsize);
}

/** Throws unless `dir`'s disk has `bytes` free (plus a 2 GiB margin). */
async function requireFree(dir: string, bytes: number, what: string) {
  const free = await freeBytes(dir);
  if (free < bytes + 2 * 1024 ** 3) {
    throw new Error(
      `${what} needs about ${(bytes / 1e9).toFixed(1)} GB free, the disk has ${
        (free / 1e9).toFixed(1)
      } GB`,
    );
  }
}

/** What a phase measured of its server process. */
export interface ServerStats {
  kind: ServerKind;
  proc: ProcSummary;
}

/** Flushes every dirty page (the last phase's writes) before the next. */
export async function settleDisk(): Promise<void> {
  await new Deno.Command("sync").output();
  await new Promise((r) => setTimeout(r, 500));
}

/** Sends one short recording so the server is warm (JIT, pools, files). */
export async function warmUp(
  server: ServerProcess,
  source?: Uint8Array<ArrayBuffer>,
) {
  if (!source) return;
  const client = clientFor(server);
  const handle = await client.create();
  for (let i = 0; i < 10; i++) {
    const offset = i * 256 * 1024;
    await client.send(
      handle,
      i,
      source.subarray(offset, offset + 256 * 1024),
      offset,
    );
  }
}

/**
 * Runs `fn` against a fresh, warmed-up server of `kind` over a new data
 * folder, sampling the server from /proc, then stops it and removes the
 * folder. The disk is synced first so one phase's writeback does not land
 * in the next.
 */
export async function withServer<T>(
  settings: BenchSettings,
  kind: ServerKind,
  fn: (server: ServerProcess, sampler: ProcSampler) => Promise<T>,
  sampleMs = 250,
): Promise<{ result: T; server: ServerStats }> {
  const dataDir = await Deno.makeTempDir({
    dir: settings.dataRoot,
    prefix: `${kind}-`,
  });
  await settleDisk();
  const server = await startServer(kind, dataDir);
  let sampler: ProcSampler | undefined;
  try {
    await warmUp(server, settings.warmUpSource);
    sampler = new ProcSampler(server.pid, sampleMs);
    const result = await fn(server, sampler);
    return { result, server: { kind, proc: sampler.stop() } };
  } catch (err) {
    sampler?.stop();
    const out = server.output().split("\n").slice(-20).join("\n");
    throw new Error(
      `${(err as Error).message}\n--- ${kind} output ---\n${out}`,
    );
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

// ---------------------------------------------------------------- disk

/** The disk baselines. */
export interface DiskPhase {
  /** One file, 512 KiB writes, fdatasync after each. */
  flushed: DiskResult;
  /** tapedeck's pattern without HTTP/KV: a new file per 512 KiB + fsync file and folder, 4 writers. */
  filePerChunk: DiskResult;
}

/** Measures the disk baselines in the data folder. */
export async function diskPhase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
): Promise<DiskPhase> {
  await requireFree(settings.dataRoot, 400e6 * settings.diskS, "disk test");
  const block = source.slice(0, 512 * 1024);
  return {
    flushed: await diskFlushedWrite(settings.dataRoot, block, settings.diskS),
    filePerChunk: await diskFilePerChunk(
      settings.dataRoot,
      block,
      settings.diskS,
      4,
    ),
  };
}

// ---------------------------------------------------------- closed loop

/** One closed-loop run. */
export interface ClosedLoopRun extends ClosedLoopResult {
  kind: ServerKind;
  server: ProcSummary;
}

/** Closed-loop saturation: each server, each uploader count. */
export async function closedLoopPhase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
): Promise<ClosedLoopRun[]> {
  const runs: ClosedLoopRun[] = [];
  for (const uploaders of settings.closedLoopUploaders) {
    for (const kind of ["tapedeck", "bare", "tus"] as const) {
      await requireFree(settings.dataRoot, 500e6 * settings.closedLoopS, kind);
      const { result, server } = await withServer(
        settings,
        kind,
        (s) =>
          runClosedLoop(clientFor(s), source, {
            uploaders,
            durationS: settings.closedLoopS,
            chunkBytes: 512 * 1024,
          }),
      );
      runs.push({ ...result, kind, server: server.proc });
      log(
        `closed loop ${kind} x${uploaders}: ${
          result.MBps.toFixed(1)
        } MB/s, p99 ${
          result.latency.p99.toFixed(0)
        } ms, errors ${result.errors}`,
      );
    }
  }
  return runs;
}

// ------------------------------------------------------------ open loop

/** An open-loop phase against tapedeck with its server's figures. */
export interface SteadyRun {
  slots: number;
  durationS: number;
  load: Omit<OpenLoopResult, "played">;
  server: ProcSummary;
  live?: LiveSummary;
}

/** Steady load at each N of the settings. */
export async function steadyPhase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
  onLive: (live: LiveSummary | null) => void,
): Promise<SteadyRun[]> {
  const runs: SteadyRun[] = [];
  for (const [i, { slots, durationS }] of settings.steady.entries()) {
    const plans = planLoad({ slots, durationS, seed: 100 + i });
    await requireFree(
      settings.dataRoot,
      plans.reduce((s, p) => s + p.sends.reduce((a, c) => a + c.size, 0), 0),
      `N=${slots}`,
    );
    let live: LiveSummary | undefined;
    const { result, server } = await withServer(
      settings,
      "tapedeck",
      async (s) => {
        const probe = slots === 50 ? await openLiveProbe(s.url) : null;
        if (slots === 50) onLive(null);
        const { played: _, ...load } = await runOpenLoop(
          clientFor(s),
          plans,
          source,
        );
        if (probe) {
          await new Promise((r) => setTimeout(r, 500));
          live = summarizeProbe(probe);
          onLive(live);
          await probe.close();
        }
        return load;
      },
    );
    runs.push({ slots, durationS, load: result, server: server.proc, live });
    log(
      `steady N=${slots}: offered ${
        result.offeredMBps.toFixed(1)
      } MB/s, acked ${result.ackedMBps.toFixed(1)}, p50 ${
        result.latency.p50.toFixed(1)
      } p99 ${result.latency.p99.toFixed(1)} max ${
        result.latency.max.toFixed(0)
      } ms, errors ${errorText(result)}, RSS peak ${
        server.proc.peakRssMiB.toFixed(0)
      } MiB`,
    );
  }
  return runs;
}

/** One step of a step-up. */
export interface Step {
  multiplier: number;
  offeredMBps: number;
  ackedMBps: number;
  latency: LatencySummary;
  errors: number;
  errorKinds: Record<string, number>;
  clientCpuPercent: number;
  clientLagP99: number;
  passed: boolean;
}

/** A server's open-loop step-up to saturation. */
export interface StepUp {
  kind: ServerKind;
  steps: Step[];
  /** Acknowledged MB/s of the last step with p99 <= 1 s and no errors. */
  saturationMBps: number;
  server: ProcSummary;
}

/** Raises offered MB/s until p99 passes 1 s or errors appear, per server. */
export async function stepUpPhase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
): Promise<StepUp[]> {
  const out: StepUp[] = [];
  for (const kind of settings.stepKinds) {
    const { result, server } = await withServer(settings, kind, async (s) => {
      const steps: Step[] = [];
      for (const [i, multiplier] of settings.stepMultipliers.entries()) {
        const plans = planLoad({
          slots: 100,
          durationS: settings.stepS,
          intervalScale: 1 / multiplier,
          seed: 200 + i,
        });
        const r = await runOpenLoop(clientFor(s), plans, source, {
          complete: false,
        });
        const passed = r.errors === 0 && r.latency.p99 <= 1000;
        steps.push({
          multiplier,
          offeredMBps: r.offeredMBps,
          ackedMBps: r.ackedMBps,
          latency: r.latency,
          errors: r.errors,
          errorKinds: r.errorKinds,
          clientCpuPercent: r.clientCpuPercent,
          clientLagP99: r.clientLagMs.p99,
          passed,
        });
        log(
          `step-up ${kind} x${multiplier}: offered ${
            r.offeredMBps.toFixed(0)
          } MB/s, acked ${r.ackedMBps.toFixed(0)}, p99 ${
            r.latency.p99.toFixed(0)
          } ms, errors ${errorText(r)}`,
        );
        if (!passed) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      return steps;
    });
    const passing = result.filter((s) => s.passed);
    out.push({
      kind,
      steps: result,
      saturationMBps: passing.length
        ? Math.max(...passing.map((s) => s.ackedMBps))
        : 0,
      server: server.proc,
    });
  }
  return out;
}

// ----------------------------------------------------------- processing

/** Processing time of one kind of recording, ours against ffmpeg by hand. */
export interface ProcessingRun {
  label: string;
  codec: string;
  durationS: number;
  bytes: number;
  /** complete_job sent -> status complete seen, each repetition, s. */
  oursS: number[];
  oursMedianS: number;
  /** The same with `?last_chunk=N` on complete_job (no grace to wait), s. */
  hintedS: number[];
  hintedMedianS: number;
  byHand: ByHandResult[];
  byHandMedian: ByHandResult;
  /** Ours per recording minute, s. */
  oursPerMinuteS: number;
  /** Stages of the median run: seconds from complete_job to first seen. */
  stages: { stage: string; atS: number }[];
  status: string;
  files: string[];
}

interface JobTiming {
  seconds: number;
  status: string;
  durationS?: number;
  files: string[];
  /** Seconds from complete_job until each stage was first seen. */
  stages: { stage: string; atS: number }[];
}

async function timeJob(
  server: ServerProcess,
  client: UploadClient,
  media: MediaFile,
  probe: LiveProbe | null,
  timeoutMs: number,
): Promise<JobTiming> {
  const { handle } = await uploadFile(client, media.path);
  const live = probe?.waitForStatus(handle, "complete", timeoutMs);
  live?.catch(() => {});
  const start = performance.now();
  await client.complete(handle, media.bytes);
  // With /ws, its message times the end; polling (for the stage timeline)
  // then runs every 100 ms, so the measurement itself takes little CPU from
  // the job it times.
  const polled = await waitForDone(
    server.url,
    handle,
    timeoutMs,
    live ? 100 : 10,
  );
  const liveAt = live ? await live.catch(() => undefined) : undefined;
  const seenAt = Math.min(polled.seenAt, liveAt ?? Infinity);
  return {
    seconds: (seenAt - start) / 1000,
    status: polled.body.status,
    durationS: polled.body.duration_s,
    files: await finishedFiles(server.url, handle),
    stages: polled.stages.map((x) => ({
      stage: x.stage,
      atS: (x.at - start) / 1000,
    })),
  };
}

/** Times stream-copy jobs (5-minute source, 1-hour VP9) against ffmpeg by hand. */
export async function processingPhase(
  settings: BenchSettings,
  recordings: { label: string; media: MediaFile }[],
  onLive: (live: LiveSummary | null) => void,
): Promise<ProcessingRun[]> {
  const runs: ProcessingRun[] = [];
  for (const { label, media } of recordings) {
    await requireFree(settings.dataRoot, media.bytes * 6, label);
    const { result } = await withServer(settings, "tapedeck", async (s) => {
      const probe = await openLiveProbe(s.url);
      const times: JobTiming[] = [];
      const hinted: JobTiming[] = [];
      for (let i = 0; i < settings.processingReps; i++) {
        times.push(await timeJob(s, clientFor(s), media, probe, 600_000));
        hinted.push(
          await timeJob(
            s,
            apiClient(s.url, { lastChunkHint: true }),
            media,
            probe,
            600_000,
          ),
        );
      }
      if (probe) {
        onLive(summarizeProbe(probe));
        await probe.close();
      }
      return { times, hinted };
    });
    const byHand: ByHandResult[] = [];
    for (let i = 0; i < settings.processingReps; i++) {
      byHand.push(
        await ffmpegByHand(media.path, `${settings.dataRoot}/by-hand`, false),
      );
    }
    const oursS = result.times.map((t) => t.seconds);
    const hintedS = result.hinted.map((t) => t.seconds);
    const durationS = result.times[0].durationS ?? media.durationS;
    const run: ProcessingRun = {
      label,
      codec: media.codec,
      durationS,
      bytes: media.bytes,
      oursS,
      oursMedianS: median(oursS),
      hintedS,
      hintedMedianS: median(hintedS),
      byHand,
      byHandMedian: {
        mp4OnlyS: median(byHand.map((b) => b.mp4OnlyS)),
        sameFilesS: median(byHand.map((b) => b.sameFilesS)),
      },
      oursPerMinuteS: median(oursS) / (durationS / 60),
      status: [...result.times, ...result.hinted].map((t) => t.status).join(
        ",",
      ),
      files: result.times[0].files,
      stages: result.times.toSorted((a, b) => a.seconds - b.seconds)[
        Math.floor((result.times.length - 1) / 2)
      ].stages,
    };
    runs.push(run);
    log(
      `processing ${label}: ours ${
        run.oursMedianS.toFixed(2)
      } s (with last_chunk ${run.hintedMedianS.toFixed(2)} s), by hand ${
        run.byHandMedian.sameFilesS.toFixed(2)
      } s (same files: one pass + poster) / ${
        run.byHandMedian.mp4OnlyS.toFixed(2)
      } s (mp4 only)`,
    );
  }
  return runs;
}

/** Ingest at N=50 while a VP8 recording is re-encoded to H.264. */
export interface ReencodeRun {
  videoS: number;
  bytes: number;
  /** add_data latency of the sends scheduled while the re-encode ran. */
  latencyDuringJob: LatencySummary;
  load: Omit<OpenLoopResult, "played">;
  /** Seconds the job ran during the ingest window (of the window's length). */
  overlapS: number;
  /** complete_job -> complete under load, s (null when not waited for). */
  jobS: number | null;
  jobStatus: string;
  /** ffmpeg by hand on the same file, no other load, s. */
  byHand: ByHandResult;
  server: ProcSummary;
}

/** Runs N=50 ingest while a re-encode job runs; times both. */
export async function reencodePhase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
  vp8: MediaFile,
): Promise<ReencodeRun> {
  const plans = planLoad({
    slots: 50,
    durationS: settings.reencodeIngestS,
    seed: 300,
  });
  const { result, server } = await withServer(
    settings,
    "tapedeck",
    async (s) => {
      const client = clientFor(s);
      const { handle } = await uploadFile(client, vp8.path);
      const latencies: { at: number; ms: number }[] = [];
      const jobStart = performance.now();
      await client.complete(handle, vp8.bytes);
      let jobEnd = Infinity;
      let jobStatus = "processing";
      const job = waitForDone(s.url, handle, 1_800_000, 200).then((d) => {
        jobEnd = d.seenAt;
        jobStatus = d.body.status;
      }, () => {});
      const { played: _, ...load } = await runOpenLoop(client, plans, source, {
        complete: false,
        onSample: (at, ms) => latencies.push({ at, ms }),
      });
      const ingestEnd = performance.now();
      if (settings.reencodeWait) await job;
      else jobStatus = `${jobStatus} (not waited for)`;
      return {
        load,
        latencyDuringJob: summarize(
          latencies.filter((l) => l.at < jobEnd).map((l) => l.ms),
        ),
        overlapS: (Math.min(jobEnd, ingestEnd) - jobStart) / 1000,
        jobS: Number.isFinite(jobEnd) ? (jobEnd - jobStart) / 1000 : null,
        jobStatus,
      };
    },
  );
  const byHand = settings.reencodeByHand
    ? await ffmpegByHand(vp8.path, `${settings.dataRoot}/by-hand`, true)
    : { mp4OnlyS: NaN, sameFilesS: NaN };
  log(
    `re-encode: ingest p99 ${
      result.latencyDuringJob.p99.toFixed(0)
    } ms during the job (${result.overlapS.toFixed(0)} s of overlap); job ${
      result.jobS === null ? "not waited for" : `${result.jobS.toFixed(1)} s`
    }; by hand ${
      settings.reencodeByHand
        ? `${byHand.sameFilesS.toFixed(1)} s`
        : "in full mode only"
    }`,
  );
  return {
    videoS: vp8.durationS,
    bytes: vp8.bytes,
    ...result,
    byHand,
    server: server.proc,
  };
}

// ------------------------------------------------------------- memory

/** RSS over a long soak. */
export interface SoakRun {
  durationS: number;
  slots: number;
  load: Omit<OpenLoopResult, "played">;
  /** Mean RSS in the second minute (after warm-up), MiB. */
  rssEarlyMiB: number;
  /** Mean RSS in the last minute, MiB. */
  rssLateMiB: number;
  growthMiB: number;
  server: ProcSummary;
}

/** A long run of churning recordings (each 60-120 s) for memory growth. */
export async function soakPhase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
): Promise<SoakRun> {
  const plans = planLoad({
    slots: settings.soakSlots,
    durationS: settings.soakS,
    recordingS: [60, 120],
    seed: 400,
  });
  const bytes = plans.reduce(
    (s, p) => s + p.sends.reduce((a, c) => a + c.size, 0),
    0,
  );
  await requireFree(settings.dataRoot, bytes * 3.2, "soak");
  const { result, server } = await withServer(
    settings,
    "tapedeck",
    async (s, sampler) => {
      // Minute 2 against the last minute (a tenth of the soak when shorter).
      const window = Math.min(60_000, settings.soakS * 100);
      const t0 = performance.now();
      const { played: _, ...load } = await runOpenLoop(
        clientFor(s),
        plans,
        source,
      );
      const t1 = performance.now();
      return {
        load,
        rssEarlyMiB: sampler.meanRssMiB(t0 + window, t0 + 2 * window),
        rssLateMiB: sampler.meanRssMiB(t1 - window, t1),
      };
    },
    1000,
  );
  log(
    `soak: RSS ${result.rssEarlyMiB.toFixed(1)} -> ${
      result.rssLateMiB.toFixed(1)
    } MiB, p99 ${
      result.load.latency.p99.toFixed(0)
    } ms, errors ${result.load.errors}`,
  );
  return {
    durationS: settings.soakS,
    slots: settings.soakSlots,
    ...result,
    growthMiB: result.rssLateMiB - result.rssEarlyMiB,
    server: server.proc,
  };
}

/** RSS of one server while one big recording is uploaded to it. */
export interface BigUpload {
  kind: ServerKind;
  uploadS: number;
  uploadMBps: number;
  rssBeforeMiB: number;
  rssPeakMiB: number;
  rssDeltaMiB: number;
  /** Mean RSS over 1 s, 2 s after the last chunk: what stays. */
  rssAfterMiB: number;
}

/** One big recording uploaded as a browser would, to each server. */
export interface BigRun extends BigUpload {
  bytes: number;
  durationS: number;
  /** complete_job -> complete for the whole recording, s. */
  processingS: number | null;
  status: string;
  server: ProcSummary;
  /** The same upload to the bare server and the tus peer. */
  peers: BigUpload[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function uploadWatchingRss(
  server: ServerProcess,
  sampler: ProcSampler,
  big: MediaFile,
): Promise<BigUpload & { handle: string }> {
  await sleep(2000);
  const rssBeforeMiB = sampler.meanRssMiB(
    performance.now() - 1000,
    performance.now(),
  );
  const t0 = performance.now();
  const { handle } = await uploadFile(clientFor(server), big.path);
  const t1 = performance.now();
  await sleep(3000);
  const rssPeakMiB = Math.max(
    ...sampler.samples.filter((x) => x.t >= t0).map((x) => x.rssKiB / 1024),
  );
  return {
    handle,
    kind: server.kind,
    uploadS: (t1 - t0) / 1000,
    uploadMBps: big.bytes / 1e6 / ((t1 - t0) / 1000),
    rssBeforeMiB,
    rssPeakMiB,
    rssDeltaMiB: rssPeakMiB - rssBeforeMiB,
    rssAfterMiB: sampler.meanRssMiB(t1 + 2000, t1 + 3000),
  };
}

/**
 * Uploads one 2 GiB recording (one chunk in flight) to tapedeck, watching
 * its RSS, then processes it; the same upload to the bare server and the
 * tus peer gives the runtime's own share of the RSS rise.
 */
export async function bigPhase(
  settings: BenchSettings,
  big: MediaFile,
): Promise<BigRun> {
  await requireFree(settings.dataRoot, big.bytes * 4.2, "2 GiB upload");
  const { result, server } = await withServer(
    settings,
    "tapedeck",
    async (s, sampler) => {
      const { handle, ...upload } = await uploadWatchingRss(s, sampler, big);
      const start = performance.now();
      await clientFor(s).complete(handle, big.bytes);
      const done = await waitForDone(s.url, handle, 1_800_000, 100);
      return {
        ...upload,
        processingS: (done.seenAt - start) / 1000,
        status: done.body.status,
        durationS: done.body.duration_s ?? big.durationS,
      };
    },
  );
  log(
    `2 GiB upload: RSS ${result.rssBeforeMiB.toFixed(1)} -> peak ${
      result.rssPeakMiB.toFixed(1)
    } MiB in ${result.uploadS.toFixed(0)} s; processing ${
      result.processingS?.toFixed(1)
    } s`,
  );
  const peers: BigUpload[] = [];
  for (const kind of ["bare", "tus"] as const) {
    const peer = await withServer(settings, kind, async (s, sampler) => {
      const { handle: _, ...upload } = await uploadWatchingRss(s, sampler, big);
      return upload;
    });
    peers.push(peer.result);
    log(
      `2 GiB upload to ${kind}: RSS ${
        peer.result.rssBeforeMiB.toFixed(1)
      } -> peak ${peer.result.rssPeakMiB.toFixed(1)} MiB`,
    );
  }
  return {
    bytes: big.bytes,
    ...result,
    server: server.proc,
    peers,
  };
}

export function errorText(
  r: { errors: number; errorKinds: Record<string, number> },
): string {
  if (r.errors === 0) return "0";
  return `${r.errors} (${
    Object.entries(r.errorKinds).map(([k, n]) => `${k}: ${n}`).join(", ")
  })`;
}

/** Prints a progress line on stderr (the tables go to stdout). */
export function log(line: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);
}
