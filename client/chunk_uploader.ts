/**
 * The recorder's side of the public API, as any external client would use
 * it: POST /create/, POST /add_data/<id>/ with `X-Chunk-Index` (one chunk at
 * a time, in order, retried with backoff), POST /complete_job/<id>/; and the
 * resume of an interrupted upload from chunks kept on the client
 * ({@link resumeUpload}, with GET /chunks/<id>/). Runs in browsers and in
 * Deno (fetch and Blob only); where chunks are kept is the caller's
 * ({@link ChunkSink}, {@link ResumeSource}).
 */

/** Recorder formats in order of preference (see FACTS.md for Chromium). */
export const PREFERRED_MIME_TYPES = [
  "video/webm;codecs=h264,opus",
  "video/webm;codecs=vp9,opus",
  "video/webm;codecs=vp8,opus",
  "video/webm",
];

/**
 * A first chunk smaller than this is held and sent together with the next
 * one: Chromium sometimes emits a first blob of a single byte, too short for
 * the server to recognise the container.
 */
const MIN_FIRST_CHUNK_BYTES = 64;

/** Statuses worth another try: the server or the path to it may recover. */
const RETRY_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504, 507]);

/** Picks the first preferred type the recorder supports, or "" for its default. */
export function pickMimeType(isSupported: (type: string) => boolean): string {
  return PREFERRED_MIME_TYPES.find((type) => isSupported(type)) ?? "";
}

/**
 * Cuts every pending backoff wait short, for example when the browser says
 * it is online again: the waiting requests are tried at once, with their
 * backoff started afresh.
 */
export class Waker {
  #listeners = new Set<() => void>();

  /** Calls `fn` at the next {@link wake}; returns a function that cancels it. */
  subscribe(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Ends every wait now. */
  wake(): void {
    const listeners = [...this.#listeners];
    this.#listeners.clear();
    for (const fn of listeners) fn();
  }
}

/** Backoff settings for {@link sendWithRetry}. */
export interface RetryOptions {
  /** First delay (ms), doubled per failed try. Default 500. */
  minDelayMs?: number;
  /** Longest delay (ms). Default 8,000. */
  maxDelayMs?: number;
  /** Tries before giving up. Default: never give up. */
  maxAttempts?: number;
  /** Stops waiting and sending. */
  signal?: AbortSignal;
  /** Ends a wait early (the next try then starts the backoff afresh). */
  waker?: Waker;
  /** Called before each wait with the try that failed (1-based) and why. */
  onRetry?(attempt: number, reason: string): void;
}

/** An error the server answered with; sending the same request again will not help. */
export class UploadRejectedError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "UploadRejectedError";
    this.status = status;
  }
}

/** Waits `ms`; resolves true when a waker ended the wait early. */
function wait(
  ms: number,
  signal?: AbortSignal,
  waker?: Waker,
): Promise<boolean> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = (woken: boolean) => {
      clearTimeout(timer);
      unsubscribe?.();
      signal?.removeEventListener("abort", onAbort);
      resolve(woken);
    };
    const onAbort = () => {
      clearTimeout(timer);
      unsubscribe?.();
      reject(signal!.reason);
    };
    const timer = setTimeout(() => done(false), ms);
    const unsubscribe = waker?.subscribe(() => done(true));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function errorMessage(res: Response): Promise<string> {
  try {
    const body = await res.json();
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // not JSON
  }
  return `The server answered ${res.status} ${res.statusText}`.trim();
}

/**
 * Sends a request until the server answers with something other than a
 * network error or a retryable status. Throws {@link UploadRejectedError}
 * for any other non-2xx answer.
 */
export async function sendWithRetry(
  url: string,
  init: RequestInit,
  options: RetryOptions = {},
): Promise<Response> {
  const minDelay = options.minDelayMs ?? 500;
  const maxDelay = options.maxDelayMs ?? 8_000;
  const maxAttempts = options.maxAttempts ?? Infinity;
  let step = 0;
  for (let attempt = 1;; attempt++) {
    options.signal?.throwIfAborted();
    let reason: string;
    let retryAfterMs = 0;
    try {
      const res = await fetch(url, { ...init, signal: options.signal });
      if (res.ok) return res;
      const message = await errorMessage(res);
      if (!RETRY_STATUSES.has(res.status)) {
        throw new UploadRejectedError(res.status, message);
      }
      reason = message;
      retryAfterMs = Number(res.headers.get("retry-after") ?? 0) * 1000 || 0;
    } catch (err) {
      if (err instanceof UploadRejectedError) throw err;
      options.signal?.throwIfAborted();
      reason = `network error: ${(err as Error).message ?? err}`;
    }
    if (attempt >= maxAttempts) throw new Error(reason);
    options.onRetry?.(attempt, reason);
    const backoff = Math.min(maxDelay, minDelay * 2 ** step++);
    const woken = await wait(
      Math.max(backoff, Math.min(retryAfterMs, 60_000)),
      options.signal,
      options.waker,
    );
    if (woken) step = 0;
  }
}

