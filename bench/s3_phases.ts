/**
 * Issue 14's phases on real engines, started on loopback by the tests' own
 * helpers (tests/support/swift.ts, tests/support/postgres.ts):
 *
 * - `s3`: closed-loop saturation of tapedeck with `STORAGE_URL=s3://...` on
 *   OpenStack Swift's S3 API against a bare Deno server that PUTs each body
 *   to the same Swift (bench/s3_bare_server.ts), then steady N=50 on S3;
 * - `pgkv`: the PostgreSQL KV backend's commit, get and watch latency next
 *   to Deno KV's own (SQLite file), in this process, as the app calls them.
 *
 * The two-server phase is in ./cluster_phases.ts. Swift (one Python process
 * for its four servers) and PostgreSQL are sampled from /proc like the
 * servers, so their CPU is shown and kept out of "other CPU %".
 */

import { createBucket, storageEnv } from "../tests/support/backend.ts";
import { startPostgres } from "../tests/support/postgres.ts";
import { startSwift, type SwiftS3 } from "../tests/support/swift.ts";
import { openKv } from "../lib/kv/open.ts";
import {
  type ClosedLoopResult,
  type OpenLoopResult,
  planLoad,
  type PlannedRecording,
  runClosedLoop,
  runOpenLoop,
} from "./load.ts";
import {
  type BenchSettings,
  errorText,
  log,
  settleDisk,
  warmUp,
} from "./phases.ts";
import { ProcSampler, type ProcSummary } from "./proc_stats.ts";
import {
  BENCH,
  type ServerProcess,
  spawnListening,
  startTapedeck,
} from "./servers.ts";
import { type LatencySummary, summarize } from "./stats.ts";
import { apiClient } from "./upload_clients.ts";

/** The bucket every bench server stores in (one prefix per server run). */
export const BENCH_BUCKET = "bench";

/** Starts Swift with the bench bucket, runs `fn`, stops Swift. */
export async function withSwift<T>(
  fn: (swift: SwiftS3) => Promise<T>,
): Promise<T> {
  const swift = await startSwift();
  try {
    await createBucket(swift, BENCH_BUCKET);
    log(`Swift S3 on ${swift.endpoint} in ${swift.startMs.toFixed(0)} ms`);
    return await fn(swift);
  } finally {
    await swift.stop();
  }
}

/** The environment that puts tapedeck's recordings under `prefix` in Swift. */
export function s3Env(swift: SwiftS3, prefix: string): Record<string, string> {
  return storageEnv(swift, BENCH_BUCKET, prefix);
}

