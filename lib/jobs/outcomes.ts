/**
 * What a processing run writes to its recording, always together with the
 * job record when the job changes too, and always through the recording
 * transitions (lib/recordings/transitions.ts).
 */

import type { AppContext } from "../core/context.ts";
import {
  activeJobKey,
  type Job,
  jobKey,
  jobWakeupKey,
  type MadeFiles,
  type Recording,
  recordingKey,
  type UnflushedOutputs,
  unflushedOutputsKey,
} from "../kv/keys.ts";
import type { ProcessingOutput } from "../processing/pipeline.ts";
import { bootId, flushOutputs } from "../recordings/maintenance.ts";
import {
  commitTransition,
  retryPause,
  updateRecording,
} from "../recordings/transitions.ts";
import { canDeferSync } from "../storage/storage.ts";
import type { JobLease } from "./lease.ts";
import type { ProgressValue } from "./progress.ts";

/**
 * Writes a progress value to a recording that is processing: never lower
 * than what it shows unless the value starts an attempt (which also marks
 * when the run started).
 */
export async function writeProgress(
  ctx: AppContext,
  id: string,
  value: ProgressValue,
): Promise<void> {
  await updateRecording(ctx, id, (rec) => {
    if (rec?.status !== "processing") return null;
    if (!value.restart && value.fraction < (rec.progress ?? 0)) return null;
    return {
      next: {
        ...rec,
        progress: Math.min(0.99, value.fraction),
        stage: value.stage,
        updatedAt: Date.now(),
        ...(value.restart ? { runStartedAt: Date.now() } : {}),
      },
    };
  });
}

/** Shows on a processing recording that its job waits for another attempt. */
export async function writeRetryWait(
  ctx: AppContext,
  id: string,
  reason: string,
): Promise<void> {
  await updateRecording(ctx, id, (rec) =>
    rec?.status === "processing"
      ? {
        next: {
          ...rec,
          stage: `waiting to retry (${reason.slice(0, 200)})`,
          updatedAt: Date.now(),
        },
      }
      : null);
}

/**
 * Commits the job `done` and the recording `complete`, if the job is still
 * this run's (`jobStamp`). Files published unflushed (`output.unflushed`,
 * only with a storage that defers the flush) get an
 * ["outputs_unflushed", id] entry in the same commit and are flushed right
 * after it, then the entry goes: the status turns `complete` without
 * waiting for the disk, and a machine crash before the flush is caught by
 * the sweep (lib/recordings/maintenance.ts). Resolves `changed` (nothing
 * written) when the recording holds other chunks than the run processed,
 * and `lost` when the job or the recording went elsewhere.
 */
export async function commitSuccess(
  ctx: AppContext,
  id: string,
  jobStamp: string,
  job: Job,
  output: ProcessingOutput,
): Promise<"done" | "changed" | "lost"> {
  const unflushed = output.unflushed?.length && canDeferSync(ctx.storage)
    ? output.unflushed
    : undefined;
  const boot = unflushed ? await bootId() : "";
  for (let attempt = 0;; attempt++) {
    const entry = await ctx.kv.get<Recording>(recordingKey(id));
    if (!entry.value) return "lost";
    if (
      entry.value.bytesReceived !== output.input.bytes ||
      entry.value.chunksReceived !== output.input.chunks
    ) return "changed";
    // Files listed early stay listed, as they are.
    if (entry.value.files.some((name) => !output.files.includes(name))) {
      return "changed";
    }
    const now = Date.now();
    const mark: UnflushedOutputs = { bootId: boot, at: now };
    const res = await commitTransition(ctx, {
      prev: entry as Deno.KvEntry<Recording>,
      next: {
        ...entry.value,
        status: "complete",
        progress: 1,
        stage: undefined,
        error: undefined,
        files: output.files,
        poster: output.poster,
        media: output.media,
        durationS: output.durationS,
        updatedAt: now,
        finishedAt: now,
      },
      checks: [{ key: jobKey(id), versionstamp: jobStamp }],
      extra(atomic) {
        atomic.set(jobKey(id), {
          ...job,
          made: undefined,
          state: "done",
          leaseUntil: 0,
          updatedAt: now,
        }).delete(activeJobKey(id));
        if (unflushed) atomic.set(unflushedOutputsKey(id), mark);
      },
    });
    if (res.ok) {
      if (unflushed) {
        await flushOutputs(ctx, {
          key: unflushedOutputsKey(id),
          value: mark,
          versionstamp: res.versionstamp,
        }, unflushed);
      }
      return "done";
    }
    const jobNow = await ctx.kv.get<Job>(jobKey(id));
    if (jobNow.versionstamp !== jobStamp) return "lost";
    await retryPause(attempt, `Recording ${id}`);
  }
}

/**
 * Lists the files a run made before the others (a re-encode's WebM and
 * poster, already durable) on a recording still `processing`, if the job
 * is still this run's (`jobStamp`) and the recording holds exactly the
 * chunks they were made of (`changed` otherwise; `lost` when the job or
 * the recording went elsewhere). The caller made sure no chunk can join
 * the recording any more (lib/recordings/closing.ts), so they never change.
 */
