/**
 * Where the bytes live. The service talks to {@link Storage} only; today the
 * one implementation keeps files under the data folder, and an object store
 * can implement the same interface later (chunks are write-once objects,
 * finished files are published whole).
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
}

/** The narrow storage interface used by recordings and processing. */
export interface Storage {
  /** Prepares room for a new recording. */
  createRecording(videoId: string): Promise<void>;
  /**
   * Streams one chunk body to durable storage. Resolves only once the bytes
   * are flushed. Throws a TooLargeError past `maxBytes` (without
   * reading the rest) and a StorageFullError when the disk is full; in
   * both cases, and when the body fails, nothing of it is kept.
   */
  writeChunk(
    videoId: string,
    body: ReadableStream<Uint8Array> | Uint8Array,
    maxBytes: number,
    options?: WriteChunkOptions,
  ): Promise<StoredChunk>;
  /** Whether two stored chunks hold the same bytes (to tell a retry from a clash). */
  sameBytes(videoId: string, a: ChunkRef, b: ChunkRef): Promise<boolean>;
  /** Opens one stored chunk's bytes. */
  openChunk(
    videoId: string,
    chunk: ChunkRef,
  ): Promise<ReadableStream<Uint8Array>>;
  /**
   * Frees what was written for a recording but is not among `kept` (the
   * committed chunks): the leftovers of a crash between a write and its
   * commit. Returns how many bytes were freed. Call it when no write is in
   * flight (at start-up).
   */
  trimChunks(videoId: string, kept: ChunkRef[]): Promise<number>;
  /** Concatenates chunks, in the given order, into a local file. */
  assemble(
    videoId: string,
    chunks: ChunkRef[],
    destPath: string,
  ): Promise<number>;
  /** A fresh local scratch folder for processing this recording. */
  makeWorkDir(videoId: string): Promise<string>;
  /** Removes a scratch folder made by {@link makeWorkDir}. */
  removeWorkDir(path: string): Promise<void>;
  /**
   * Moves a finished local file into place atomically under `name`, flushed
   * to disk first. With `sync: false` it is only renamed into place: the
   * caller must call {@link syncFiles} before relying on it surviving a
   * machine crash.
   */
  publishFile(
    videoId: string,
    name: string,
    localPath: string,
    options?: { sync?: boolean },
  ): Promise<StoredFileInfo>;
  /**
   * Flushes finished files (published with `sync: false`) and their folder
   * to disk. Throws when a file is missing or cannot be flushed.
   */
  syncFiles(videoId: string, names: string[]): Promise<void>;
  /**
   * The local file that holds exactly `chunks`, one after another in the
   * given order from offset 0, so a tool can read it in place: its path, and
   * `end`, the offset where the last chunk ends (the file may be longer).
   * Null when the chunks are not laid out that way (or the storage is not
   * local).
   */
  localPathOf(
    videoId: string,
    chunks: ChunkRef[],
  ): Promise<{ path: string; end: number } | null>;
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
  /** Removes every scratch folder (after a crash). */
  removeAllWorkDirs(): Promise<void>;
  /** Releases what the storage holds open between calls (file handles). */
  close(): void;
}

/**
 * An optional read capability of a {@link Storage} (tested with
 * {@link canOpenChunks}, as tusd tests its DataStore for extensions): many
 * chunks read back as one stream at a cost linear in their bytes, not in
 * their number, with chunks that continue each other in one stored file
 * read as one range ({@link coalesceChunks}). Without it, callers open the
 * chunks one by one ({@link Storage.openChunk}).
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
