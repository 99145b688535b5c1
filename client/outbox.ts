/// <reference lib="dom" />
/**
 * The browser's copy of every chunk the server has not acknowledged yet,
 * in IndexedDB, and the resume of the uploads it holds after a reload, a
 * crash of the tab or a lost connection.
 *
 * Schema (database {@link DB_NAME}, version {@link DB_VERSION}):
 * - `recordings`, key `videoId`: a {@link KeptRecording} per recording whose
 *   upload is not finished (its chunks not all acknowledged, or
 *   complete_job not yet answered);
 * - `chunks`, key `[videoId, index]`: `{ videoId, index, size, blob }`, one
 *   per chunk not yet acknowledged by a 200 from /add_data.
 *
 * A recording being recorded or resumed holds the Web Lock
 * {@link recordingLockName} for as long as a page works on it, so another
 * tab never resumes (and completes) a recording that is still live. The
 * browser releases the lock by itself when the page goes away.
 *
 * Only for browsers: nothing here touches IndexedDB until called.
 */

import {
  type ChunkSink,
  completeSession,
  type ResumeSource,
  resumeUpload,
  retryProcessing,
  UploadRejectedError,
  type Waker,
} from "./chunk_uploader.ts";

/** The IndexedDB database. */
export const DB_NAME = "tapedeck-uploads";
/** Its schema version. */
export const DB_VERSION = 1;
/** Object store of {@link KeptRecording}s. */
export const RECORDINGS_STORE = "recordings";
/** Object store of kept chunks. */
export const CHUNKS_STORE = "chunks";

/** What the browser keeps of a recording until its upload is finished. */
export interface KeptRecording {
  videoId: string;
  /** The session's upload token, when the server issued one. */
  uploadToken?: string;
  /** The MediaRecorder's type ("" for the browser's default). */
  mimeType: string;
  createdAt: number;
  updatedAt: number;
  /** The MediaRecorder started. */
  started: boolean;
  /** The MediaRecorder stopped (every chunk has its index and is kept). */
  stopped: boolean;
  /** Uploaded after an interruption and, by the user's choice, not completed. */
  leaveOpen?: boolean;
}

/** A kept chunk as stored. */
export interface KeptChunk {
  videoId: string;
  index: number;
  size: number;
  blob: Blob;
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB failed"));
  });
}

function finished(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () =>
      reject(tx.error ?? new Error("An IndexedDB transaction failed."));
    tx.onabort = () =>
      reject(tx.error ?? new Error("An IndexedDB transaction was aborted."));
  });
}

function chunkRange(videoId: string): IDBKeyRange {
  return IDBKeyRange.bound([videoId, 0], [videoId, Infinity]);
}

/** The kept recordings and chunks of this origin (see the module notes). */
export class ChunkStore {
  #db: IDBDatabase;

  private constructor(db: IDBDatabase) {
    this.#db = db;
    db.onversionchange = () => db.close();
  }

