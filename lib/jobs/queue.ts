/**
 * Putting a recording's processing job in the queue. The job record in KV
 * is the truth (see lib/jobs/worker.ts); ["job_wakeup"] only wakes workers.
 */

import type { AppContext } from "../core/context.ts";
import { activeJobKey, type Job, jobKey, jobWakeupKey } from "../kv/keys.ts";

/**
 * Adds a fresh queued job for recording `id` (due at `runAfter`, by default
 * now) and the workers' wake-up to an atomic operation.
 */
export function queueJob(
  ctx: AppContext,
  atomic: Deno.AtomicOperation,
  id: string,
  now: number,
  runAfter = now,
): void {
  const job: Job = {
    videoId: id,
    state: "queued",
    attempts: 0,
    maxAttempts: ctx.config.jobMaxAttempts,
    runAfter,
    leaseUntil: 0,
    createdAt: now,
    updatedAt: now,
  };
  atomic.set(jobKey(id), job).set(activeJobKey(id), id)
    .set(jobWakeupKey(), now);
}

/** Adds the removal of recording `id`'s job and its index to an atomic operation. */
export function dropJob(atomic: Deno.AtomicOperation, id: string): void {
  atomic.delete(jobKey(id)).delete(activeJobKey(id));
}

/**
 * Makes recording `id`'s queued job due now (a chunk came after the stop:
 * a job waiting for the end of the grace has work at once).
 */
export async function nudgeJob(ctx: AppContext, id: string): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const entry = await ctx.kv.get<Job>(jobKey(id));
    const job = entry.value;
    const now = Date.now();
    if (!job || job.state !== "queued" || job.runAfter <= now) return;
    const res = await ctx.kv.atomic().check(entry)
      .set(jobKey(id), { ...job, runAfter: now, updatedAt: now })
      .set(jobWakeupKey(), now)
      .commit();
    if (res.ok) return;
  }
}
