/**
 * The span and the metrics of each unit of the service's work, wrapped
 * around it where it runs: a chunk commit (lib/recordings/chunks.ts) and a
 * processing run (lib/jobs/worker.ts).
 */

import type { AppContext } from "../core/context.ts";
import { type Job, jobKey } from "../kv/keys.ts";
import { metricsOf } from "./metrics.ts";
import { withSpan } from "./tracing.ts";

/**
 * Runs one chunk commit in the span `tapedeck.chunk.commit` and counts the
 * chunk and its bytes once it is committed.
 */
export async function observeChunkCommit<
  T extends { duplicate: boolean; index: number },
>(
  ctx: AppContext,
  id: string,
  bytes: number,
  commit: () => Promise<T>,
): Promise<T> {
  const result = await withSpan("tapedeck.chunk.commit", {
    "tapedeck.recording": id,
    "tapedeck.chunk.bytes": bytes,
  }, commit);
  const metrics = metricsOf(ctx);
  metrics.chunks.inc({ result: result.duplicate ? "duplicate" : "stored" });
  if (!result.duplicate) metrics.receivedBytes.inc(bytes);
  return result;
}

/** The outcome label of a run: the job's state after it. */
function outcomeOf(job: Job | null): string {
  if (!job) return "gone";
  return job.state === "running" ? "interrupted" : job.state;
}

/**
 * Runs one processing run of recording `id`'s job in the span
 * `tapedeck.job.run` and times it by the job's state afterwards.
 */
export async function observeJobRun(
  ctx: AppContext,
  id: string,
  job: Job,
  run: () => Promise<void>,
): Promise<void> {
  const started = performance.now();
  try {
    await withSpan("tapedeck.job.run", {
      "tapedeck.recording": id,
      "tapedeck.job.attempt": job.attempts,
    }, run);
  } finally {
    const outcome = await ctx.kv.get<Job>(jobKey(id)).then(
      (e) => outcomeOf(e.value),
      () => "unknown",
    );
    metricsOf(ctx).jobRuns.observe(
      { outcome },
      (performance.now() - started) / 1000,
    );
  }
}