  /** Opens (and on first use creates) the database; rejects where IndexedDB is unavailable. */
  static open(): Promise<ChunkStore> {
    return new Promise((resolve, reject) => {
      if (typeof indexedDB === "undefined") {
        reject(new Error("This browser has no IndexedDB."));
        return;
      }
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains(RECORDINGS_STORE)) {
          db.createObjectStore(RECORDINGS_STORE, { keyPath: "videoId" });
        }
        if (!db.objectStoreNames.contains(CHUNKS_STORE)) {
          db.createObjectStore(CHUNKS_STORE, { keyPath: ["videoId", "index"] });
        }
      };
      req.onsuccess = () => resolve(new ChunkStore(req.result));
      req.onerror = () =>
        reject(req.error ?? new Error("IndexedDB could not be opened."));
      req.onblocked = () =>
        reject(new Error("IndexedDB is blocked by another tab."));
    });
  }

  /** A write transaction that is on disk when it completes. */
  #write(stores: string[]): IDBTransaction {
    return this.#db.transaction(stores, "readwrite", { durability: "strict" });
  }

  /** Adds or replaces a recording. */
  async saveRecording(rec: KeptRecording): Promise<void> {
    const tx = this.#write([RECORDINGS_STORE]);
    tx.objectStore(RECORDINGS_STORE).put(rec);
    await finished(tx);
  }

  /** Changes some fields of a kept recording (nothing if it is gone). */
  async updateRecording(
    videoId: string,
    patch: Partial<Omit<KeptRecording, "videoId">>,
  ): Promise<void> {
    const tx = this.#write([RECORDINGS_STORE]);
    const store = tx.objectStore(RECORDINGS_STORE);
    const rec = await request<KeptRecording | undefined>(store.get(videoId));
    if (rec) store.put({ ...rec, ...patch, updatedAt: Date.now() });
    await finished(tx);
  }

  /** One kept recording. */
  async getRecording(videoId: string): Promise<KeptRecording | undefined> {
    const tx = this.#db.transaction([RECORDINGS_STORE], "readonly");
    return await request<KeptRecording | undefined>(
      tx.objectStore(RECORDINGS_STORE).get(videoId),
    );
  }

  /** Every kept recording, oldest first. */
  async listRecordings(): Promise<KeptRecording[]> {
    const tx = this.#db.transaction([RECORDINGS_STORE], "readonly");
    const all = await request<KeptRecording[]>(
      tx.objectStore(RECORDINGS_STORE).getAll(),
    );
    return all.sort((a, b) => a.createdAt - b.createdAt);
  }

  /** Forgets a recording and all its chunks. */
  async deleteRecording(videoId: string): Promise<void> {
    const tx = this.#write([RECORDINGS_STORE, CHUNKS_STORE]);
    tx.objectStore(CHUNKS_STORE).delete(chunkRange(videoId));
    tx.objectStore(RECORDINGS_STORE).delete(videoId);
    await finished(tx);
  }

  /** Keeps a chunk; resolves once it is on disk. */
  async saveChunk(videoId: string, index: number, blob: Blob): Promise<void> {
    const tx = this.#write([CHUNKS_STORE]);
    const chunk: KeptChunk = { videoId, index, size: blob.size, blob };
    tx.objectStore(CHUNKS_STORE).put(chunk);
    await finished(tx);
  }

  /** Drops an acknowledged chunk. */
  async deleteChunk(videoId: string, index: number): Promise<void> {
    const tx = this.#write([CHUNKS_STORE]);
    tx.objectStore(CHUNKS_STORE).delete([videoId, index]);
    await finished(tx);
  }

  /** The kept chunks of a recording (index and size), by index. */
  async listChunks(
    videoId: string,
  ): Promise<{ index: number; size: number }[]> {
    const tx = this.#db.transaction([CHUNKS_STORE], "readonly");
    const all = await request<KeptChunk[]>(
      tx.objectStore(CHUNKS_STORE).getAll(chunkRange(videoId)),
    );
    return all.map((c) => ({ index: c.index, size: c.size }));
  }

  /** A kept chunk's bytes, or undefined if it is gone or cannot be read. */
  async readChunk(videoId: string, index: number): Promise<Blob | undefined> {
    const tx = this.#db.transaction([CHUNKS_STORE], "readonly");
    const chunk = await request<KeptChunk | undefined>(
      tx.objectStore(CHUNKS_STORE).get([videoId, index]),
    );
    if (!chunk?.blob) return undefined;
    try {
      // A blob whose backing file was lost fails here, not in every fetch.
      await chunk.blob.slice(0, 1).arrayBuffer();
    } catch {
      return undefined;
    }
    return chunk.blob;
  }

  /** Where a live upload keeps its chunks until they are acknowledged. */
  sink(videoId: string): ChunkSink {
    return {
      save: (index, blob) => this.saveChunk(videoId, index, blob),
      forget: (index) => this.deleteChunk(videoId, index),
    };
  }

  /** The kept chunks of a recording, for {@link resumeUpload}. */
  source(rec: KeptRecording): ResumeSource {
    return {
      session: { videoId: rec.videoId, uploadToken: rec.uploadToken },
      chunks: () => this.listChunks(rec.videoId),
      read: (index) => this.readChunk(rec.videoId, index),
      forget: (index) => this.deleteChunk(rec.videoId, index),
    };
  }

  close(): void {
    this.#db.close();
  }
}

/** The Web Lock a page holds while it records or resumes a recording. */
export function recordingLockName(videoId: string): string {
  return `tapedeck-recording:${videoId}`;
}

function locks(): LockManager | undefined {
  return typeof navigator !== "undefined" ? navigator.locks : undefined;
}

/**
 * Takes the recording's lock for this page (waiting for it if another page
 * holds it) and resolves with the function that releases it. Without Web
 * Locks, resolves at once with a no-op.
 */
export function holdRecordingLock(videoId: string): Promise<() => void> {
  const manager = locks();
  if (!manager) return Promise.resolve(() => {});
  return new Promise((resolve) => {
    manager.request(
      recordingLockName(videoId),
      () => new Promise<void>((release) => resolve(() => release())),
    ).catch(() => resolve(() => {}));
  });
}

/**
 * Runs `fn` holding the recording's lock. If another page holds it, calls
 * `onWaiting` and waits for it (until `signal` aborts).
 */
async function withRecordingLock<T>(
  videoId: string,
  signal: AbortSignal,
  onWaiting: () => void,
  fn: () => Promise<T>,
): Promise<T> {
  const manager = locks();
  if (!manager) return await fn();
  const name = recordingLockName(videoId);
  const first = await manager.request(
    name,
    { ifAvailable: true },
    async (lock) => lock ? { value: await fn() } : null,
  );
  if (first) return first.value;
  onWaiting();
  return await manager.request(name, { signal }, () => fn());
}

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

/** Settings of a {@link ResumeQueue}. */
export interface ResumeQueueOptions {
  /** The server (the page's origin). */
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
  #store: ChunkStore;
  #options: ResumeQueueOptions;
  #items = new Map<string, PendingUpload>();
  #running = new Set<string>();
  #abort = new AbortController();

  constructor(store: ChunkStore, options: ResumeQueueOptions) {
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
        this.#options.isOwn?.(rec.videoId) || this.#items.has(rec.videoId)
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
 * What the dashboard and a recording's page do for their buttons: POST
 * /complete_job/<id>/ ("finish") or /retry_job/<id>/ ("retry") from the
 * page's origin, with the upload token if this browser kept one. Returns
 * the server's message; throws with a sentence to show.
 */
export async function recordingAction(
  action: "finish" | "retry",
  videoId: string,
): Promise<string> {
  const session = { videoId, uploadToken: await keptUploadToken(videoId) };
  try {
    return action === "finish"
      ? await completeSession(location.origin, session, { maxAttempts: 3 })
      : await retryProcessing(location.origin, session);
  } catch (err) {
    if (err instanceof UploadRejectedError && err.status === 401) {
      throw new Error(
        `${err.message} Only the browser that recorded it knows its upload token.`,
      );
    }
    throw err;
  }
}
