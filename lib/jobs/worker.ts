/**
 * The processing worker. The job record in KV is the truth; a `watch` on
 * ["job_wakeup"], a timer for the next due job and a cron sweep only wake the
 * worker up. A claimed job carries a lease that the worker renews while it
 * runs; a job whose lease ran out (a crashed worker) is claimed again.
 */

import type { AppContext } from "../core/context.ts";
import type { FfmpegTools } from "../processing/ffmpeg.ts";
import {
  activeJobKey,
  activeJobPrefix,
  finishedRecordingKey,
  type Job,
  jobKey,
  jobWakeupKey,
  type Recording,
  recordingKey,
  type UnflushedOutputs,
  unflushedOutputsKey,
} from "../kv/keys.ts";
import { bootId, flushOutputs } from "../recordings/maintenance.ts";
import { type ProcessingOutput, processRecording } from "../processing/pipeline.ts";
import { addChange, publishChange } from "../recordings/recordings.ts";

/** Runs one job; tests and other pipelines may pass their own. */
export type JobRunner = (
  ctx: AppContext,
  id: string,
  options: {
    signal: AbortSignal;
    onProgress: (fraction: number, stage: string) => void;
  },
) => Promise<ProcessingOutput>;

const MAX_TIMER_MS = 60_000;

/** Delay before attempt `attempts + 1`: base, doubled per failure, capped at 10 minutes. */
export function backoffMs(base: number, attempts: number): number {
  return Math.min(base * 2 ** Math.max(0, attempts - 1), 10 * 60_000);
}

/** Processes queued jobs with bounded concurrency, leases and retries. */
export class JobWorker {
  readonly id = crypto.randomUUID();
  #ctx: AppContext;
  #run: JobRunner;
  #running = new Map<string, Promise<void>>();
  #controllers = new Map<string, AbortController>();
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = true;
  #ticking?: Promise<void>;
  #again = false;
  #watch?: ReadableStreamDefaultReader<unknown>;

  constructor(ctx: AppContext, tools: FfmpegTools, run?: JobRunner) {
    this.#ctx = ctx;
    this.#run = run ??
      ((c, id, o) => processRecording(c, tools, id, o));
  }

