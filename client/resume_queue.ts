/// <reference lib="dom" />
/**
 * The resume of every upload the outbox holds that no page is working on
 * (after a reload, a crash of the tab or a lost connection): one runner per
 * recording, each under the recording's lock, and the list the recorder
 * page shows of them.
 */

import { UploadRejectedError, type Waker } from "./retry.ts";
import { resumeUpload } from "./resume_upload.ts";
import type { KeptStore } from "./outbox.ts";
import { withRecordingLock } from "./recording_lock.ts";

/** Where a kept recording's resume stands. */
export type PendingState =
  | "queued"
  | "elsewhere"
  | "checking"
  | "uploading"
  | "finishing"
  | "done"
  | "left-open"
  | "error";

/** States in which a resume is under way. */
export const ACTIVE_STATES: ReadonlySet<PendingState> = new Set([
  "queued",
  "checking",
  "uploading",
  "finishing",
]);

/** A kept recording as the recorder page shows it. */
export interface PendingUpload {
  videoId: string;
  /**
   * `stopped`: the recorder had stopped before the page went away;
   * `interrupted`: it was still recording (it cannot record any more).
   */
  kind: "stopped" | "interrupted";
  /** This page was recording it and handed its upload over (it was not closed). */
  fromThisPage?: boolean;
  state: PendingState;
  /** Complete the recording once every kept chunk is on the server. */
  finish: boolean;
  chunksLeft: number;
  bytesLeft: number;
  uploaded: number;
  skipped: number;
  retries: number;
  /** Why the last try failed, while waiting to try again. */
  retrying?: string;
  /** Indexes the server lacks and this browser no longer has. */
  gaps: number[];
  /** The server's status once done. */
  status?: string;
  error?: string;
}

/** What the user can ask of a kept recording in the recorder's list. */
export type PendingAction =
  | "leave-open"
  | "finish-after"
  | "finish-now"
  | "retry"
  | "discard";

/** Settings of a {@link ResumeQueue}. */
export interface ResumeQueueOptions {
  /** The server; kept recordings of other servers are left alone. */
  baseUrl: string;
  /** Wakes waiting retries, for example on the `online` event. */
  waker?: Waker;
  /** Called with every item after each change. */
  onChange(items: PendingUpload[]): void;
  /** Recordings this page is uploading itself: left alone. */
  isOwn?(videoId: string): boolean;
}

function errorText(err: unknown): string {
  if (err instanceof UploadRejectedError && err.status === 404) {
    return "The server no longer has this recording, so its kept chunks cannot be sent.";
  }
  return (err as Error)?.message ?? String(err);
}

/**
 * Resumes every recording kept in the store that no page is working on:
 * one runner per recording, each under the recording's lock, retrying
 * network failures with backoff until the chunks are on the server.
 */
export class ResumeQueue {
  #store: KeptStore;
  #options: ResumeQueueOptions;
  #items = new Map<string, PendingUpload>();
  #running = new Set<string>();
  #abort = new AbortController();

  constructor(store: KeptStore, options: ResumeQueueOptions) {
    this.#store = store;
    this.#options = options;
  }

  /** The kept recordings found so far, oldest first. */
  get items(): PendingUpload[] {
    return [...this.#items.values()];
  }

  /**
   * Looks for kept recordings and resumes the new ones. `handedOver` names
   * a recording this page was uploading itself until now.
   */
  async scan(handedOver?: string): Promise<void> {
    const recordings = await this.#store.listRecordings();
    for (const rec of recordings) {
      if (
        this.#options.isOwn?.(rec.videoId) || this.#items.has(rec.videoId) ||
        (rec.server !== undefined && rec.server !== this.#options.baseUrl)
      ) continue;
      this.#items.set(rec.videoId, {
        videoId: rec.videoId,
        kind: rec.stopped ? "stopped" : "interrupted",
        fromThisPage: rec.videoId === handedOver || undefined,
        state: "queued",
        finish: !rec.leaveOpen,
        chunksLeft: 0,
        bytesLeft: 0,
        uploaded: 0,
        skipped: 0,
        retries: 0,
        gaps: [],
      });
      this.#changed();
      this.#run(rec.videoId);
    }
  }

