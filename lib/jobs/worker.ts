// Over 400 lines: the worker's claim loop, lease handling and outcomes share one job's private state (running set, controllers, timer); leases and outcomes are split out already.
/**
 * The processing worker. The job record in KV is the truth; a `watch` on
 * ["job_wakeup"], a timer for the next due job and a cron sweep only wake the
 * worker up. A claimed job carries a lease that the worker renews while it
 * runs; a job whose lease ran out (a crashed worker) is claimed again. A
 * run may hand over files it made first (a re-encode's WebM and poster):
 * they are listed as soon as the recording is settled, and the run is made
 * again if a chunk came first. The worker also runs the live encodes of
 * recordings still being recorded (lib/live_encode/encoder.ts).
 */

import type { AppContext } from "../core/context.ts";
import type { FfmpegTools } from "../processing/ffmpeg.ts";
import {
  activeJobKey,
  activeJobPrefix,
  type Job,
  jobKey,
  jobWakeupKey,
  type MadeFiles,
  type Recording,
  recordingKey,
} from "../kv/keys.ts";
import { KvConnectionError } from "../kv/connection_error.ts";
import { BadRecordingError } from "../processing/bad_recording.ts";
import {
  type ProcessingOutput,
  processRecording,
} from "../processing/pipeline.ts";
import { endState } from "../recordings/closing.ts";
import { LiveEncoder } from "../live_encode/encoder.ts";
import {
  commitEarlyFiles,
  commitEmptyStop,
  commitFailure,
  commitSuccess,
  parkJob,
  writeProgress,
  writeRetryWait,
} from "./outcomes.ts";
import { JobLease } from "./lease.ts";
import { observeJobRun } from "../ops/instrument.ts";
import { ProgressReporter } from "./progress.ts";

/** Runs one job; tests and other pipelines may pass their own. */
export type JobRunner = (
  ctx: AppContext,
  id: string,
  options: {
    signal: AbortSignal;
    onProgress: (fraction: number, stage: string) => void;
    /**
     * Lists files the run made before the others once the recording is
     * settled (resolves then); rejects, and stops the run to make it
     * again, when a chunk came first.
     */
    listEarly?: (early: MadeFiles) => Promise<void>;
  },
) => Promise<ProcessingOutput>;

/** One attempt of a run: stopped by its lease, or to be made again. */
interface Attempt {
  control: AbortController;
  /** A chunk came before the early files could be listed. */
  changed: boolean;
}

const MAX_TIMER_MS = 60_000;
/** A pass over the jobs running longer than this means the worker is stuck. */
const STUCK_TICK_MS = 60_000;