  /**
   * Starts watching for work. With a local KV file no other process can hold
   * a claim, so jobs left `running` by a previous process are taken back now.
   */
  async start(): Promise<void> {
    this.#stopped = false;
    if (!this.#ctx.config.sharedKv) await this.#reclaimOrphans();
    const stream = this.#ctx.kv.watch([jobWakeupKey()]);
    this.#watch = stream.getReader();
    (async () => {
      try {
        while (!this.#stopped) {
          const { done } = await this.#watch!.read();
          if (done) break;
          this.wake();
        }
      } catch {
        // the watch ends when KV closes
      }
    })();
    this.wake();
  }

  /** Stops taking jobs, aborts running ones (their leases lapse) and waits for them. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#watch?.cancel().catch(() => {});
    for (const c of this.#controllers.values()) c.abort();
    await this.#ticking;
    await Promise.allSettled([...this.#running.values()]);
  }

  /** Looks for due jobs now. */
  wake(): void {
    if (this.#stopped) return;
    if (this.#ticking) {
      this.#again = true;
      return;
    }
    this.#ticking = this.#tick().catch((err) => {
      if (!this.#stopped) console.error("job worker:", err);
    }).finally(() => {
      this.#ticking = undefined;
      if (this.#again) {
        this.#again = false;
        this.wake();
      }
    });
  }

  /** How many jobs this worker is running. */
  get busy(): number {
    return this.#running.size;
  }

  async #reclaimOrphans(): Promise<void> {
    for await (
      const e of this.#ctx.kv.list<string>({ prefix: activeJobPrefix() })
    ) {
      const entry = await this.#ctx.kv.get<Job>(jobKey(e.value));
      if (entry.value?.state === "running") {
        await this.#ctx.kv.atomic().check(entry).set(jobKey(e.value), {
          ...entry.value,
          leaseUntil: 0,
          updatedAt: Date.now(),
        }).commit();
      }
    }
  }

  async #tick(): Promise<void> {
    const kv = this.#ctx.kv;
    const now = Date.now();
    let nextDue = Infinity;
    for await (const e of kv.list<string>({ prefix: activeJobPrefix() })) {
      if (this.#stopped) return;
      const id = e.value;
      if (this.#running.has(id)) continue;
      const entry = await kv.get<Job>(jobKey(id));
      const job = entry.value;
      if (!job || job.state === "done" || job.state === "failed") {
        await kv.atomic().check(entry).delete(activeJobKey(id)).commit();
        continue;
      }
      const dueAt = job.state === "queued" ? job.runAfter : job.leaseUntil;
      if (dueAt > now) {
        nextDue = Math.min(nextDue, dueAt);
        continue;
      }
      if (this.#running.size >= this.#ctx.config.jobConcurrency) {
        nextDue = now;
        break;
      }
      if (job.attempts >= job.maxAttempts) {
        await this.#finishFailed(
          entry as Deno.KvEntry<Job>,
          job.lastError ??
            `processing was interrupted ${job.attempts} times before it could finish`,
        );
        continue;
      }
      const claimed: Job = {
        ...job,
        state: "running",
        attempts: job.attempts + 1,
        leaseUntil: now + this.#ctx.config.jobLeaseMs,
        workerId: this.id,
        updatedAt: now,
      };
      const res = await kv.atomic().check(entry).set(jobKey(id), claimed)
        .commit();
      if (!res.ok) continue;
      const done = this.#execute(id, claimed, res.versionstamp).finally(() => {
        this.#running.delete(id);
        this.#controllers.delete(id);
        this.wake();
      });
      this.#running.set(id, done);
    }
    clearTimeout(this.#timer);
    if (!this.#stopped && nextDue !== Infinity) {
      const delay = Math.min(Math.max(nextDue - Date.now(), 10), MAX_TIMER_MS);
      this.#timer = setTimeout(() => this.wake(), delay);
    }
  }

  async #execute(id: string, job: Job, versionstamp: string): Promise<void> {
    const kv = this.#ctx.kv;
    const controller = new AbortController();
    this.#controllers.set(id, controller);
    let jobStamp = versionstamp;
    let current = job;
    let lostLease = false;
    const renew = setInterval(async () => {
      const leased = {
        ...current,
        leaseUntil: Date.now() + this.#ctx.config.jobLeaseMs,
        updatedAt: Date.now(),
      };
      try {
        const res = await kv.atomic().check({
          key: jobKey(id),
          versionstamp: jobStamp,
        }).set(jobKey(id), leased).commit();
        if (res.ok) {
          jobStamp = res.versionstamp;
          current = leased;
        } else {
          lostLease = true;
          controller.abort();
        }
      } catch {
        // KV closing; the lease simply lapses
      }
    }, Math.max(250, Math.floor(this.#ctx.config.jobLeaseMs / 3)));

    // Progress is written by one update at a time, newest value last, and
    // never goes back.
    let lastReport = 0;
    let lastFraction = -1;
    let lastStage = "";
    let writing: Promise<void> | undefined;
    let pending:
      | { fraction: number; stage: string; restart?: boolean }
      | undefined;
    const writeProgress = () => {
      if (writing || !pending) return;
      const { fraction, stage, restart } = pending;
      pending = undefined;
      writing = this.#updateRecording(
        id,
        (rec) =>
          rec.status === "processing" &&
            (restart || fraction >= (rec.progress ?? 0))
            ? { ...rec, progress: Math.min(0.99, fraction), stage }
            : null,
      ).catch(() => {}).finally(() => {
        writing = undefined;
        writeProgress();
      });
    };
    const onProgress = (fraction: number, stage: string) => {
      const t = Date.now();
      // A new stage is always written, so the status says where the job is.
      if (
        t - lastReport < 250 && fraction - lastFraction < 0.05 &&
        stage === lastStage
      ) return;
      lastReport = t;
      lastFraction = fraction;
      lastStage = stage;
      pending = { fraction, stage, restart: pending?.restart };
      writeProgress();
    };

    try {
      // Written by the progress writer, in order with what the run reports,
      // while the run already starts; an attempt starts its progress over.
      pending = {
        fraction: 0,
        stage: job.attempts > 1 ? "retrying" : "starting",
        restart: true,
      };
      lastReport = Date.now();
      lastFraction = 0;
      lastStage = pending.stage;
      writeProgress();
      const output = await this.#run(this.#ctx, id, {
        signal: controller.signal,
        onProgress,
      });
      pending = undefined;
      await writing;
      clearInterval(renew);
      if (lostLease) return;
      await this.#finishOk(id, jobStamp, current, output);
    } catch (err) {
      clearInterval(renew);
      if (lostLease) return;
      if (this.#stopped) {
        // A graceful stop is not the job's fault: hand it back unchanged.
        await kv.atomic().check({ key: jobKey(id), versionstamp: jobStamp })
          .set(jobKey(id), {
            ...current,
            state: "queued",
            attempts: current.attempts - 1,
            runAfter: Date.now(),
            leaseUntil: 0,
            updatedAt: Date.now(),
          }).commit().catch(() => {});
        return;
      }
      const reason = (err as Error).message || String(err);
      const entry = await kv.get<Job>(jobKey(id));
      if (entry.versionstamp !== jobStamp || !entry.value) return;
      if (current.attempts >= current.maxAttempts) {
        await this.#finishFailed(entry as Deno.KvEntry<Job>, reason);
      } else {
        const now = Date.now();
        await kv.atomic().check(entry).set(jobKey(id), {
          ...current,
          state: "queued",
          runAfter: now +
            backoffMs(this.#ctx.config.jobBackoffMs, current.attempts),
          leaseUntil: 0,
          lastError: reason,
          updatedAt: now,
        }).commit();
        await this.#updateRecording(
          id,
          (rec) =>
            rec.status === "processing"
              ? { ...rec, stage: `waiting to retry (${reason.slice(0, 200)})` }
              : null,
        );
      }
    } finally {
      clearInterval(renew);
    }
  }

  async #updateRecording(
    id: string,
    change: (rec: Recording) => Recording | null,
  ): Promise<void> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const entry = await this.#ctx.kv.get<Recording>(recordingKey(id));
      if (!entry.value) return;
      const next = change(entry.value);
      if (!next) return;
      next.updatedAt = Date.now();
      const atomic = this.#ctx.kv.atomic().check(entry).set(
        recordingKey(id),
        next,
      );
      addChange(this.#ctx, atomic, next);
      if ((await atomic.commit()).ok) {
        publishChange(this.#ctx, next);
        return;
      }
    }
  }

  /**
   * Commits the job `done` and the recording `complete`. Files published
   * unflushed (`output.unflushed`) get an ["outputs_unflushed", id] entry in
   * the same commit and are flushed right after it, then the entry goes: the
   * status turns `complete` without waiting for the disk, and a machine crash
   * before the flush is caught by the sweep (lib/maintenance.ts).
   */
  async #finishOk(
    id: string,
    jobStamp: string,
    job: Job,
    output: ProcessingOutput,
  ): Promise<void> {
    const kv = this.#ctx.kv;
    const unflushed = output.unflushed?.length ? output.unflushed : undefined;
    const boot = unflushed ? await bootId() : "";
    for (let attempt = 0; attempt < 20; attempt++) {
      const rec = await kv.get<Recording>(recordingKey(id));
      if (!rec.value) return;
      const now = Date.now();
      const next: Recording = {
        ...rec.value,
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
      };
      const atomic = kv.atomic()
        .check(rec)
        .check({ key: jobKey(id), versionstamp: jobStamp })
        .set(recordingKey(id), next)
        .set(finishedRecordingKey(now, id), id)
        .set(jobKey(id), {
          ...job,
          state: "done",
          leaseUntil: 0,
          updatedAt: now,
        })
        .delete(activeJobKey(id));
      const mark: UnflushedOutputs = { bootId: boot, at: now };
      if (unflushed) atomic.set(unflushedOutputsKey(id), mark);
      addChange(this.#ctx, atomic, next);
      const res = await atomic.commit();
      if (res.ok) {
        publishChange(this.#ctx, next);
        if (unflushed) {
          await flushOutputs(this.#ctx, {
            key: unflushedOutputsKey(id),
            value: mark,
            versionstamp: res.versionstamp,
          }, unflushed);
        }
        return;
      }
      const jobNow = await kv.get<Job>(jobKey(id));
      if (jobNow.versionstamp !== jobStamp) return;
    }
  }

  async #finishFailed(entry: Deno.KvEntry<Job>, reason: string): Promise<void> {
    const kv = this.#ctx.kv;
    const id = entry.value.videoId;
    const attempts = entry.value.attempts;
    const error = `Processing failed after ${attempts} attempt${
      attempts === 1 ? "" : "s"
    }: ${reason}`;
    for (let attempt = 0; attempt < 20; attempt++) {
      const rec = await kv.get<Recording>(recordingKey(id));
      const now = Date.now();
      const atomic = kv.atomic()
        .check(entry)
        .set(jobKey(id), {
          ...entry.value,
          state: "failed",
          leaseUntil: 0,
          lastError: reason,
          updatedAt: now,
        })
        .delete(activeJobKey(id));
      let next: Recording | undefined;
      if (rec.value) {
        next = {
          ...rec.value,
          status: "failed",
          stage: undefined,
          progress: undefined,
          error,
          updatedAt: now,
          finishedAt: now,
        };
        atomic.check(rec).set(recordingKey(id), next)
          .set(finishedRecordingKey(now, id), id);
        addChange(this.#ctx, atomic, next);
      }
      const res = await atomic.commit();
      if (res.ok) {
        if (next) publishChange(this.#ctx, next);
        return;
      }
      const fresh = await kv.get<Job>(jobKey(id));
      if (fresh.versionstamp !== entry.versionstamp) return;
    }
  }
}