export async function commitEarlyFiles(
  ctx: AppContext,
  id: string,
  jobStamp: string,
  early: MadeFiles,
): Promise<"done" | "changed" | "lost"> {
  for (let attempt = 0;; attempt++) {
    const entry = await ctx.kv.get<Recording>(recordingKey(id));
    const rec = entry.value;
    if (!rec || rec.status !== "processing") return "lost";
    if (
      rec.bytesReceived !== early.input.bytes ||
      rec.chunksReceived !== early.input.chunks
    ) return "changed";
    const now = Date.now();
    const res = await commitTransition(ctx, {
      prev: entry as Deno.KvEntry<Recording>,
      next: {
        ...rec,
        files: early.files,
        poster: early.poster,
        media: early.media,
        durationS: early.durationS,
        updatedAt: now,
      },
      checks: [{ key: jobKey(id), versionstamp: jobStamp }],
    });
    if (res.ok) return "done";
    const jobNow = await ctx.kv.get<Job>(jobKey(id));
    if (jobNow.versionstamp !== jobStamp) return "lost";
    await retryPause(attempt, `Recording ${id}`);
  }
}

/** Why a recording completed with no chunk failed. */
export const EMPTY_STOP_REASON =
  "The recording was stopped before any data arrived.";

/**
 * Ends a recording that was completed with no chunk and got none within
 * its grace: the job `done`, the recording `failed` with
 * {@link EMPTY_STOP_REASON} (retention removes it like any other).
 */
export async function commitEmptyStop(
  ctx: AppContext,
  id: string,
  jobStamp: string,
): Promise<void> {
  for (let attempt = 0;; attempt++) {
    const [rec, job] = await ctx.kv.getMany<[Recording, Job]>([
      recordingKey(id),
      jobKey(id),
    ]);
    if (job.versionstamp !== jobStamp || !job.value) return;
    const now = Date.now();
    const jobWrites = (atomic: Deno.AtomicOperation) =>
      atomic.set(jobKey(id), {
        ...job.value!,
        state: "done",
        leaseUntil: 0,
        updatedAt: now,
      }).delete(activeJobKey(id));
    if (rec.value && rec.value.chunksReceived > 0) return;
    const res = rec.value
      ? await commitTransition(ctx, {
        prev: rec as Deno.KvEntry<Recording>,
        next: {
          ...rec.value,
          status: "failed",
          stage: undefined,
          progress: undefined,
          error: EMPTY_STOP_REASON,
          updatedAt: now,
          finishedAt: now,
        },
        checks: [job],
        extra: jobWrites,
      })
      : await jobWrites(ctx.kv.atomic().check(job)).commit();
    if (res.ok) return;
    await retryPause(attempt, `Recording ${id}`);
  }
}

/**
 * Commits the job `failed` (checked against `entry`) and its recording
 * `failed` with the reason, in one commit.
 */
export async function commitFailure(
  ctx: AppContext,
  entry: Deno.KvEntry<Job>,
  reason: string,
): Promise<void> {
  const id = entry.value.videoId;
  const attempts = entry.value.attempts;
  const error = `Processing failed after ${attempts} attempt${
    attempts === 1 ? "" : "s"
  }: ${reason}`;
  for (let attempt = 0;; attempt++) {
    const rec = await ctx.kv.get<Recording>(recordingKey(id));
    const now = Date.now();
    const jobWrites = (atomic: Deno.AtomicOperation) =>
      atomic.set(jobKey(id), {
        ...entry.value,
        state: "failed",
        leaseUntil: 0,
        lastError: reason,
        updatedAt: now,
      }).delete(activeJobKey(id));
    const res = rec.value
      ? await commitTransition(ctx, {
        prev: rec as Deno.KvEntry<Recording>,
        next: {
          ...rec.value,
          status: "failed",
          stage: undefined,
          progress: undefined,
          error,
          updatedAt: now,
          finishedAt: now,
        },
        checks: [entry],
        extra: jobWrites,
      })
      : await jobWrites(ctx.kv.atomic().check(entry)).commit();
    if (res.ok) return;
    const fresh = await ctx.kv.get<Job>(jobKey(id));
    if (fresh.versionstamp !== entry.versionstamp) return;
    await retryPause(attempt, `Recording ${id}`);
  }
}

/**
 * Hands a job back to the queue until `until` without counting an attempt
 * (it waits for the end of its recording's grace, not for a retry), with
 * the files its run made, if any, so the next run only lists them.
 */
export async function parkJob(
  ctx: AppContext,
  lease: JobLease,
  until: number,
  made?: MadeFiles,
): Promise<void> {
  const job = lease.job;
  const now = Date.now();
  await ctx.kv.atomic()
    .check({ key: jobKey(job.videoId), versionstamp: lease.stamp })
    .set(jobKey(job.videoId), {
      ...job,
      state: "queued",
      attempts: Math.max(0, job.attempts - 1),
      runAfter: until,
      leaseUntil: 0,
      made,
      updatedAt: now,
    })
    .set(jobWakeupKey(), now)
    .commit();
  if (made) {
    await updateRecording(
      ctx,
      job.videoId,
      (rec) =>
        rec?.status === "processing"
          ? {
            next: {
              ...rec,
              progress: Math.max(rec.progress ?? 0, 0.99),
              stage: "waiting for chunks sent around the stop",
              updatedAt: now,
            },
          }
          : null,
    );
  }
}
