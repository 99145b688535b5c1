/**
 * The live upload of a recording's chunks (POST /add_data/<id>/ with
 * `X-Chunk-Index`, one chunk at a time, in order, retried with backoff),
 * each kept by a {@link ChunkSink} until the server acknowledged it. Runs
 * in browsers and in Deno (fetch and Blob only); where chunks are kept is
 * the caller's.
 */

import { type RetryOptions, sendWithRetry } from "./retry.ts";
import { type Session, tokenHeaders } from "./session_api.ts";

/**
 * A first chunk smaller than this is held and sent together with the next
 * one: Chromium sometimes emits a first blob of a single byte, too short for
 * the server to recognise the container.
 */
const MIN_FIRST_CHUNK_BYTES = 64;

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