/** A session opened with POST /create/. */
export interface Session {
  videoId: string;
  /** The session's upload token, when the server issues one. */
  uploadToken?: string;
}

/** Opens a session with POST /create/. */
export async function createSession(
  baseUrl: string,
  options: RetryOptions = {},
): Promise<Session> {
  const res = await sendWithRetry(
    `${baseUrl}/create/`,
    { method: "POST" },
    options,
  );
  const body = await res.json();
  return {
    videoId: body.video_id,
    uploadToken: typeof body.upload_token === "string"
      ? body.upload_token
      : undefined,
  };
}

/** The `X-Upload-Token` header of a session, when it has a token. */
export function tokenHeaders(
  session: { uploadToken?: string },
): Record<string, string> {
  return session.uploadToken ? { "X-Upload-Token": session.uploadToken } : {};
}

/** Ends a session with POST /complete_job/<id>/ and returns the server's message. */
export async function completeSession(
  baseUrl: string,
  session: Session,
  options: RetryOptions = {},
): Promise<string> {
  const res = await sendWithRetry(
    `${baseUrl}/complete_job/${session.videoId}/`,
    { method: "POST", headers: tokenHeaders(session) },
    options,
  );
  return (await res.json()).message;
}

/**
 * Requeues a failed recording with POST /retry_job/<id>/ and returns the
 * server's message. Not retried: the caller shows the answer.
 */
export async function retryProcessing(
  baseUrl: string,
  session: Session,
  options: RetryOptions = {},
): Promise<string> {
  const res = await sendWithRetry(
    `${baseUrl}/retry_job/${session.videoId}/`,
    { method: "POST", headers: tokenHeaders(session) },
    { maxAttempts: 1, ...options },
  );
  return (await res.json()).message;
}

/** What GET /chunks/<id>/ says the server holds. */
export interface ChunkLedger {
  bytes_received: number;
  chunks_received: number;
  /** Index the next chunk without an index would get. */
  next_index: number;
  /** Held indexes as inclusive [first, last] ranges. */
  received: Array<[number, number]>;
  /** Indexes below `next_index` that are not held. */
  missing: number[];
}

/** Reads the chunk ledger of a session (GET /chunks/<id>/). */
export async function fetchLedger(
  baseUrl: string,
  session: Session,
  options: RetryOptions = {},
): Promise<ChunkLedger> {
  const res = await sendWithRetry(
    `${baseUrl}/chunks/${session.videoId}/`,
    { headers: tokenHeaders(session) },
    options,
  );
  return await res.json();
}

/** Whether the ledger lists `index` as held. */
export function ledgerHolds(ledger: ChunkLedger, index: number): boolean {
  return ledger.received.some(([first, last]) =>
    index >= first && index <= last
  );
}

/** Reads a session's status (GET /check_status/<id>/). */
export async function fetchStatus(
  baseUrl: string,
  session: Session,
  options: RetryOptions = {},
): Promise<{ status: string; error?: string }> {
  const res = await sendWithRetry(
    `${baseUrl}/check_status/${session.videoId}/`,
    { headers: tokenHeaders(session) },
    options,
  );
  return await res.json();
}

/** Counters of an upload, for the "uploaded / recorded" display. */
export interface UploadProgress {
  recordedChunks: number;
  recordedBytes: number;
  uploadedChunks: number;
  uploadedBytes: number;
  /** Chunks kept by the sink (the browser's storage) and not yet acknowledged. */
  keptChunks: number;
  /** Failed tries so far, all chunks together. */
  retries: number;
  /** Why the last try failed, while a chunk is waiting to be sent again. */
  retrying?: string;
  /** Why the sink could not keep a chunk (it is still sent from memory). */
  keepError?: string;
  /** Set once the upload has stopped for good. */
  error?: string;
}

/**
 * Where a {@link ChunkUploader} keeps each chunk until the server has
 * acknowledged it, so that a page that dies can send it later.
 */
export interface ChunkSink {
  /** Keeps a chunk; resolves once it is durably kept. */
  save(index: number, blob: Blob): Promise<void>;
  /** The server acknowledged the chunk: it may be dropped. */
  forget(index: number): Promise<void>;
}

/** Settings of a {@link ChunkUploader}. */
export interface ChunkUploaderOptions extends Omit<RetryOptions, "onRetry"> {
  /** Called after every change of the counters. */
  onProgress?(progress: UploadProgress): void;
  /** Keeps every chunk until it is acknowledged. */
  sink?: ChunkSink;
  /**
   * Called once per chunk when it has its index and is kept by the sink
   * (at once without a sink, or when keeping it failed).
   */
  onChunk?(index: number, blob: Blob): void;
}

interface QueuedChunk {
  index: number;
  blob: Blob;
  /** Resolves true once the sink keeps the chunk, false if it does not. */
  kept: Promise<boolean>;
}

/**
 * Sends the chunks of one session one after another, each with its index
 * (so a retried chunk is stored once), retrying each until it is stored.
 * With a {@link ChunkSink}, each chunk is kept there from the moment it has
 * an index until the server acknowledged it.
 */
