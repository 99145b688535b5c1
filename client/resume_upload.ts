/**
 * The resume of an interrupted upload from chunks kept on the client
 * ({@link resumeUpload}): the server's chunk ledger (GET /chunks/<id>/)
 * says what it holds, the rest is sent with its index, then the recording
 * is completed. Runs in browsers and in Deno (fetch and Blob only); where
 * the chunks are kept is the caller's ({@link ResumeSource}).
 */

import {
  type RetryOptions,
  sendWithRetry,
  UploadRejectedError,
} from "./retry.ts";
import {
  fetchLedger,
  fetchStatus,
  type Session,
  tokenHeaders,
} from "./session_api.ts";

/**
 * Chunks of an interrupted upload kept on the client (a browser's
 * IndexedDB, a folder), for {@link resumeUpload}.
 */
export interface ResumeSource {
  session: Session;
  /** The kept chunks' indexes and sizes, ascending by index. */
  chunks(): Promise<{ index: number; size: number }[]>;
  /** A kept chunk's bytes, or undefined when they can no longer be read. */
  read(index: number): Promise<Blob | undefined>;
  /** The server holds the chunk: it may be dropped. */
  forget(index: number): Promise<void>;
}

/** Where a {@link resumeUpload} stands. */
export interface ResumeProgress {
  phase: "checking" | "uploading" | "finishing";
  /** Kept chunks not yet acknowledged. */
  chunksLeft: number;
  bytesLeft: number;
  /** Chunks sent and acknowledged by this resume. */
  uploaded: number;
  /** Kept chunks the server already held (dropped without sending). */
  skipped: number;
  retries: number;
  /** Why the last try failed, while waiting to try again. */
  retrying?: string;
}

/** Settings of {@link resumeUpload}. */
export interface ResumeOptions extends Omit<RetryOptions, "onRetry"> {
  /** Asked once every kept chunk is on the server: complete the recording? */
  shouldFinish(): boolean;
  onProgress?(progress: ResumeProgress): void;
}

/** How a {@link resumeUpload} ended. */
export interface ResumeOutcome {
  uploaded: number;
  skipped: number;
  /**
   * Indexes the server lacks below its highest one, that this client no
   * longer has either (the video skips them).
   */
  gaps: number[];
  /**
   * The recording's status afterwards: `recording` when left open,
   * `processing` once completed, the server's status when it had already
   * finished it, `empty` when it has no data at all (nothing to complete).
   */
  status: string;
  /** The server's answer to complete_job, when it was called. */
  message?: string;
}

/**
 * Sends what a client kept of an interrupted recording: reads the server's
 * chunk ledger (GET /chunks/<id>/), drops the kept chunks the server already
 * holds, sends the others with their index (retried with backoff, forever
 * unless `maxAttempts` is set), then completes the recording if
 * `shouldFinish()` says so. Throws {@link UploadRejectedError} when the
 * server cannot take them: the recording is unknown (404) or already
 * finished while kept chunks are still missing there (409).
 */
export async function resumeUpload(
  baseUrl: string,
  source: ResumeSource,
  options: ResumeOptions,
): Promise<ResumeOutcome> {
  const { session } = source;
  const progress: ResumeProgress = {
    phase: "checking",
    chunksLeft: 0,
    bytesLeft: 0,
    uploaded: 0,
    skipped: 0,
    retries: 0,
  };
  const report = () => options.onProgress?.({ ...progress });
  const retry: RetryOptions = {
    ...options,
    onRetry(_attempt, reason) {
      progress.retries++;
      progress.retrying = reason;
      report();
    },
  };
  let kept = await source.chunks();
  progress.chunksLeft = kept.length;
  progress.bytesLeft = kept.reduce((n, c) => n + c.size, 0);
  report();

  const ledger = await fetchLedger(baseUrl, session, retry);
  const { status } = await fetchStatus(baseUrl, session, retry);
  progress.retrying = undefined;
  const held = new Set<number>();
  for (const [first, last] of ledger.received) {
    for (let i = first; i <= last; i++) held.add(i);
  }
  const toSend: { index: number; size: number }[] = [];
  for (const chunk of kept) {
    if (held.has(chunk.index)) {
      await source.forget(chunk.index);
      progress.skipped++;
      progress.chunksLeft--;
      progress.bytesLeft -= chunk.size;
    } else {
      toSend.push(chunk);
    }
  }
  kept = toSend;
  report();
  if (kept.length > 0 && status !== "recording") {
    throw new UploadRejectedError(
      409,
      `The server already finished this recording (${status}), so the ${kept.length} chunk${
        kept.length === 1 ? "" : "s"
      } kept in this browser can no longer be added.`,
    );
  }

  progress.phase = "uploading";
  report();
  const unreadable: number[] = [];
  const url = `${baseUrl}/add_data/${session.videoId}/`;
  for (const chunk of kept) {
    const blob = await source.read(chunk.index);
    if (blob && blob.size > 0) {
      await sendWithRetry(url, {
        method: "POST",
        body: blob,
        headers: {
          ...tokenHeaders(session),
          "X-Chunk-Index": String(chunk.index),
        },
      }, retry);
      held.add(chunk.index);
      progress.uploaded++;
    } else {
      unreadable.push(chunk.index);
    }
    await source.forget(chunk.index);
    progress.retrying = undefined;
    progress.chunksLeft--;
    progress.bytesLeft -= chunk.size;
    report();
  }

  let top = ledger.next_index;
  for (const i of held) if (i >= top) top = i + 1;
  const gaps: number[] = [];
  for (let i = 0; i < top && gaps.length < 1000; i++) {
    if (!held.has(i)) gaps.push(i);
  }
  for (const i of unreadable) if (!gaps.includes(i)) gaps.push(i);
  gaps.sort((a, b) => a - b);

  const outcome: ResumeOutcome = {
    uploaded: progress.uploaded,
    skipped: progress.skipped,
    gaps,
    status,
  };
  if (status !== "recording" || !options.shouldFinish()) return outcome;
  progress.phase = "finishing";
  report();
  try {
    const res = await sendWithRetry(
      `${baseUrl}/complete_job/${session.videoId}/`,
      { method: "POST", headers: tokenHeaders(session) },
      retry,
    );
    const body = await res.json();
    return {
      ...outcome,
      status: typeof body.status === "string" ? body.status : "processing",
      message: body.message,
    };
  } catch (err) {
    if (
      err instanceof UploadRejectedError && err.status === 409 &&
      held.size === 0
    ) {
      return { ...outcome, status: "empty", message: err.message };
    }
    throw err;
  }
}
