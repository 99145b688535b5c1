/**
 * Live fan-out of recording changes. Every committed change is published to
 * the {@link LiveHub} of this process at once; with a remote KV, the change
 * log (["change", seq]) carries changes between instances via `kv.watch`.
 *
 * Subscribers say what they follow, and the hub indexes them by it, so a
 * change reaches only the subscribers it concerns: the cost of a publish
 * grows with the subscribers in scope, not with every socket open.
 *
 * Each version is delivered once: with a shared KV an instance's own change
 * may reach the hub twice (published after its commit, and read back from
 * the change log by the feed, in either order), so a version that looks
 * like the last one delivered for its recording, or is older, is dropped.
 */

import type { Recording } from "../kv/keys.ts";

/** Recordings whose last delivered version is remembered (to drop repeats). */
const MAX_REMEMBERED = 10_000;

/** What makes two versions of a recording look different on a page. */
export function versionPrint(rec: Recording): string {
  return JSON.stringify([
    rec.updatedAt,
    rec.status,
    rec.chunksReceived,
    rec.bytesReceived,
    rec.progress,
    rec.stage,
    rec.error,
    rec.files,
    rec.deleted,
    rec.title,
  ]);
}

/** Receives each committed recording change in its scope. */
export type RecordingListener = (recording: Recording) => void;

/**
 * What a subscription follows: the recordings `ids`, and (when
 * `createdSince` is set) every recording created at or after it (a
 * dashboard's first page sees new recordings appear; `-Infinity` for all).
 */
export interface FollowScope {
  ids?: Iterable<string>;
  createdSince?: number;
}

interface Subscription {
  listener: RecordingListener;
  ids: Set<string>;
}

/** In-process publish/subscribe for recording changes, indexed by scope. */
export class LiveHub {
  /** Subscribers of every change. */
  #all = new Set<Subscription>();
  /** Subscribers of a recording, by its id. */
  #byId = new Map<string, Set<Subscription>>();
  /** Subscribers of recordings created since a time, by that time. */
  #since = new Map<number, Set<Subscription>>();
  #size = 0;
  #calls = 0;
  /** The last version delivered of each recording, least recent first. */
  #last = new Map<string, { at: number; print: string }>();

  /** Calls `listener` on every change until the returned function is called. */
  subscribe(listener: RecordingListener): () => void {
    return this.follow({ createdSince: -Infinity }, listener);
  }

  /**
   * Calls `listener` on each change in `scope` (each change once) until the
   * returned function is called.
   */
  follow(scope: FollowScope, listener: RecordingListener): () => void {
    const sub: Subscription = { listener, ids: new Set(scope.ids ?? []) };
    const since = scope.createdSince;
    if (since === -Infinity) this.#all.add(sub);
    else {
      for (const id of sub.ids) {
        let set = this.#byId.get(id);
        if (!set) this.#byId.set(id, set = new Set());
        set.add(sub);
      }
      if (since !== undefined) {
        let set = this.#since.get(since);
        if (!set) this.#since.set(since, set = new Set());
        set.add(sub);
      }
    }
    this.#size++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#size--;
      this.#all.delete(sub);
      for (const id of sub.ids) {
        const set = this.#byId.get(id);
        set?.delete(sub);
        if (set?.size === 0) this.#byId.delete(id);
      }
      if (since !== undefined) {
        const set = this.#since.get(since);
        set?.delete(sub);
        if (set?.size === 0) this.#since.delete(since);
      }
    };
  }

  /**
   * Delivers a committed change to the subscribers whose scope holds it,
   * unless it is the version last delivered for its recording or older.
   */
  publish(recording: Recording): void {
    if (!this.#isNew(recording)) return;
    for (const sub of this.#all) this.#call(sub, recording);
    const byId = this.#byId.get(recording.id);
    if (byId) { for (const sub of byId) this.#call(sub, recording); }
    for (const [since, subs] of this.#since) {
      if (recording.createdAt < since) continue;
      for (const sub of subs) {
        if (!sub.ids.has(recording.id)) this.#call(sub, recording);
      }
    }
  }

  #isNew(rec: Recording): boolean {
    const print = versionPrint(rec);
    const last = this.#last.get(rec.id);
    if (last && (last.at > rec.updatedAt || last.print === print)) return false;
    this.#last.delete(rec.id);
    this.#last.set(rec.id, { at: rec.updatedAt, print });
    if (this.#last.size > MAX_REMEMBERED) {
      this.#last.delete(this.#last.keys().next().value!);
    }
    return true;
  }

  #call(sub: Subscription, recording: Recording): void {
    this.#calls++;
    try {
      sub.listener(recording);
    } catch (err) {
      console.error("live listener failed:", err);
    }
  }

  /** How many subscriptions are attached (for leak checks). */
  get size(): number {
    return this.#size;
  }

  /** Listener calls made so far (a publish's cost). */
  get deliveries(): number {
    return this.#calls;
  }
}
