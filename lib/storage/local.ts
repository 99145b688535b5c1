/**
 * Local-disk storage under `<dataDir>/recordings/<id>/`: every chunk of a
 * recording is appended to one data file (one fdatasync per chunk), finished
 * files are renamed into place.
 *
 * Over 400 lines: the append path (one open data file per recording, the
 * writer that holds it, cut back on a drop) and the reads that rely on that
 * layout are one idea and read best together.
 */

import { createHash } from "node:crypto";
// `fs.promises`, not "node:fs/promises": Deno 2.5 (Deno Deploy) lacks
// that module's named `statfs` export, so the import would fail at load.
import { promises as fsp } from "node:fs";
import { join } from "node:path";
import {
  BodyAbortedError,
  fromSystemError,
  NotFoundError,
  StorageFullError,
} from "../core/errors.ts";
import { bodyStalled, PieceReader } from "./body_reader.ts";
import { openLocalRange } from "./local_file.ts";
import { openLocalRanges } from "./local_ranges.ts";
import { DropBehind } from "./page_cache.ts";
import { sameStreams } from "./same_bytes.ts";
import { ScratchSpace } from "./scratch.ts";
import {
  type ChunkRangeReader,
  type ChunkRef,
  chunkTooLarge,
  type ChunkTrimmer,
  coalesceChunks,
  type DeferredSync,
  type FileRemover,
  type LocalChunkPaths,
  type PublishOptions,
  type Storage,
  type StoredChunk,
  type StoredFileInfo,
  type WriteChunkOptions,
} from "./storage.ts";

async function syncDir(path: string): Promise<void> {
  const dir = await Deno.open(path, { read: true });
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await file.write(bytes.subarray(offset));
  }
}

/** Removed recordings remembered, so no file of theirs is kept open. */
const REMOVED_REMEMBERED = 4096;

/** The typed error for a chunk of a recording removed while it was stored. */
function recordingRemoved(videoId: string): NotFoundError {
  return new NotFoundError(
    `Recording ${videoId} was deleted while the chunk was being stored; nothing was stored.`,
  );
}

/** A missing file as the typed error; other errors as they are. */
function missing(err: unknown, what: string): unknown {
  return err instanceof Deno.errors.NotFound
    ? new NotFoundError(`The stored ${what} is missing.`)
    : err;
}

/** The file every chunk of a recording is appended to. */
const DATA_FILE = "data";

/** Data files kept open between chunks, and for how long unused. */
const OPEN_DATA_FILES_MAX = 128;
const OPEN_DATA_FILE_IDLE_MS = 30_000;

interface OpenDataFile {
  file: Deno.FsFile;
  usedAt: number;
}

/**
 * Local-disk storage under `<dataDir>/recordings/<id>/`, with every
 * optional read and flush capability of lib/storage/storage.ts; its scratch
 * space is `<dataDir>/work` (the same file system, so publishing a finished
 * file is a rename).
 */