/** The first process whose command line (NUL-split) passes `match`. */
export function findPid(match: (args: string[]) => boolean): number | null {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const args = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`)
        .split("\0");
      if (match(args)) return Number(entry.name);
    } catch {
      // gone meanwhile
    }
  }
  return null;
}

/** The Python process that runs Swift's proxy and storage servers. */
export function swiftPid(swift: SwiftS3): number | null {
  return findPid((a) => a[1] === `${swift.dir}/launch.py` && a[2] === "swift");
}

/** The PostgreSQL postmaster listening on `port` (its backends are its children). */
export function postgresPid(port: number): number | null {
  return findPid((a) => /\/postgres$/.test(a[0]) && a.includes(`port=${port}`));
}

/** A process a phase samples next to its servers (Swift, PostgreSQL). */
export interface Sidecar {
  label: string;
  pid: number | null;
}

/** What a run measured of one process. */
export interface ProcStat {
  label: string;
  proc: ProcSummary;
}

/**
 * Starts `servers` over fresh data folders, warms each up, samples them and
 * the sidecars while `fn` runs, then stops the servers and removes their
 * folders.
 */
export async function withServers<T>(
  settings: BenchSettings,
  servers: {
    label: string;
    start: (dataDir: string) => Promise<ServerProcess>;
  }[],
  sidecars: Sidecar[],
  fn: (running: ServerProcess[]) => Promise<T>,
): Promise<{ result: T; procs: ProcStat[] }> {
  await settleDisk();
  const started: { label: string; server: ServerProcess; dir: string }[] = [];
  const samplers: { label: string; sampler: ProcSampler }[] = [];
  try {
    for (const s of servers) {
      const dir = await Deno.makeTempDir({
        dir: settings.dataRoot,
        prefix: `${s.label.replace(/\W+/g, "-")}-`,
      });
      started.push({ label: s.label, server: await s.start(dir), dir });
    }
    for (const s of started) await warmUp(s.server, settings.warmUpSource);
    for (const s of started) {
      samplers.push({ label: s.label, sampler: new ProcSampler(s.server.pid) });
    }
    for (const c of sidecars) {
      if (c.pid) {
        samplers.push({ label: c.label, sampler: new ProcSampler(c.pid) });
      }
    }
    const result = await fn(started.map((s) => s.server));
    return {
      result,
      procs: samplers.map((s) => ({ label: s.label, proc: s.sampler.stop() })),
    };
  } catch (err) {
    for (const s of samplers) s.sampler.stop();
    const out = started.map((s) =>
      `--- ${s.label} output ---\n${
        s.server.output().split("\n").slice(-20).join("\n")
      }`
    ).join("\n");
    throw new Error(`${(err as Error).message}\n${out}`);
  } finally {
    for (const s of started) {
      await s.server.stop();
      await Deno.remove(s.dir, { recursive: true }).catch(() => {});
    }
  }
}

/**
 * CPU other processes used (% of one core): the machine's busy time minus
 * every sampled process and the client.
 */
export function otherCpu(procs: ProcStat[], clientCpuPercent: number): number {
  if (!procs.length) return NaN;
  const machine = procs[0].proc.machineCpuPercent;
  const ours = procs.reduce(
    (s, p) => s + p.proc.cpuPercent + p.proc.childCpuPercent,
    0,
  );
  return Math.max(0, machine - ours - clientCpuPercent);
}

/** Starts the bare "PUT each body to S3" server. */
export function startBareS3(
  dataDir: string,
  swift: SwiftS3,
  prefix: string,
): Promise<ServerProcess> {
  return spawnListening(
    "bare",
    Deno.execPath(),
    ["run", "-A", `${BENCH}s3_bare_server.ts`],
    dataDir,
    {
      S3_ENDPOINT: swift.endpoint,
      AWS_REGION: swift.region,
      AWS_ACCESS_KEY_ID: swift.accessKeyId,
      AWS_SECRET_ACCESS_KEY: swift.secretAccessKey,
      S3_BUCKET: BENCH_BUCKET,
      S3_PREFIX: prefix,
    },
  );
}

// ------------------------------------------------------------------- s3

/** One closed-loop run against Swift. */
export interface S3ClosedLoopRun extends ClosedLoopResult {
  /** `tapedeck` (STORAGE_URL=s3://...) or `bare-s3`. */
  kind: "tapedeck" | "bare-s3";
  procs: ProcStat[];
  otherCpuPercent: number;
}

/** Steady load with S3 storage. */
export interface S3SteadyRun {
  /** tapedeck, or the bare PUT server as the storage's own reference. */
  kind?: "tapedeck" | "bare-s3";
  slots: number;
  durationS: number;
  load: Omit<OpenLoopResult, "played">;
  /**
   * Latency of the sends scheduled before the first recording stopped
   * (every recording of this load stops at its end), so before any
   * processing ran beside ingest.
   */
  beforeStops?: LatencySummary;
  procs: ProcStat[];
  otherCpuPercent: number;
}

/**
 * The latency of the sends of `plans` scheduled before its first recording
 * stopped, from `samples` (scheduled time, latency) as runOpenLoop reports
 * them.
 */
function latencyBeforeStops(
  plans: PlannedRecording[],
  samples: [number, number][],
): LatencySummary {
  const firstSendMs = Math.min(...plans.map((p) => p.sends[0].atMs));
  const firstStopMs = Math.min(...plans.map((p) => p.sends.at(-1)!.atMs));
  const origin = Math.min(...samples.map(([at]) => at)) - firstSendMs;
  return summarize(
    samples.filter(([at]) => at - origin < firstStopMs).map(([, ms]) => ms),
  );
}

/** What the `s3` phase measured. */
export interface S3Phase {
  swiftStartMs: number;
  closedLoop: S3ClosedLoopRun[];
  steady: S3SteadyRun[];
}

/** Best closed-loop MB/s of one kind (runs without errors only). */
export function bestS3(
  runs: S3ClosedLoopRun[] | undefined,
  kind: S3ClosedLoopRun["kind"],
): S3ClosedLoopRun | undefined {
  return (runs ?? []).filter((r) => r.kind === kind && r.errors === 0)
    .sort((a, b) => b.MBps - a.MBps)[0];
}

/** tapedeck on S3, or the bare PUT server, storing under `prefix`. */
function s3Server(
  swift: SwiftS3,
  kind: "tapedeck" | "bare-s3",
  prefix: string,
) {
  return {
    label: kind,
    start: (dir: string) =>
      kind === "tapedeck"
        ? startTapedeck(dir, s3Env(swift, prefix))
        : startBareS3(dir, swift, prefix),
  };
}

/**
 * Saturation on S3 (tapedeck vs the bare PUT server, each uploader count)
 * and steady N=50 with S3 storage (local KV file: the one-box case).
 */
export async function s3Phase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
): Promise<S3Phase> {
  const uploaderCounts = settings.quick ? [8] : [4, 16, 32];
  const closedS = settings.quick ? 3 : 8;
  const steady = settings.quick
    ? [{ slots: 50, durationS: 10 }]
    : [{ slots: 50, durationS: 60 }];
  return await withSwift(async (swift) => {
    const sidecars = [{ label: "swift", pid: swiftPid(swift) }];
    let run = 0;
    const closedLoop: S3ClosedLoopRun[] = [];
    for (const uploaders of uploaderCounts) {
      for (const kind of ["tapedeck", "bare-s3"] as const) {
        const prefix = `${kind}-${run++}`;
        const { result, procs } = await withServers(
          settings,
          [s3Server(swift, kind, prefix)],
          sidecars,
          ([s]) =>
            runClosedLoop(apiClient(s.url), source, {
              uploaders,
              durationS: closedS,
              chunkBytes: 512 * 1024,
            }),
        );
        const other = otherCpu(procs, result.clientCpuPercent);
        closedLoop.push({ ...result, kind, procs, otherCpuPercent: other });
        log(
          `s3 closed loop ${kind} x${uploaders}: ${
            result.MBps.toFixed(1)
          } MB/s, p99 ${
            result.latency.p99.toFixed(0)
          } ms, errors ${result.errors}`,
        );
      }
    }
    const steadyRuns: S3SteadyRun[] = [];
    const steadyKinds = ["tapedeck", "bare-s3"] as const;
    for (const [i, { slots, durationS }] of steady.entries()) {
      for (const kind of steadyKinds) {
        const plans = planLoad({ slots, durationS, seed: 600 + i });
        const prefix = `steady-${kind}-${slots}`;
        const samples: [number, number][] = [];
        const { result, procs } = await withServers(
          settings,
          [s3Server(swift, kind, prefix)],
          sidecars,
          async ([s]) => {
            const { played: _, ...load } = await runOpenLoop(
              apiClient(s.url),
              plans,
              source,
              { onSample: (at, ms) => samples.push([at, ms]) },
            );
            return load;
          },
        );
        steadyRuns.push({
          kind,
          slots,
          durationS,
          load: result,
          beforeStops: latencyBeforeStops(plans, samples),
          procs,
          otherCpuPercent: otherCpu(procs, result.clientCpuPercent),
        });
        log(
          `s3 steady ${kind} N=${slots}: acked ${
            result.ackedMBps.toFixed(1)
          } MB/s, p50 ${result.latency.p50.toFixed(1)} p99 ${
            result.latency.p99.toFixed(1)
          } ms, errors ${errorText(result)}, RSS peak ${
            procs[0].proc.hwmMiB.toFixed(0)
          } MiB`,
        );
      }
    }
    return {
      swiftStartMs: swift.startMs,
      closedLoop,
      steady: steadyRuns,
    };
  });
}

// ----------------------------------------------------------------- pgkv

/** Latency of one KV backend, as the app uses it. */
export interface KvLatencyRun {
  backend: string;
  /** get of the recording's entry. */
  get: LatencySummary;
  /** One at a time: atomic check(recording) + set(recording) + set(chunk). */
  commit: LatencySummary;
  /** The same commit with `inFlight` writers on their own recordings. */
  concurrent: { inFlight: number; perS: number; latency: LatencySummary };
  /** set on one handle -> the value seen by `watch` on another handle. */
  watch: LatencySummary;
}

/** What the `pgkv` phase measured. */
export interface PgKvPhase {
  /** fsync and synchronous_commit as the bench's PostgreSQL ran. */
  postgres: string;
  runs: KvLatencyRun[];
}

const RECORDING = {
  id: "00000000-0000-4000-8000-000000000000",
  status: "recording",
  createdAt: 0,
  updatedAt: 0,
  bytes: 0,
  chunks: 0,
  mime: "video/webm",
  token: "x".repeat(43),
};

async function commitOnce(
  kv: Deno.Kv,
  rec: string,
  n: number,
): Promise<number> {
  const key = ["bench", "rec", rec];
  const entry = await kv.get<typeof RECORDING>(key);
  const value = { ...(entry.value ?? RECORDING), chunks: n, bytes: n * 524288 };
  const t = performance.now();
  const res = await kv.atomic()
    .check(entry)
    .set(key, value)
    .set(["bench", "chunk", rec, n], {
      size: 524288,
      at: Date.now(),
      object: crypto.randomUUID(),
    })
    .commit();
  if (!res.ok) throw new Error(`commit ${rec}/${n} failed its check`);
  return performance.now() - t;
}

async function measureKv(
  backend: string,
  open: () => Promise<Deno.Kv>,
  settings: BenchSettings,
): Promise<KvLatencyRun> {
  const sequential = settings.quick ? 200 : 1000;
  const concurrentS = settings.quick ? 2 : 8;
  const inFlight = 16;
  const watches = settings.quick ? 100 : 300;
  const kv = await open();
  const watcherKv = await open();
  try {
    for (let i = 0; i < 20; i++) await commitOnce(kv, "warm", i);
    const gets: number[] = [];
    const commits: number[] = [];
    for (let i = 0; i < sequential; i++) {
      const t = performance.now();
      await kv.get(["bench", "rec", "seq"]);
      gets.push(performance.now() - t);
      commits.push(await commitOnce(kv, "seq", i));
    }
    const concurrent: number[] = [];
    const t0 = performance.now();
    const deadline = t0 + concurrentS * 1000;
    await Promise.all(
      Array.from({ length: inFlight }, async (_, w) => {
        for (let i = 0; performance.now() < deadline; i++) {
          concurrent.push(await commitOnce(kv, `par-${w}`, i));
        }
      }),
    );
    const perS = concurrent.length / ((performance.now() - t0) / 1000);

    const key = ["bench", "watched"];
    await kv.set(key, { i: -1, t: 0 });
    const reader = watcherKv.watch<[{ i: number; t: number }]>([key])
      .getReader();
    const delays: number[] = [];
    try {
      await reader.read(); // the current value
      for (let i = 0; i < watches; i++) {
        const t = performance.now();
        await kv.set(key, { i, t });
        for (;;) {
          const timeout = setTimeout(() => reader.cancel(), 10_000);
          const { value, done } = await reader.read();
          clearTimeout(timeout);
          if (done) throw new Error(`watch ended (no change ${i} in 10 s)`);
          if (value[0].value?.i === i) break;
        }
        delays.push(performance.now() - t);
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
    return {
      backend,
      get: summarize(gets),
      commit: summarize(commits),
      concurrent: { inFlight, perS, latency: summarize(concurrent) },
      watch: summarize(delays),
    };
  } finally {
    await kv.close();
    await watcherKv.close();
  }
}

/**
 * Commit, get and watch latency: Deno KV on a file in the data folder, then
 * the PostgreSQL backend (lib/kv/postgres.ts via lib/kv/open.ts) on a
 * throwaway PostgreSQL 15 with fsync on.
 */
export async function pgKvPhase(settings: BenchSettings): Promise<PgKvPhase> {
  const runs: KvLatencyRun[] = [];
  const dir = await Deno.makeTempDir({ dir: settings.dataRoot, prefix: "kv-" });
  try {
    runs.push(
      await measureKv(
        "Deno KV (SQLite file)",
        () => openKv(`${dir}/bench.kv`),
        settings,
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const pg = await startPostgres();
  try {
    runs.push(
      await measureKv(
        "PostgreSQL 15 (lib/kv/postgres.ts)",
        () => openKv(pg.url),
        settings,
      ),
    );
  } finally {
    await pg.stop();
  }
  for (const r of runs) {
    log(
      `kv ${r.backend}: commit p50 ${r.commit.p50.toFixed(2)} p99 ${
        r.commit.p99.toFixed(2)
      } ms; ${r.concurrent.inFlight} in flight ${
        r.concurrent.perS.toFixed(0)
      }/s p99 ${r.concurrent.latency.p99.toFixed(1)} ms; watch p50 ${
        r.watch.p50.toFixed(2)
      } p99 ${r.watch.p99.toFixed(2)} ms`,
    );
  }
  return {
    postgres: "fsync on, synchronous_commit on, shared_buffers 32MB, loopback",
    runs,
  };
}
