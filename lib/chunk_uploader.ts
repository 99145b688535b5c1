/**
 * The recorder's side of the public API, as any external client would use
 * it: POST /create/, POST /add_data/<id>/ with `X-Chunk-Index` (one chunk at
 * a time, in order, retried with backoff), POST /complete_job/<id>/.
 * Runs in browsers and in Deno (fetch and Blob only).
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

function wait(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
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
    const backoff = Math.min(maxDelay, minDelay * 2 ** (attempt - 1));
    await wait(
      Math.max(backoff, Math.min(retryAfterMs, 60_000)),
      options.signal,
    );
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

function tokenHeaders(session: Session): Record<string, string> {
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

/** Counters of an upload, for the "uploaded / recorded" display. */
export interface UploadProgress {
  recordedChunks: number;
  recordedBytes: number;
  uploadedChunks: number;
  uploadedBytes: number;
  /** Failed tries so far, all chunks together. */
  retries: number;
  /** Why the last try failed, while a chunk is waiting to be sent again. */
  retrying?: string;
  /** Set once the upload has stopped for good. */
  error?: string;
}

/** Settings of a {@link ChunkUploader}. */
export interface ChunkUploaderOptions extends Omit<RetryOptions, "onRetry"> {
  /** Called after every change of the counters. */
  onProgress?(progress: UploadProgress): void;
}

/**
 * Sends the chunks of one session one after another, each with its index
 * (so a retried chunk is stored once), retrying each until it is stored.
 */
export class ChunkUploader {
  #url: string;
  #headers: Record<string, string>;
  #options: ChunkUploaderOptions;
  #queue: { index: number; blob: Blob }[] = [];
  #held: Blob | null = null;
  #pumping?: Promise<void>;
  #abort = new AbortController();
  #progress: UploadProgress = {
    recordedChunks: 0,
    recordedBytes: 0,
    uploadedChunks: 0,
    uploadedBytes: 0,
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

  /** Resolves when every chunk pushed so far is stored; rejects if the upload stopped. */
  async drain(): Promise<void> {
    if (this.#held && !this.#progress.error) {
      this.#enqueue(this.#held);
      this.#held = null;
      this.#report();
    }
    while (this.#pumping) await this.#pumping;
    if (this.#progress.error) throw new Error(this.#progress.error);
  }

  /** Stops sending; queued chunks are dropped. */
  abort(): void {
    this.#abort.abort(new Error("The upload was cancelled."));
  }

  #enqueue(blob: Blob): void {
    this.#queue.push({ index: this.#progress.recordedChunks, blob });
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
      const { index, blob } = this.#queue[0];
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
    }
  }

  #report() {
    this.#options.onProgress?.(this.progress);
  }
}
