/**
 * The service's Prometheus metrics, one registry per running instance
 * ({@link metricsOf}), rendered in the text exposition format by
 * {@link renderMetrics} for `GET /metrics`.
 *
 * The format comes from `prom-client` (npm, the usual Node.js client: it
 * runs unchanged under Deno, escapes label values and renders histograms
 * the way promtool expects). Its Node.js default metrics are not
 * registered (they report Node's version and event-loop internals that
 * Deno does not have); the process's memory comes from
 * `Deno.memoryUsage()`. Counters and histograms count what this process
 * did; the gauges read KV at scrape time, so they describe the whole
 * cluster (open recordings, jobs by state, webhook deliveries pending).
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { AppContext } from "../core/context.ts";
import {
  activeJobPrefix,
  type Job,
  jobKey,
  openRecordingPrefix,
  webhookDuePrefix,
} from "../kv/keys.ts";
import { openSocketCount } from "../live/socket.ts";

/** Most index entries one gauge counts per scrape. */
const COUNT_LIMIT = 100_000;

/** Seconds from a chunk request's arrival to its answer. */
const CHUNK_BUCKETS = [
  0.002,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

/** Seconds of one processing run. */
const JOB_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

async function countKeys(kv: Deno.Kv, prefix: Deno.KvKey): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix }, { limit: COUNT_LIMIT })) n++;
  return n;
}

/** Queued and running jobs, read from the active-jobs index. */
async function countJobs(
  kv: Deno.Kv,
): Promise<{ queued: number; running: number }> {
  const ids: string[] = [];
  for await (
    const e of kv.list<string>({ prefix: activeJobPrefix() }, {
      limit: COUNT_LIMIT,
    })
  ) ids.push(e.value);
  const counts = { queued: 0, running: 0 };
  for (let i = 0; i < ids.length; i += 10) {
    const jobs = await kv.getMany<Job[]>(
      ids.slice(i, i + 10).map((id) => jobKey(id)),
    );
    for (const j of jobs) {
      if (j.value?.state === "queued") counts.queued++;
      if (j.value?.state === "running") counts.running++;
    }
  }
  return counts;
}

/** The metrics of one instance. */
export class ServiceMetrics {
  readonly registry = new Registry();
  /** Answered requests by route pattern, method and status. */
  readonly requests: Counter<"route" | "method" | "status">;
  /** Chunk requests answered 2xx: arrival to answer, by protocol. */
  readonly chunkSeconds: Histogram<"protocol">;
  /** Chunks committed, new or a duplicate of one held. */
  readonly chunks: Counter<"result">;
  /** Chunk bytes committed (duplicates not counted). */
  readonly receivedBytes: Counter;
  /** Processing runs by the job's state after the run. */
  readonly jobRuns: Histogram<"outcome">;
  /** Webhook delivery attempts by event and outcome. */
  readonly webhookAttempts: Counter<"event" | "outcome">;

  constructor(ctx: AppContext) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: "tapedeck_http_requests_total",
      help: "HTTP requests answered, by route pattern, method and status code.",
      labelNames: ["route", "method", "status"],
      registers,
    });
    this.chunkSeconds = new Histogram({
      name: "tapedeck_chunk_duration_seconds",
      help:
        "Time from a chunk request's arrival to its 2xx answer (body read, flushed and committed), by protocol (api: add_data, tus: PATCH).",
      labelNames: ["protocol"],
      buckets: CHUNK_BUCKETS,
      registers,
    });
    this.chunks = new Counter({
      name: "tapedeck_chunks_received_total",
      help:
        "Chunks committed, by result (stored, or duplicate of a chunk already held).",
      labelNames: ["result"],
      registers,
    });
    this.receivedBytes = new Counter({
      name: "tapedeck_received_bytes_total",
      help: "Chunk bytes committed (duplicates not counted).",
      registers,
    });
    this.jobRuns = new Histogram({
      name: "tapedeck_job_run_duration_seconds",
      help:
        "Processing runs of this process by the job's state after the run (done, failed, queued: waiting for a retry or for late chunks, gone: deleted).",
      labelNames: ["outcome"],
      buckets: JOB_BUCKETS,
      registers,
    });
    this.webhookAttempts = new Counter({
      name: "tapedeck_webhook_deliveries_total",
      help:
        "Webhook delivery attempts of this process, by event and outcome (delivered, retry: failed and due again, failed: given up).",
      labelNames: ["event", "outcome"],
      registers,
    });

    // Gauges read at scrape time. KV reads that fail leave them unset and
    // tapedeck_kv_up at 0.
    const kvUp = new Gauge({
      name: "tapedeck_kv_up",
      help: "Whether this scrape's KV reads succeeded (1) or failed (0).",
      registers,
    });
    const open = new Gauge({
      name: "tapedeck_open_recordings",
      help:
        "Recordings in status recording (taking chunks), in the whole cluster.",
      registers,
    });
    const jobs = new Gauge({
      name: "tapedeck_jobs",
      help: "Processing jobs queued or running, in the whole cluster.",
      labelNames: ["state"],
      registers,
    });
    const pending = new Gauge({
      name: "tapedeck_webhook_deliveries_pending",
      help:
        "Webhook deliveries not yet delivered nor given up, in the whole cluster.",
      registers,
    });
    new Gauge({
      name: "tapedeck_live_sockets",
      help: "Live WebSockets (/ws) open on this process.",
      registers,
      collect() {
        this.set(openSocketCount(ctx.live));
      },
    });
    new Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory size in bytes.",
      registers,
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    });
    new Gauge({
      name: "tapedeck_memory_bytes",
      help:
        "Memory of this process by kind (Deno.memoryUsage: heap_total, heap_used, external).",
      labelNames: ["kind"],
      registers,
      collect() {
        const m = Deno.memoryUsage();
        this.set({ kind: "heap_total" }, m.heapTotal);
        this.set({ kind: "heap_used" }, m.heapUsed);
        this.set({ kind: "external" }, m.external);
      },
    });
    this.#kvGauges = async () => {
      try {
        const [openCount, jobCounts, pendingCount] = await Promise.all([
          countKeys(ctx.kv, openRecordingPrefix()),
          countJobs(ctx.kv),
          countKeys(ctx.kv, webhookDuePrefix()),
        ]);
        open.set(openCount);
        jobs.set({ state: "queued" }, jobCounts.queued);
        jobs.set({ state: "running" }, jobCounts.running);
        pending.set(pendingCount);
        kvUp.set(1);
      } catch {
        open.reset();
        jobs.reset();
        pending.reset();
        kvUp.set(0);
      }
    };
  }

  #kvGauges: () => Promise<void>;

  /** The exposition text of every metric, with the KV gauges read now. */
  async render(): Promise<string> {
    await this.#kvGauges();
    return await this.registry.metrics();
  }
}

const byContext = new WeakMap<AppContext, ServiceMetrics>();

/** The metrics of the instance `ctx` belongs to (made on first use). */
export function metricsOf(ctx: AppContext): ServiceMetrics {
  let metrics = byContext.get(ctx);
  if (!metrics) {
    metrics = new ServiceMetrics(ctx);
    byContext.set(ctx, metrics);
  }
  return metrics;
}

/** The Content-Type of {@link renderMetrics}'s text. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Renders the metrics of `ctx`'s instance in the Prometheus text format. */
export function renderMetrics(ctx: AppContext): Promise<string> {
  return metricsOf(ctx).render();
}
