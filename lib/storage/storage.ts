/**
 * Where the bytes live. The service talks to {@link Storage} and its
 * optional capabilities only. Two backends: local disk (lib/storage/local.ts)
 * and an S3 bucket (lib/storage/s3.ts); lib/storage/open.ts picks one from
 * the config.
 */

import { TooLargeError } from "../core/errors.ts";

/** Facts about a stored file. */
export interface StoredFileInfo {
  /** Length of the file in bytes. */
  size: number;
  /** Last modification time. */
  mtime: Date;
  /** A strong ETag including quotes, e.g. `"1234-17f3a"`. */
  etag: string;
}

/** Where a stored chunk's bytes are: a storage name, and a byte range in it. */
export interface ChunkRef {
  /** Storage name holding the chunk. */
  file: string;
  /** Where the chunk starts in `file` (0 when it has the file to itself). */
  offset?: number;
  size: number;
}

/** The result of storing one chunk. */
export interface StoredChunk extends ChunkRef {
  /**
   * Must be called once the chunk is committed (`true`) or dropped
   * (`false`: its bytes are freed). Until then the writer may hold storage
   * resources of the recording.
   */
  settle(kept: boolean): Promise<void>;
  /** The first bytes of the chunk (up to 16), to recognise a media header. */
  head: Uint8Array;
  /** Base64 digest of the bytes with the algorithm asked for, if any. */
  digest?: string;
}

/** Options of {@link Storage.writeChunk}. */
export interface WriteChunkOptions {
  /** Also compute this digest (e.g. "sha1" for a tus Upload-Checksum). */
  digest?: "sha1" | "sha256" | "md5";
  /** Fail with a 408 when the body sends nothing for this long. */
  idleMs?: number;
  /**
   * The body's length when the request says it (Content-Length): a backend
   * that needs the length up front can then send the body on as it
   * arrives. A body that ends short of it fails; nothing is kept.
   */
  length?: number;
}

/** Options of {@link Storage.publishFile}. */
export interface PublishOptions {
  /**
   * `false`: a storage with {@link DeferredSync} may skip the flush (the
   * caller then calls `syncFiles`); any other storage publishes durably
   * whatever this says. Default `true`.
   */
  sync?: boolean;
}

/**
 * The narrow storage interface used by recordings and processing: what
 * every backend implements. Abilities only some backends have are the
 * optional capabilities below, each with a type guard (as tusd tests its
 * DataStore for extensions); every caller falls back without them.
 */
export interface Storage {
  /** Prepares room for a new recording. */
  createRecording(videoId: string): Promise<void>;
  /**
   * Streams one chunk body to durable storage. Resolves only once the bytes
   * are durable. Throws a TooLargeError past `maxBytes` (without
   * reading the rest), a StorageFullError when there is no room and an
   * UnavailableError when the backend cannot be reached; in every case,
   * and when the body fails, nothing of it is kept.
   */
  writeChunk(
    videoId: string,
    body: ReadableStream<Uint8Array> | Uint8Array,
    maxBytes: number,
    options?: WriteChunkOptions,
  ): Promise<StoredChunk>;
  /** Whether two stored chunks hold the same bytes (to tell a retry from a clash). */
  sameBytes(videoId: string, a: ChunkRef, b: ChunkRef): Promise<boolean>;
  /**
   * Opens one stored chunk's bytes; aborting `options.signal` gives up an
   * open still under way (a request to an object store).
   */
  openChunk(
    videoId: string,
    chunk: ChunkRef,
    options?: { signal?: AbortSignal },
  ): Promise<ReadableStream<Uint8Array>>;
  /**
   * Stores a finished local file under `name` (replacing one of that name)
   * as one atomic step, durably unless {@link PublishOptions.sync} says
   * otherwise to a storage with {@link DeferredSync}. The local file may
   * be moved or left in place.
   */
  publishFile(
    videoId: string,
    name: string,
    localPath: string,
    options?: PublishOptions,
  ): Promise<StoredFileInfo>;
  /** Facts about a finished file, or null when there is none. */
  statFile(videoId: string, name: string): Promise<StoredFileInfo | null>;
  /** Opens bytes [start, end] of a finished file. */
  openFile(
    videoId: string,
    name: string,
    start: number,
    end: number,
  ): Promise<ReadableStream<Uint8Array>>;
  /** Removes everything held for a recording. */
  removeRecording(videoId: string): Promise<void>;
  /** Ids of every recording that has anything stored. */
  listRecordingIds(): Promise<string[]>;
  /**
   * A fresh local scratch folder for processing this recording (local on
   * every backend: lib/storage/scratch.ts).
   */
  makeWorkDir(videoId: string): Promise<string>;
  /** Removes a scratch folder made by {@link makeWorkDir}. */
  removeWorkDir(path: string): Promise<void>;
  /** Removes every scratch folder and file (after a crash, when idle). */
  removeAllWorkDirs(): Promise<void>;
  /** Releases what the storage holds open between calls. */
  close(): void;
}

/**
 * Optional: many chunks read back as one stream at a cost linear in their
 * bytes, not in their number, with chunks that continue each other in one
 * stored file read as one range ({@link coalesceChunks}). Without it,
 * callers open the chunks one by one ({@link Storage.openChunk}).
 */
export interface ChunkRangeReader {
  /** The given chunks' bytes, one after another in the given order. */
  openChunks(
    videoId: string,
    chunks: ChunkRef[],
  ): Promise<ReadableStream<Uint8Array>>;
}

