/// <reference lib="dom" />
/**
 * What pages other than the recorder read from the outbox: the upload
 * token of a recording this browser made, and how many recordings it keeps
 * chunks of that no page is uploading.
 */

import { type Signal, signal } from "@preact/signals";
import { ChunkStore } from "./outbox.ts";
import { recordingLockName } from "./recording_lock.ts";

/** The upload token this browser kept for a recording, if any. */
export async function keptUploadToken(
  videoId: string,
): Promise<string | undefined> {
  let store: ChunkStore | undefined;
  try {
    store = await ChunkStore.open();
    return (await store.getRecording(videoId))?.uploadToken;
  } catch {
    return undefined;
  } finally {
    store?.close();
  }
}

/**
 * How many recordings this browser keeps chunks of that no page is
 * uploading (the recorder resumes them).
 */
export async function countKeptUploads(): Promise<number> {
  let store: ChunkStore | undefined;
  try {
    store = await ChunkStore.open();
    const kept = (await store.listRecordings()).filter((r) => !r.leaveOpen);
    if (kept.length === 0) return 0;
    const held = new Set(
      ((await navigator.locks?.query())?.held ?? []).map((l) => l.name),
    );
    return kept.filter((r) => !held.has(recordingLockName(r.videoId))).length;
  } catch {
    return 0;
  } finally {
    store?.close();
  }
}

/** {@link countKeptUploads} for the dashboard's notice, counted once it opens. */
export class KeptUploadCount {
  readonly count: Signal<number> = signal(0);

  /** Counts; returns the function that ignores a count arriving later. */
  open(): () => void {
    let closed = false;
    countKeptUploads().then((n) => {
      if (!closed) this.count.value = n;
    });
    return () => {
      closed = true;
    };
  }
}
