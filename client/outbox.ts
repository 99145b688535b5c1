/// <reference lib="dom" />
/**
 * The outbox: the browser's copy of every chunk the server has not
 * acknowledged yet, in IndexedDB. client/resume_queue.ts resumes the
 * uploads it holds after a reload, a crash of the tab or a lost connection.
 *
 * Schema (database {@link DB_NAME}, version {@link DB_VERSION}):
 * - `recordings`, key `videoId`: a {@link KeptRecording} per recording whose
 *   upload is not finished (its chunks not all acknowledged, or
 *   complete_job not yet answered);
 * - `chunks`, key `[videoId, index]`: `{ videoId, index, size, blob }`, one
 *   per chunk not yet acknowledged by a 200 from /add_data.
 *
 * A recording being recorded or resumed holds its Web Lock
 * (client/recording_lock.ts) for as long as a page works on it.
 *
 * Only for browsers: nothing here touches IndexedDB until called.
 */

import type { ChunkSink } from "./chunk_uploader.ts";
import type { ResumeSource } from "./resume_upload.ts";

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
  /** The server it is uploaded to (absent: the page's own origin). */
  server?: string;
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

/** What the recorder and the resume queue use of a {@link ChunkStore}. */
export type KeptStore = Pick<
  ChunkStore,
  | "saveRecording"
  | "updateRecording"
  | "getRecording"
  | "listRecordings"
  | "deleteRecording"
  | "sink"
  | "source"
  | "close"
>;