/** Wait before trying the KV again after `failures` failures in a row. */
function retryDelayMs(failures: number): number {
  return Math.min(250 * 2 ** Math.max(0, failures - 1), 5_000);
}

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
  #watching?: Promise<void>;
  #endPause?: () => void;
  #tickFailures = 0;
  #tickStartedAt = 0;
  #live: LiveEncoder;

  constructor(ctx: AppContext, tools: FfmpegTools, run?: JobRunner) {
    this.#ctx = ctx;
    this.#run = run ??
      ((c, id, o) => processRecording(c, tools, id, o));
    this.#live = new LiveEncoder(ctx, tools, this.id);
  }

  /**
   * Starts watching for work. With a local KV file no other process can hold
   * a claim, so jobs left `running` by a previous process are taken back now.
   */
  async start(): Promise<void> {
    this.#stopped = false;
    if (!this.#ctx.config.sharedKv) await this.#reclaimOrphans();
    this.#watching = this.#followWakeups();
    this.wake();
    await this.#live.start();
  }

  /**
   * Wakes the worker on every change of ["job_wakeup"]. The watch ends when
   * the KV closes; one that fails because the KV's connection broke is
   * opened again, and the worker looks for due jobs then, since wake-ups
   * may have been missed meanwhile.
   */
  async #followWakeups(): Promise<void> {
    let failures = 0;
    while (!this.#stopped) {
      try {
        this.#watch = this.#ctx.kv.watch([jobWakeupKey()]).getReader();
        while (!this.#stopped) {
          const { done } = await this.#watch.read();
          if (done) return;
          failures = 0;
          this.wake();
        }
      } catch (err) {
        if (!(err instanceof KvConnectionError)) return;
      }
      if (this.#stopped) return;
      failures++;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, retryDelayMs(failures));
        this.#endPause = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#endPause = undefined;
      this.wake();
    }
  }

  /** Stops taking jobs, aborts running ones (their leases lapse) and waits for them. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#endPause?.();
    await this.#watch?.cancel().catch(() => {});
    for (const c of this.#controllers.values()) c.abort();
    await this.#live.stop();
    await this.#ticking;
    await this.#watching;
    await Promise.allSettled([...this.#running.values()]);
  }

  /** Looks for due jobs now. */
  wake(): void {
    if (this.#stopped) return;
    if (this.#ticking) {
      this.#again = true;
      return;
    }
    this.#tickStartedAt = Date.now();
    this.#ticking = this.#tick().then(() => {
      this.#tickFailures = 0;
    }, (err) => {
      if (this.#stopped) return;
      if (!(err instanceof KvConnectionError)) {
        this.#ctx.log.error("job worker failed", { error: String(err) });
        return;
      }
      // The KV did not answer (it restarts): look again soon, not only
      // at the next wake-up.
      const delay = retryDelayMs(++this.#tickFailures);
      this.#ctx.log.error("job worker failed; looking for jobs again soon", {
        error: String(err),
        retry_ms: delay,
      });
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => this.wake(), delay);
    }).finally(() => {
      this.#ticking = undefined;
      if (this.#again) {
        this.#again = false;
        this.wake();
      }
    });
  }

  /**
   * Stops this worker's run of recording `id`'s job, if it has one, and
   * waits for it to end (a deleted recording).
   */
  async cancel(id: string): Promise<void> {
    this.#controllers.get(id)?.abort();
    await Promise.all([
      this.#running.get(id)?.catch(() => {}),
      this.#live.cancel(id),
    ]);
  }

  /** How many jobs this worker is running. */
  get busy(): number {
    return this.#running.size;
  }

  /** How many live encodes this worker is running. */
  get liveEncodes(): number {
    return this.#live.busy;
  }

  /** Whether the worker runs and is not stuck in a pass over the jobs (for /readyz). */
  get alive(): boolean {
    if (this.#stopped) return false;
    return !this.#ticking || Date.now() - this.#tickStartedAt < STUCK_TICK_MS;
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
      // Every slot is taken: the run that ends first wakes the worker.
      if (this.#running.size >= this.#ctx.config.jobConcurrency) break;
      if (job.attempts >= job.maxAttempts) {
        await commitFailure(
          this.#ctx,
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
      const done = observeJobRun(
        this.#ctx,
        id,
        claimed,
        () => this.#execute(id, claimed, res.versionstamp),
      ).catch(
        (err) => {
          // Its lease lapses and the job is claimed again.
          this.#ctx.log.error("job run ended without an outcome", {
            recording: id,
            error: String(err),
          });
        },
      ).finally(() => {
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
    const ctx = this.#ctx;
    const lease = new JobLease(
      ctx.kv,
      job,
      versionstamp,
      ctx.config.jobLeaseMs,
    );
    const signal = lease.controller.signal;
    this.#controllers.set(id, lease.controller);
    lease.resume();
    const progress = new ProgressReporter((value) =>
      writeProgress(ctx, id, value)
    );
    const read = async () =>
      (await ctx.kv.get<Recording>(recordingKey(id))).value;
    let again = false;
    let made = job.made;
    try {
      const first = await read();
      if (
        !made && first?.chunksReceived === 0 && first.closedAt !== undefined
      ) {
        // Completed with no chunk: wait out the grace for the first one.
        const end = await endState(ctx, first, { bytes: 0, chunks: 0 });
        if (end.kind !== "changed") {
          await lease.pause();
          if (lease.lost) return;
          if (end.kind === "wait") await parkJob(ctx, lease, end.until);
          else await commitEmptyStop(ctx, id, lease.stamp);
          return;
        }
      }
      while (true) {
        if (!made) {
          // Written in order with what the run reports, while the run
          // already starts; an attempt starts its progress over.
          progress.start(
            again
              ? "processing again: a chunk arrived after the stop"
              : job.attempts > 1
              ? "retrying"
              : "starting",
          );
          const attempt: Attempt = {
            control: new AbortController(),
            changed: false,
          };
          const stop = () => attempt.control.abort();
          signal.addEventListener("abort", stop);
          if (signal.aborted) stop();
          try {
            made = await this.#run(ctx, id, {
              signal: attempt.control.signal,
              onProgress: (fraction, stage) => progress.report(fraction, stage),
              listEarly: (early) => this.#listEarly(id, lease, early, attempt),
            });
          } catch (err) {
            if (!attempt.changed || signal.aborted) throw err;
            // A chunk came before the early files were listed: again.
            await progress.settle();
            made = undefined;
            again = true;
            continue;
          } finally {
            signal.removeEventListener("abort", stop);
          }
          await progress.settle();
        }
        const end = await endState(ctx, await read(), made.input);
        if (end.kind === "changed") {
          made = undefined;
          again = true;
          continue;
        }
        await lease.pause();
        if (lease.lost || end.kind === "gone") {
          await this.#dropIfDeleted(id);
          return;
        }
        if (end.kind === "wait") {
          // Late chunks may still come: the job waits without a worker.
          await parkJob(ctx, lease, end.until, made);
          return;
        }
        const done = await commitSuccess(ctx, id, lease.stamp, lease.job, made);
        if (done === "lost") await this.#dropIfDeleted(id);
        if (done !== "changed") return;
        made = undefined;
        again = true;
        lease.resume();
      }
    } catch (err) {
      await progress.settle();
      await lease.pause();
      if (lease.lost || (await read().catch(() => undefined)) === null) {
        await this.#dropIfDeleted(id);
        return;
      }
      if (err instanceof KvConnectionError) {
        await this.#handBack(id, lease, made);
        return;
      }
      await this.#runFailed(id, lease, err);
    } finally {
      await lease.pause();
    }
  }

  /**
   * Lists the files a run made early (`early`) once no chunk can join the
   * recording any more. When one came first, the attempt is marked
   * `changed` and stopped (it is made again); when the job or the
   * recording went elsewhere, it is stopped.
   */
  async #listEarly(
    id: string,
    lease: JobLease,
    early: MadeFiles,
    attempt: Attempt,
  ): Promise<void> {
    const ctx = this.#ctx;
    const signal = attempt.control.signal;
    const give = (changed: boolean, why: string): never => {
      attempt.changed = changed;
      attempt.control.abort();
      throw new Error(why);
    };
    while (true) {
      if (signal.aborted) give(false, "the run was stopped");
      const rec = (await ctx.kv.get<Recording>(recordingKey(id))).value;
      const end = await endState(ctx, rec, early.input);
      if (end.kind === "changed") give(true, "a chunk came after the stop");
      if (end.kind === "gone") give(false, "the recording is gone");
      if (end.kind === "settled") {
        await lease.pause();
        if (lease.lost) give(false, "the job went to another worker");
        const done = await commitEarlyFiles(ctx, id, lease.stamp, early);
        lease.resume();
        if (done === "done") return;
        give(
          done === "changed",
          `the early files could not be listed (${done})`,
        );
      }
      const until = end.kind === "wait" ? end.until : Date.now();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(
          finish,
          Math.max(10, Math.min(250, until - Date.now())),
        );
        signal.addEventListener("abort", finish);
        function finish() {
          clearTimeout(timer);
          signal.removeEventListener("abort", finish);
          resolve();
        }
      });
    }
  }

  /**
   * Removes what a run may have stored for a recording deleted while it
   * ran (its files were published after the deletion removed the rest).
   */
  async #dropIfDeleted(id: string): Promise<void> {
    const rec = await this.#ctx.kv.get(recordingKey(id)).catch(() => null);
    if (rec && rec.versionstamp === null) {
      await this.#ctx.storage.removeRecording(id).catch(() => {});
    }
  }

  /**
   * Hands a job back, once the KV answers again, after the KV's connection
   * broke during its run: that is not the recording's fault, so the
   * attempt is not counted, and files the run made are kept for the next
   * one. Nothing is written when the job changed meanwhile (the commit cut
   * off may have been applied, or another worker took the job).
   */
  async #handBack(
    id: string,
    lease: JobLease,
    made: MadeFiles | undefined,
  ): Promise<void> {
    const kv = this.#ctx.kv;
    const current = lease.job;
    for (let failures = 1;; failures++) {
      try {
        const now = Date.now();
        await kv.atomic()
          .check({ key: jobKey(id), versionstamp: lease.stamp })
          .set(jobKey(id), {
            ...current,
            made,
            state: "queued",
            attempts: Math.max(0, current.attempts - 1),
            runAfter: now,
            leaseUntil: 0,
            updatedAt: now,
          })
          .set(jobWakeupKey(), now)
          .commit();
        return;
      } catch (err) {
        if (!(err instanceof KvConnectionError) || this.#stopped) return;
        if (Date.now() > current.leaseUntil + this.#ctx.config.jobLeaseMs) {
          return; // claimed again by whoever finds it first
        }
        await new Promise((r) => setTimeout(r, retryDelayMs(failures)));
      }
    }
  }

  /** Hands a failed run back: queued again with backoff, or failed for good. */
  async #runFailed(id: string, lease: JobLease, err: unknown): Promise<void> {
    const kv = this.#ctx.kv;
    const current = lease.job;
    if (this.#stopped) {
      // A graceful stop is not the job's fault: hand it back unchanged.
      await kv.atomic().check({ key: jobKey(id), versionstamp: lease.stamp })
        .set(jobKey(id), {
          ...current,
          made: undefined,
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
    if (entry.versionstamp !== lease.stamp || !entry.value) return;
    // A recording that is not one (or over a limit) fails at once: another
    // attempt would fail the same way and hold a worker.
    if (
      err instanceof BadRecordingError ||
      current.attempts >= current.maxAttempts
    ) {
      await commitFailure(this.#ctx, entry as Deno.KvEntry<Job>, reason);
      return;
    }
    const now = Date.now();
    await kv.atomic().check(entry).set(jobKey(id), {
      ...current,
      made: undefined,
      state: "queued",
      runAfter: now +
        backoffMs(this.#ctx.config.jobBackoffMs, current.attempts),
      leaseUntil: 0,
      lastError: reason,
      updatedAt: now,
    }).commit();
    await writeRetryWait(this.#ctx, id, reason);
  }
}
