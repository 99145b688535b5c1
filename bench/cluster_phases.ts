/**
 * Issue 14's `cluster` phase: API servers (`RUN_WORKER=false`) on one
 * PostgreSQL KV (`KV_PATH=postgres://...`, fsync on) and one Swift bucket,
 * as separate processes, at N=100: first one server taking every request
 * (the Deno Deploy memory question: an API instance under 512 MB), then two
 * servers with each recording's chunks sent round-robin to both (no sticky
 * sessions), with a `/ws` observer on each server timing the change feed
 * across instances. No worker runs: complete_job only queues the job, so
 * the figures are ingest alone.
 */

import postgres from "postgres";
import { startPostgres } from "../tests/support/postgres.ts";
import {
  type LiveSummary,
  openLiveProbe,
  summarizeProbe,
} from "./live_probe.ts";
import { type OpenLoopResult, planLoad, runOpenLoop } from "./load.ts";
import { type BenchSettings, errorText, log } from "./phases.ts";
import {
  otherCpu,
  postgresPid,
  type ProcStat,
  s3Env,
  swiftPid,
  withServers,
  withSwift,
} from "./s3_phases.ts";
import { startTapedeck } from "./servers.ts";
import { apiClient, type UploadClient } from "./upload_clients.ts";

/** One N=100 run on PostgreSQL + S3. */
export interface ClusterRun {
  servers: number;
  slots: number;
  durationS: number;
  load: Omit<OpenLoopResult, "played">;
  /** Each server, then swift and postgres. */
  procs: ProcStat[];
  /** What each server's `/ws` observer saw (null: no /ws). */
  live: (LiveSummary | null)[];
  otherCpuPercent: number;
}

/** What the `cluster` phase measured. */
export interface ClusterPhase {
  runs: ClusterRun[];
}

/**
 * The recording API over several servers: each recording is created on the
 * next server in turn and its chunk `i` goes to server (first + i) mod n.
 */
export function roundRobinClient(urls: string[]): UploadClient {
  const clients = urls.map((u) => apiClient(u));
  const first = new Map<string, number>();
  let next = 0;
  const pick = (id: string, i: number) =>
    clients[((first.get(id) ?? 0) + i) % clients.length];
  return {
    async create() {
      const at = next++ % clients.length;
      const id = await clients[at].create();
      first.set(id, at);
      return id;
    },
    send: (id, index, bytes, offset) =>
      pick(id, index).send(id, index, bytes, offset),
    complete: (id, total) => pick(id, 1).complete(id, total),
  };
}

async function createDatabase(adminUrl: string, name: string) {
  const sql = postgres(adminUrl, {
    max: 1,
    onnotice: () => {},
    max_lifetime: null,
  });
  try {
    await sql.unsafe(`create database ${name}`);
  } finally {
    await sql.end({ timeout: 5 });
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.href;
}

/** N=100 on PostgreSQL + S3: one API server, then two. */
export async function clusterPhase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
): Promise<ClusterPhase> {
  const durationS = settings.quick ? 8 : 60;
  const slots = 100;
  const pg = await startPostgres();
  try {
    return await withSwift(async (swift) => {
      const sidecars = [
        { label: "swift", pid: swiftPid(swift) },
        { label: "postgres", pid: postgresPid(pg.port) },
      ];
      const runs: ClusterRun[] = [];
      for (const count of [1, 2]) {
        const kvUrl = await createDatabase(pg.url, `cluster${count}`);
        const env = {
          ...s3Env(swift, `cluster-${count}`),
          KV_PATH: kvUrl,
          RUN_WORKER: "false",
        };
        const plans = planLoad({ slots, durationS, seed: 700 });
        const { result, procs } = await withServers(
          settings,
          Array.from({ length: count }, (_, i) => ({
            label: `api-${i + 1}`,
            start: (dir: string) => startTapedeck(dir, env),
          })),
          sidecars,
          async (servers) => {
            const probes = await Promise.all(
              servers.map((s) => openLiveProbe(s.url)),
            );
            const { played: _, ...load } = await runOpenLoop(
              roundRobinClient(servers.map((s) => s.url)),
              plans,
              source,
            );
            await new Promise((r) => setTimeout(r, 1000));
            const live = probes.map((p) => p ? summarizeProbe(p) : null);
            await Promise.all(probes.map((p) => p?.close()));
            return { load, live };
          },
        );
        const run: ClusterRun = {
          servers: count,
          slots,
          durationS,
          load: result.load,
          procs,
          live: result.live,
          otherCpuPercent: otherCpu(procs, result.load.clientCpuPercent),
        };
        runs.push(run);
        log(
          `cluster ${count} server(s) N=${slots}: acked ${
            run.load.ackedMBps.toFixed(1)
          } MB/s, p50 ${run.load.latency.p50.toFixed(1)} p99 ${
            run.load.latency.p99.toFixed(1)
          } ms, errors ${errorText(run.load)}, VmHWM ${
            procs.slice(0, count).map((p) => p.proc.hwmMiB.toFixed(0)).join(
              " + ",
            )
          } MiB, /ws p99 ${
            run.live.map((l) => l ? l.changes.p99.toFixed(0) : "n/a").join(
              " / ",
            )
          } ms`,
        );
      }
      return { runs };
    });
  } finally {
    await pg.stop();
  }
}
