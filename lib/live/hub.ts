/**
 * Live fan-out of recording changes. Every committed change is published to
 * the {@link LiveHub} of this process at once; with a remote KV, the change
 * log (["change", seq]) carries changes between instances via `kv.watch`.
 */

import type { Recording } from "../kv/keys.ts";

/** Receives each committed recording change. */
export type RecordingListener = (recording: Recording) => void;

/** In-process publish/subscribe for recording changes. */
export class LiveHub {
  #listeners = new Set<RecordingListener>();

  /** Calls `listener` on every change until the returned function is called. */
  subscribe(listener: RecordingListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Delivers a committed change to every subscriber. */
  publish(recording: Recording): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(recording);
      } catch (err) {
        console.error("live listener failed:", err);
      }
    }
  }

  /** How many subscribers are attached (for leak checks). */
  get size(): number {
    return this.#listeners.size;
  }
}