  /** Whether to complete a recording once uploaded (before it is). */
  setFinish(videoId: string, finish: boolean): void {
    this.#update(videoId, { finish });
  }

  /** Completes a recording that was left open. */
  finishNow(videoId: string): void {
    const item = this.#items.get(videoId);
    if (!item || this.#running.has(videoId)) return;
    this.#update(videoId, { finish: true, state: "queued", error: undefined });
    this.#store.updateRecording(videoId, { leaveOpen: false })
      .catch(() => {})
      .finally(() => this.#run(videoId));
  }

  /** Tries a recording whose resume failed again. */
  retry(videoId: string): void {
    if (!this.#items.has(videoId) || this.#running.has(videoId)) return;
    this.#update(videoId, { state: "queued", error: undefined });
    this.#run(videoId);
  }

  /** Forgets a recording's kept chunks (after a failure that retrying cannot fix). */
  async discard(videoId: string): Promise<void> {
    if (this.#running.has(videoId)) return;
    await this.#store.deleteRecording(videoId);
    this.#items.delete(videoId);
    this.#changed();
  }

  /** Stops every runner (the kept chunks stay). */
  close(): void {
    this.#abort.abort(new Error("The page stopped resuming uploads."));
  }

  #changed(): void {
    this.#options.onChange(this.items);
  }

  #update(videoId: string, patch: Partial<PendingUpload>): void {
    const item = this.#items.get(videoId);
    if (!item) return;
    this.#items.set(videoId, { ...item, ...patch });
    this.#changed();
  }

  async #run(videoId: string): Promise<void> {
    if (this.#running.has(videoId)) return;
    this.#running.add(videoId);
    try {
      await withRecordingLock(
        videoId,
        this.#abort.signal,
        () => this.#update(videoId, { state: "elsewhere" }),
        () => this.#resume(videoId),
      );
    } catch (err) {
      if (this.#abort.signal.aborted) return;
      this.#update(videoId, {
        state: "error",
        error: errorText(err),
        retrying: undefined,
      });
    } finally {
      this.#running.delete(videoId);
    }
  }

  async #resume(videoId: string): Promise<void> {
    const rec = await this.#store.getRecording(videoId);
    if (!rec) {
      // Finished by the page that held it.
      this.#items.delete(videoId);
      this.#changed();
      return;
    }
    const item = this.#items.get(videoId);
    if (!item) return;
    this.#update(videoId, {
      kind: rec.stopped ? "stopped" : "interrupted",
      state: "checking",
      error: undefined,
    });
    const outcome = await resumeUpload(
      this.#options.baseUrl,
      this.#store.source(rec),
      {
        waker: this.#options.waker,
        signal: this.#abort.signal,
        shouldFinish: () => this.#items.get(videoId)?.finish ?? true,
        onProgress: (p) =>
          this.#update(videoId, {
            state: p.phase,
            chunksLeft: p.chunksLeft,
            bytesLeft: p.bytesLeft,
            uploaded: p.uploaded,
            skipped: p.skipped,
            retries: p.retries,
            retrying: p.retrying,
          }),
      },
    );
    if (outcome.status === "recording") {
      await this.#store.updateRecording(videoId, { leaveOpen: true });
      this.#update(videoId, {
        state: "left-open",
        status: outcome.status,
        gaps: outcome.gaps,
        chunksLeft: 0,
        bytesLeft: 0,
        retrying: undefined,
      });
      return;
    }
    await this.#store.deleteRecording(videoId);
    this.#update(videoId, {
      state: "done",
      status: outcome.status,
      gaps: outcome.gaps,
      chunksLeft: 0,
      bytesLeft: 0,
      retrying: undefined,
    });
  }
}