/** Whether `storage` reads many chunks at once ({@link ChunkRangeReader}). */
export function canOpenChunks(
  storage: Storage,
): storage is Storage & ChunkRangeReader {
  return typeof (storage as Partial<ChunkRangeReader>).openChunks ===
    "function";
}

/**
 * Optional: chunks laid out in a local file that a tool (ffmpeg) can read
 * in place. Without it, the chunks are streamed to the tool.
 */
export interface LocalChunkPaths {
  /**
   * The local file that holds exactly `chunks`, one after another in the
   * given order from offset 0: its path, and `end`, the offset where the
   * last chunk ends (the file may be longer). Null when the chunks are not
   * laid out that way.
   */
  localPathOf(
    videoId: string,
    chunks: ChunkRef[],
  ): Promise<{ path: string; end: number } | null>;
}

/** Whether `storage` can name a local file of chunks ({@link LocalChunkPaths}). */
export function hasLocalPaths(
  storage: Storage,
): storage is Storage & LocalChunkPaths {
  return typeof (storage as Partial<LocalChunkPaths>).localPathOf ===
    "function";
}

/**
 * Optional: bytes a crash left written but never committed can be freed
 * at start-up (an object store keeps such leftovers until the recording is
 * removed).
 */
export interface ChunkTrimmer {
  /**
   * Frees what was written for a recording but is not among `kept` (the
   * committed chunks). Returns how many bytes were freed. Call it when no
   * write is in flight (at start-up).
   */
  trimChunks(videoId: string, kept: ChunkRef[]): Promise<number>;
}

/** Whether `storage` trims uncommitted chunk bytes ({@link ChunkTrimmer}). */
export function canTrimChunks(
  storage: Storage,
): storage is Storage & ChunkTrimmer {
  return typeof (storage as Partial<ChunkTrimmer>).trimChunks === "function";
}

/**
 * Optional: finished files published with `sync: false` are flushed later
 * (off the path to "complete"). A storage without it makes a published
 * file durable at once, and nothing needs flushing.
 */
export interface DeferredSync {
  /**
   * Flushes finished files published with `sync: false` (and their
   * folder). Throws when a file is missing or cannot be flushed.
   */
  syncFiles(videoId: string, names: string[]): Promise<void>;
}

/** Whether `storage` defers the flush of published files ({@link DeferredSync}). */
export function canDeferSync(
  storage: Storage,
): storage is Storage & DeferredSync {
  return typeof (storage as Partial<DeferredSync>).syncFiles === "function";
}

/**
 * Optional: a URL from which a client fetches a finished file directly
 * from the store (a presigned URL), so `/media` can redirect to it.
 */
export interface FileLinker {
  /** A URL that answers `method` for the file for `expiresInS` seconds. */
  fileUrl(
    videoId: string,
    name: string,
    method: "GET" | "HEAD",
    expiresInS: number,
  ): Promise<string>;
}

/** Whether `storage` hands out direct URLs of finished files ({@link FileLinker}). */
export function canLinkFiles(
  storage: Storage,
): storage is Storage & FileLinker {
  return typeof (storage as Partial<FileLinker>).fileUrl === "function";
}

/**
 * Optional: one stored file of a recording removed on its own (the live
 * encode's HLS files once the recording is finished). Without it, such
 * files stay until the recording is removed.
 */
export interface FileRemover {
  /** Removes file `name` of recording `videoId`; nothing when there is none. */
  removeFile(videoId: string, name: string): Promise<void>;
}

/** Whether `storage` removes single files ({@link FileRemover}). */
export function canRemoveFiles(
  storage: Storage,
): storage is Storage & FileRemover {
  return typeof (storage as Partial<FileRemover>).removeFile === "function";
}

/**
 * Optional: a stored chunk copied to another recording inside the store
 * (no bytes through this process). Without it, callers read the chunk and
 * write it again.
 */
export interface ChunkCopier {
  /**
   * A new chunk of `toId` with the bytes of `fromId`'s `chunk`, settled
   * like a written one. `head` is the chunk's first bytes as the caller
   * knows them (the ledger keeps them for the first chunks); the copy does
   * not read them.
   */
  copyChunk(
    fromId: string,
    chunk: ChunkRef,
    toId: string,
    head: Uint8Array,
  ): Promise<StoredChunk>;
}

/** Whether `storage` copies chunks inside the store ({@link ChunkCopier}). */
export function canCopyChunks(
  storage: Storage,
): storage is Storage & ChunkCopier {
  return typeof (storage as Partial<ChunkCopier>).copyChunk === "function";
}

/**
 * The same bytes as `chunks`, in the same order, with every run of chunks
 * that lie one right after another in the same stored file merged into one
 * range.
 */
export function coalesceChunks(chunks: ChunkRef[]): ChunkRef[] {
  const ranges: ChunkRef[] = [];
  let last: ChunkRef | undefined;
  for (const c of chunks) {
    const offset = c.offset ?? 0;
    if (
      last && last.file === c.file && (last.offset ?? 0) + last.size === offset
    ) {
      last.size += c.size;
      continue;
    }
    last = { file: c.file, offset, size: c.size };
    ranges.push(last);
  }
  return ranges;
}

/** The 413 for a chunk over MAX_CHUNK_BYTES. */
export function chunkTooLarge(maxBytes: number): TooLargeError {
  return new TooLargeError(
    `The chunk is larger than the limit of ${maxBytes} bytes (MAX_CHUNK_BYTES); send smaller chunks.`,
  );
}
