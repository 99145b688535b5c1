/**
 * A worker's claim on a job: the job record's `leaseUntil`, renewed while
 * the job runs. The renewal checks the versionstamp the worker last wrote;
 * when another writer got there (the lease lapsed and another worker took
 * the job), the lease is lost and the run is aborted.
 */

import { type Job, jobKey } from "../kv/keys.ts";

/** Renews the lease on one claimed job and knows its latest versionstamp. */
export class JobLease {
  readonly controller = new AbortController();
  #kv: Deno.Kv;
  #leaseMs: number;
  #job: Job;
  #stamp: string;
  #lost = false;
  #timer?: ReturnType<typeof setInterval>;
  #renewing?: Promise<void>;

  constructor(kv: Deno.Kv, job: Job, versionstamp: string, leaseMs: number) {
    this.#kv = kv;
    this.#job = job;
    this.#stamp = versionstamp;
    this.#leaseMs = leaseMs;
  }

  /** The job as this worker last wrote it. */
  get job(): Job {
    return this.#job;
  }

  /** The versionstamp of the job record this worker last wrote. */
  get stamp(): string {
    return this.#stamp;
  }

  /** Whether another writer changed the job: this run no longer owns it. */
  get lost(): boolean {
    return this.#lost;
  }

  /** Renews the lease every third of its length until {@link pause}. */
  resume(): void {
    if (this.#timer !== undefined || this.#lost) return;
    this.#timer = setInterval(() => {
      this.#renewing ??= this.#renew().finally(() =>
        this.#renewing = undefined
      );
    }, Math.max(250, Math.floor(this.#leaseMs / 3)));
  }

  /** Stops renewing and waits for a renewal in flight (before a commit of the job). */
  async pause(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#renewing;
  }

  async #renew(): Promise<void> {
    const leased = {
      ...this.#job,
      leaseUntil: Date.now() + this.#leaseMs,
      updatedAt: Date.now(),
    };
    try {
      const res = await this.#kv.atomic()
        .check({ key: jobKey(this.#job.videoId), versionstamp: this.#stamp })
        .set(jobKey(this.#job.videoId), leased).commit();
      if (res.ok) {
        this.#stamp = res.versionstamp;
        this.#job = leased;
      } else {
        this.#lost = true;
        clearInterval(this.#timer);
        this.controller.abort();
      }
    } catch {
      // KV closing; the lease simply lapses
    }
  }
}