export class LocalStorage
  implements
    Storage,
    ChunkRangeReader,
    LocalChunkPaths,
    ChunkTrimmer,
    DeferredSync,
    FileRemover {
  readonly root: string;
  /** Work folders, under the same root. */
  readonly scratch: ScratchSpace;
  readonly minFreeBytes: number;
  /** Lets go of flushed chunk bytes past the ingest cache budget. */
  readonly dropBehind: DropBehind;
  /** Recordings whose data file a writer is appending to (until it settles). */
  #appending = new Set<string>();
  /** Recordings removed lately: a writer that finishes after it closes its file. */
  #removed = new Set<string>();
  /**
   * Data files kept open between chunks (least recently used first), so a
   * chunk costs no open, seek or close: the next chunk of a recording comes
   * within 2 s. Closed when unused for {@link OPEN_DATA_FILE_IDLE_MS}, when
   * more than {@link OPEN_DATA_FILES_MAX} are open, and on {@link close}.
   */
  #openData = new Map<string, OpenDataFile>();

  /**
   * `ingestCacheBytes`: how much of the most recently flushed chunk data is
   * left in the page cache (see lib/page_cache.ts).
   */
  constructor(
    dataDir: string,
    minFreeBytes = 0,
    ingestCacheBytes = Number.MAX_SAFE_INTEGER,
  ) {
    this.root = dataDir;
    this.scratch = new ScratchSpace(dataDir);
    this.minFreeBytes = minFreeBytes;
    this.dropBehind = new DropBehind(ingestCacheBytes);
  }

  #recordingDir(videoId: string): string {
    return join(this.root, "recordings", videoId);
  }

  #chunkDir(videoId: string): string {
    return join(this.#recordingDir(videoId), "chunks");
  }

  #filesDir(videoId: string): string {
    return join(this.#recordingDir(videoId), "files");
  }

  async #checkFreeSpace(incoming: number): Promise<void> {
    if (this.minFreeBytes <= 0) return;
    const s = await fsp.statfs(this.root);
    const free = Number(s.bavail) * Number(s.bsize);
    if (free - incoming < this.minFreeBytes) {
      throw new StorageFullError();
    }
  }

  #dataPath(videoId: string): string {
    return join(this.#chunkDir(videoId), DATA_FILE);
  }

  async createRecording(videoId: string): Promise<void> {
    await Deno.mkdir(this.#chunkDir(videoId), { recursive: true });
    await Deno.mkdir(this.#filesDir(videoId), { recursive: true });
    const data = await Deno.open(this.#dataPath(videoId), {
      write: true,
      create: true,
    });
    data.close();
    // Together: the file system flushes them in one journal commit.
    await Promise.all([
      syncDir(this.#chunkDir(videoId)),
      syncDir(this.#recordingDir(videoId)),
      syncDir(join(this.root, "recordings")),
    ]);
  }

  /**
   * Appends the chunk to the recording's data file (one file per recording,
   * so a chunk costs one fdatasync and no new directory entry). The writer
   * that appends holds the data file until it settles (commits or drops the
   * chunk, which is then cut off again); a chunk that arrives meanwhile (a
   * retry, a second client, a stalled first one) goes to a file of its own
   * instead of waiting.
   */
  async writeChunk(
    videoId: string,
    body: ReadableStream<Uint8Array> | Uint8Array,
    maxBytes: number,
    options: WriteChunkOptions = {},
  ): Promise<StoredChunk> {
    await this.#checkFreeSpace(body instanceof Uint8Array ? body.length : 0);
    const append = !this.#appending.has(videoId);
    if (append) this.#appending.add(videoId);
    const dir = this.#chunkDir(videoId);
    const file = append ? DATA_FILE : `${crypto.randomUUID()}.chunk`;
    const path = join(dir, file);
    const hash = options.digest ? createHash(options.digest) : undefined;
    const head = new Uint8Array(16);
    let size = 0;
    let handle: Deno.FsFile | undefined;
    let offset = -1;
    const release = () => {
      if (append) this.#appending.delete(videoId);
    };
    try {
      if (append) {
        handle = await this.#takeDataFile(videoId, path);
        // The end as the file system has it: another instance sharing the
        // storage may have appended since this one last did.
        offset = handle.seekSync(0, Deno.SeekMode.End);
      } else {
        handle = await Deno.open(path, { write: true, createNew: true });
        offset = 0;
      }
      if (body instanceof Uint8Array) {
        if (body.length > maxBytes) throw chunkTooLarge(maxBytes);
        hash?.update(body);
        head.set(body.subarray(0, 16));
        size = body.length;
        await writeAll(handle, body);
      } else {
        const reader = new PieceReader(body);
        let stalled = false;
        let lastRead = Date.now();
        let watchdog: ReturnType<typeof setInterval> | undefined;
        if (options.idleMs) {
          const idleMs = options.idleMs;
          watchdog = setInterval(() => {
            if (Date.now() - lastRead < idleMs) return;
            stalled = true;
            reader.cancel();
          }, Math.max(50, Math.floor(idleMs / 4)));
        }
        try {
          while (true) {
            const value = await reader
              .next(() => lastRead = Date.now(), maxBytes - size)
              .catch((err) => {
                throw stalled ? bodyStalled(options.idleMs!) : err;
              });
            if (stalled) throw bodyStalled(options.idleMs!);
            if (!value) break;
            size += value.length;
            if (size > maxBytes) throw chunkTooLarge(maxBytes);
            const at = size - value.length;
            if (at < 16) head.set(value.subarray(0, 16 - at), at);
            hash?.update(value);
            await writeAll(handle, value);
          }
        } catch (err) {
          reader.cancel();
          throw err;
        } finally {
          clearInterval(watchdog);
          reader.release();
        }
      }
      if (options.length !== undefined && size !== options.length) {
        throw new BodyAbortedError();
      }
      if (append) {
        await handle.syncData();
        this.#returnDataFile(videoId, handle);
      } else {
        await handle.sync();
        handle.close();
      }
      handle = undefined;
      if (!append) await syncDir(dir);
      this.dropBehind.flushed(path, offset, size);
      let settled = false;
      return {
        file,
        offset,
        size,
        head: head.subarray(0, Math.min(16, size)),
        digest: hash?.digest("base64"),
        settle: async (kept: boolean) => {
          if (settled) return;
          settled = true;
          try {
            if (!kept && append) await Deno.truncate(path, offset);
            if (!kept && !append) await Deno.remove(path);
          } catch {
            // the start-up sweep trims what is left
          } finally {
            release();
          }
        },
      };
    } catch (err) {
      if (handle && append && offset >= 0) {
        await handle.truncate(offset).catch(() => {});
      }
      handle?.close();
      if (!append) await Deno.remove(path).catch(() => {});
      release();
      if (err instanceof Deno.errors.NotFound) throw recordingRemoved(videoId);
      throw fromSystemError(err);
    }
  }

  /** The recording's data file, open for writing (kept open or opened now). */
  async #takeDataFile(videoId: string, path: string): Promise<Deno.FsFile> {
    const now = Date.now();
    for (const [id, open] of this.#openData) {
      if (
        now - open.usedAt < OPEN_DATA_FILE_IDLE_MS &&
        this.#openData.size < OPEN_DATA_FILES_MAX
      ) break;
      if (id === videoId) continue;
      this.#openData.delete(id);
      open.file.close();
    }
    const kept = this.#openData.get(videoId);
    if (kept) {
      this.#openData.delete(videoId);
      return kept.file;
    }
    return await Deno.open(path, { write: true, create: true });
  }

  /**
   * Keeps a data file open for the recording's next chunk (last in the LRU
   * order: only its one appender took it out).
   */
  #returnDataFile(videoId: string, file: Deno.FsFile): void {
    if (this.#removed.has(videoId)) file.close();
    else this.#openData.set(videoId, { file, usedAt: Date.now() });
  }

  #closeDataFile(videoId: string): void {
    const open = this.#openData.get(videoId);
    this.#openData.delete(videoId);
    open?.file.close();
  }

  close(): void {
    for (const open of this.#openData.values()) open.file.close();
    this.#openData.clear();
  }

  async sameBytes(videoId: string, a: ChunkRef, b: ChunkRef): Promise<boolean> {
    if (a.size !== b.size) return false;
    return await sameStreams(
      await this.openChunk(videoId, a),
      await this.openChunk(videoId, b),
    );
  }

  openChunk(
    videoId: string,
    chunk: ChunkRef,
  ): Promise<ReadableStream<Uint8Array>> {
    const start = chunk.offset ?? 0;
    return openLocalRange(
      join(this.#chunkDir(videoId), chunk.file),
      start,
      start + chunk.size - 1,
    ).catch((err) => {
      throw missing(err, `chunk ${chunk.file} of recording ${videoId}`);
    });
  }

  /**
   * Reads the chunks as one stream: chunks that continue each other in one
   * file are one range, and each file is opened once per run of ranges in
   * it (see lib/storage/local_ranges.ts).
   */
  openChunks(
    videoId: string,
    chunks: ChunkRef[],
  ): Promise<ReadableStream<Uint8Array>> {
    const dir = this.#chunkDir(videoId);
    return Promise.resolve(openLocalRanges(
      coalesceChunks(chunks).map((c) => ({
        path: join(dir, c.file),
        offset: c.offset ?? 0,
        size: c.size,
      })),
    ));
  }

  async trimChunks(videoId: string, kept: ChunkRef[]): Promise<number> {
    {
      let freed = 0;
      const keepFiles = new Set(kept.map((c) => c.file));
      let end = 0;
      for (const c of kept) {
        if (c.file === DATA_FILE) end = Math.max(end, (c.offset ?? 0) + c.size);
      }
      try {
        for await (const entry of Deno.readDir(this.#chunkDir(videoId))) {
          if (!entry.isFile) continue;
          const path = join(this.#chunkDir(videoId), entry.name);
          const size = (await Deno.stat(path)).size;
          if (entry.name === DATA_FILE) {
            if (size > end) {
              await Deno.truncate(path, end);
              freed += size - end;
            }
          } else if (!keepFiles.has(entry.name)) {
            await Deno.remove(path);
            freed += size;
          }
        }
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      return freed;
    }
  }

  makeWorkDir(videoId: string): Promise<string> {
    return this.scratch.makeWorkDir(videoId);
  }

  removeWorkDir(path: string): Promise<void> {
    return this.scratch.removeWorkDir(path);
  }

  async publishFile(
    videoId: string,
    name: string,
    localPath: string,
    options: PublishOptions = {},
  ): Promise<StoredFileInfo> {
    const sync = options.sync ?? true;
    const dir = this.#filesDir(videoId);
    await Deno.mkdir(dir, { recursive: true });
    if (sync) await this.#syncFile(localPath);
    const dest = join(dir, name);
    try {
      await Deno.rename(localPath, dest);
    } catch {
      // Across file systems a rename fails: copy under a temporary name, then rename.
      const tmp = `${dest}.tmp-${crypto.randomUUID()}`;
      await Deno.copyFile(localPath, tmp);
      if (sync) await this.#syncFile(tmp);
      await Deno.rename(tmp, dest);
    }
    if (sync) await syncDir(dir);
    return (await this.statFile(videoId, name))!;
  }

  async #syncFile(path: string): Promise<void> {
    const file = await Deno.open(path, { read: true, write: true });
    try {
      await file.sync();
    } finally {
      file.close();
    }
  }

  async removeFile(videoId: string, name: string): Promise<void> {
    await Deno.remove(join(this.#filesDir(videoId), name)).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }

  async syncFiles(videoId: string, names: string[]): Promise<void> {
    const dir = this.#filesDir(videoId);
    await Promise.all(names.map((name) => this.#syncFile(join(dir, name))));
    await syncDir(dir);
  }

  async localPathOf(
    videoId: string,
    chunks: ChunkRef[],
  ): Promise<{ path: string; end: number } | null> {
    let end = 0;
    for (const c of chunks) {
      if (c.file !== DATA_FILE || (c.offset ?? 0) !== end) return null;
      end += c.size;
    }
    if (chunks.length === 0) return null;
    const path = this.#dataPath(videoId);
    try {
      if ((await Deno.stat(path)).size < end) return null;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
    return { path, end };
  }

  async statFile(
    videoId: string,
    name: string,
  ): Promise<StoredFileInfo | null> {
    try {
      const st = await Deno.stat(join(this.#filesDir(videoId), name));
      if (!st.isFile) return null;
      const mtime = st.mtime ?? new Date(0);
      return {
        size: st.size,
        mtime,
        etag: `"${st.size.toString(16)}-${mtime.getTime().toString(16)}"`,
      };
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
  }

  openFile(
    videoId: string,
    name: string,
    start: number,
    end: number,
  ): Promise<ReadableStream<Uint8Array>> {
    return openLocalRange(join(this.#filesDir(videoId), name), start, end)
      .catch((err) => {
        throw missing(err, `file ${name} of recording ${videoId}`);
      });
  }

  async listRecordingIds(): Promise<string[]> {
    const ids: string[] = [];
    try {
      for await (const e of Deno.readDir(join(this.root, "recordings"))) {
        if (e.isDirectory) ids.push(e.name);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return ids;
  }

  removeAllWorkDirs(): Promise<void> {
    return this.scratch.removeAll();
  }

  async removeRecording(videoId: string): Promise<void> {
    this.#removed.add(videoId);
    if (this.#removed.size > REMOVED_REMEMBERED) {
      this.#removed.delete(this.#removed.values().next().value!);
    }
    this.#closeDataFile(videoId);
    await Deno.remove(this.#recordingDir(videoId), { recursive: true }).catch(
      (err) => {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      },
    );
  }
}
