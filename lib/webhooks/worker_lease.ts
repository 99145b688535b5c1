/**
 * A claim of one instance of a cluster on a singleton task (the webhook
 * delivery worker): a KV record `{holder, until}` that the holder renews
 * and the others take over once it lapses. Every write checks the
 * versionstamp read, so two instances never both take it.
 */

import type { WorkerLease } from "../kv/keys.ts";

/** One instance's view of a singleton lease. */
export class SingletonLease {
  #kv: Deno.Kv;
  #key: Deno.KvKey;
  #holder: string;
  #leaseMs: number;
  #until = 0;
  #stamp: string | null = null;
  /** When another holder's lease lapses, as last read (ms), or 0. */
  otherUntil = 0;

  constructor(kv: Deno.Kv, key: Deno.KvKey, holder: string, leaseMs: number) {
    this.#kv = kv;
    this.#key = key;
    this.#holder = holder;
    this.#leaseMs = leaseMs;
  }

  /** Whether this instance holds the lease now (with a margin for clock drift). */
  get held(): boolean {
    return this.#stamp !== null && Date.now() < this.#until - 250;
  }

  /**
   * Takes the lease when it is free, lapsed or this instance's (renewing
   * it), or always with `force` (no other process can use this KV).
   * Resolves whether this instance holds it. A lease with more than two
   * thirds of its time left is not renewed yet (no write).
   */
  async acquire(force = false): Promise<boolean> {
    if (this.held && this.#until - Date.now() > (this.#leaseMs * 2) / 3) {
      return true;
    }
    const entry = await this.#kv.get<WorkerLease>(this.#key);
    const now = Date.now();
    const other = entry.value && entry.value.holder !== this.#holder &&
      entry.value.until > now;
    if (other && !force) {
      this.#stamp = null;
      this.otherUntil = entry.value!.until;
      return false;
    }
    const until = now + this.#leaseMs;
    const res = await this.#kv.atomic().check(entry)
      .set(this.#key, { holder: this.#holder, until } satisfies WorkerLease)
      .commit();
    if (!res.ok) {
      this.#stamp = null;
      return false;
    }
    this.#stamp = res.versionstamp;
    this.#until = until;
    return true;
  }

  /** Gives the lease up (if held), so another instance takes over at once. */
  async release(): Promise<void> {
    if (this.#stamp === null) return;
    const stamp = this.#stamp;
    this.#stamp = null;
    await this.#kv.atomic().check({ key: this.#key, versionstamp: stamp })
      .delete(this.#key).commit().catch(() => {});
  }
}