export class ChunkUploader {
  #url: string;
  #headers: Record<string, string>;
  #options: ChunkUploaderOptions;
  #queue: QueuedChunk[] = [];
  #held: Blob | null = null;
  #pumping?: Promise<void>;
  #io = new Set<Promise<unknown>>();
  #abort = new AbortController();
  #progress: UploadProgress = {
    recordedChunks: 0,
    recordedBytes: 0,
    uploadedChunks: 0,
    uploadedBytes: 0,
    keptChunks: 0,
    retries: 0,
  };

  constructor(
    baseUrl: string,
    session: Session,
    options: ChunkUploaderOptions = {},
  ) {
    this.#url = `${baseUrl}/add_data/${session.videoId}/`;
    this.#headers = tokenHeaders(session);
    this.#options = options;
  }

  /** The counters as they are now. */
  get progress(): UploadProgress {
    return { ...this.#progress };
  }

  /**
   * Queues the next chunk. Empty blobs are skipped (they carry no index); a
   * tiny first blob waits for the next one and is sent with it.
   */
  push(blob: Blob): void {
    if (blob.size === 0 || this.#progress.error) return;
    this.#progress.recordedBytes += blob.size;
    if (this.#held) {
      blob = new Blob([this.#held, blob], {
        type: blob.type || this.#held.type,
      });
      this.#held = null;
    }
    if (
      this.#progress.recordedChunks === 0 && blob.size < MIN_FIRST_CHUNK_BYTES
    ) {
      this.#held = blob;
    } else {
      this.#enqueue(blob);
    }
    this.#report();
  }

  /** Gives a held tiny first blob its index now (the recorder has stopped). */
  flush(): void {
    if (this.#held && !this.#progress.error) {
      this.#enqueue(this.#held);
      this.#held = null;
      this.#report();
    }
  }

  /** Resolves once every chunk that has an index is kept by the sink (or failed to be). */
  async kept(): Promise<void> {
    await Promise.all(this.#queue.map((c) => c.kept));
    while (this.#io.size > 0) await Promise.allSettled([...this.#io]);
  }

  /**
   * Resolves when every chunk pushed so far is stored on the server and
   * dropped from the sink; rejects if the upload stopped.
   */
  async drain(): Promise<void> {
    this.flush();
    while (this.#pumping) await this.#pumping;
    while (this.#io.size > 0) await Promise.allSettled([...this.#io]);
    if (this.#progress.error) throw new Error(this.#progress.error);
  }

  /** Stops sending; queued chunks are dropped (the sink keeps its copies). */
  abort(): void {
    this.#abort.abort(new Error("The upload was cancelled."));
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#io.add(promise);
    promise.finally(() => this.#io.delete(promise)).catch(() => {});
    return promise;
  }

  #enqueue(blob: Blob): void {
    const index = this.#progress.recordedChunks;
    const sink = this.#options.sink;
    const kept = sink
      ? this.#track(
        sink.save(index, blob).then(() => {
          this.#progress.keptChunks++;
          return true;
        }, (err) => {
          this.#progress.keepError = `chunk ${index} is kept only in memory: ${
            (err as Error)?.message ?? err
          }`;
          return false;
        }).then((ok) => {
          this.#options.onChunk?.(index, blob);
          this.#report();
          return ok;
        }),
      )
      : Promise.resolve(false);
    if (!sink) this.#options.onChunk?.(index, blob);
    this.#queue.push({ index, blob, kept });
    this.#progress.recordedChunks++;
    this.#kick();
  }

  #kick(): void {
    if (this.#pumping) return;
    this.#pumping = this.#pump().finally(() => {
      this.#pumping = undefined;
      if (this.#queue.length > 0 && !this.#progress.error) this.#kick();
    });
  }

  async #pump(): Promise<void> {
    while (this.#queue.length > 0) {
      const { index, blob, kept } = this.#queue[0];
      try {
        await sendWithRetry(this.#url, {
          method: "POST",
          body: blob,
          headers: { ...this.#headers, "X-Chunk-Index": String(index) },
        }, {
          ...this.#options,
          signal: this.#abort.signal,
          onRetry: (_attempt, reason) => {
            this.#progress.retries++;
            this.#progress.retrying = reason;
            this.#report();
          },
        });
      } catch (err) {
        this.#queue.length = 0;
        this.#progress.retrying = undefined;
        this.#progress.error = (err as Error).message || String(err);
        this.#report();
        return;
      }
      this.#queue.shift();
      this.#progress.uploadedChunks++;
      this.#progress.uploadedBytes += blob.size;
      this.#progress.retrying = undefined;
      this.#report();
      this.#track(kept.then(async (isKept) => {
        if (!isKept) return;
        await this.#options.sink!.forget(index);
        this.#progress.keptChunks--;
        this.#report();
      })).catch(() => {
        // Left in the sink: a later resume finds it acknowledged and drops it.
      });
    }
  }

  #report() {
    this.#options.onProgress?.(this.progress);
  }
}

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
