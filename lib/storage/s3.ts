/**
 * Object storage in an S3 bucket (AWS S3, or any S3 API such as Swift's):
 * one object per chunk, `<prefix>recordings/<id>/chunks/<uuid>`, written
 * before the chunk's KV commit and deleted when it is not committed;
 * finished files and posters at `<prefix>recordings/<id>/files/<name>`,
 * durable once published (so nothing is flushed later). A recording is
 * its key prefix: removing it deletes the prefix, listing recordings lists
 * with a delimiter. Scratch space (ffmpeg work folders, chunk spool files)
 * is local (lib/storage/scratch.ts). Every S3 failure becomes a typed error
 * (lib/storage/s3_errors.ts).
 */

import { contentTypeFor } from "../http/http_file.ts";
import { NotFoundError } from "../core/errors.ts";
import type { S3Client } from "./s3_client.ts";
import { s3Call } from "./s3_errors.ts";
import { putChunkBody, putFile } from "./s3_upload.ts";
import { sameStreams } from "./same_bytes.ts";
import type { ScratchSpace } from "./scratch.ts";
import type {
  ChunkCopier,
  ChunkRef,
  FileLinker,
  FileRemover,
  PublishOptions,
  Storage,
  StoredChunk,
  StoredFileInfo,
  WriteChunkOptions,
} from "./storage.ts";

const MIB = 1024 * 1024;

/** Where and how an {@link S3Storage} keeps its objects. */
export interface S3StorageOptions {
  client: S3Client;
  /** Key prefix, "" or ending with "/". */
  prefix: string;
  /** Local scratch space. */
  scratch: ScratchSpace;
  /** Finished files larger than this are multipart uploads (default 64 MiB). */
  multipartAbove?: number;
  /** Part size of those uploads (default 16 MiB, at least 5 MiB). */
  partSize?: number;
}

/** A single-part ETag: the object's MD5, 32 hex digits. */
const MD5_ETAG = /^[0-9a-f]{32}$/;

/** Storage in an S3 bucket; see the module comment. */
export class S3Storage
  implements Storage, FileLinker, ChunkCopier, FileRemover {
  readonly client: S3Client;
  readonly prefix: string;
  readonly scratch: ScratchSpace;
  readonly #multipartAbove: number;
  readonly #partSize: number;

  constructor(options: S3StorageOptions) {
    this.client = options.client;
    this.prefix = options.prefix;
    this.scratch = options.scratch;
    this.#multipartAbove = options.multipartAbove ?? 64 * MIB;
    this.#partSize = Math.max(5 * MIB, options.partSize ?? 16 * MIB);
  }

  #recordingPrefix(videoId: string): string {
    return `${this.prefix}recordings/${videoId}/`;
  }

  #chunkKey(videoId: string, file: string): string {
    return `${this.#recordingPrefix(videoId)}chunks/${file}`;
  }

  #fileKey(videoId: string, name: string): string {
    return `${this.#recordingPrefix(videoId)}files/${name}`;
  }

  /** Objects need no folder: nothing to prepare. */
  createRecording(_videoId: string): Promise<void> {
    return Promise.resolve();
  }

  /**
   * Writes the chunk as its own object (see lib/storage/s3_upload.ts for
   * stream or spool) and resolves once S3 has it; `settle(false)` deletes
   * it. A failure leaves no object behind.
   */
  async writeChunk(
    videoId: string,
    body: ReadableStream<Uint8Array> | Uint8Array,
    maxBytes: number,
    options: WriteChunkOptions = {},
  ): Promise<StoredChunk> {
    const file = crypto.randomUUID();
    const key = this.#chunkKey(videoId, file);
    const facts = await s3Call(
      "storing the chunk",
      () =>
        putChunkBody(this.client, this.scratch, key, body, maxBytes, options),
      true,
    );
    let settled = false;
    return {
      file,
      offset: 0,
      ...facts,
      settle: async (kept: boolean) => {
        if (settled) return;
        settled = true;
        // A failed delete leaves an object that goes with its recording.
        if (!kept && facts.size > 0) {
          await this.client.deleteObject(key).catch(() => {});
        }
      },
    };
  }

  /**
   * Size, then ETag: two single-part ETags are the objects' MD5s (as on
   * Swift and on S3 without SSE-KMS or SSE-C, the only ways tapedeck
   * writes), so equal ETags mean the same bytes and different ones
   * different bytes. Any other ETag has the bytes compared.
   */
  async sameBytes(videoId: string, a: ChunkRef, b: ChunkRef): Promise<boolean> {
    if (a.size !== b.size) return false;
    const [x, y] = await s3Call(
      "comparing chunks",
      () =>
        Promise.all([
          this.client.headObject(this.#chunkKey(videoId, a.file)),
          this.client.headObject(this.#chunkKey(videoId, b.file)),
        ]),
    );
    if (!x || !y) return false;
    if (MD5_ETAG.test(x.etag) && MD5_ETAG.test(y.etag)) {
      return x.etag === y.etag;
    }
    return await sameStreams(
      await this.openChunk(videoId, a),
      await this.openChunk(videoId, b),
    );
  }

  async openChunk(
    videoId: string,
    chunk: ChunkRef,
    options: { signal?: AbortSignal } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const offset = chunk.offset ?? 0;
    const range = offset > 0
      ? { start: offset, end: offset + chunk.size - 1 }
      : {};
    const got = await s3Call(
      "reading a chunk",
      () =>
        this.client.getObject(this.#chunkKey(videoId, chunk.file), {
          ...range,
          signal: options.signal,
        }),
    );
    return got.body;
  }

  /** CopyObject into a new chunk object of `toId`. */
  async copyChunk(
    fromId: string,
    chunk: ChunkRef,
    toId: string,
    head: Uint8Array,
  ): Promise<StoredChunk> {
    if ((chunk.offset ?? 0) !== 0) {
      return await this.writeChunk(
        toId,
        await this.openChunk(fromId, chunk),
        chunk.size,
        { length: chunk.size },
      );
    }
    const file = crypto.randomUUID();
    const key = this.#chunkKey(toId, file);
    await s3Call(
      "copying a chunk",
      () => this.client.copyObject(key, this.#chunkKey(fromId, chunk.file)),
      true,
    );
    let settled = false;
    return {
      file,
      offset: 0,
      size: chunk.size,
      head: head.slice(0, 16),
      settle: async (kept: boolean) => {
        if (settled) return;
        settled = true;
        if (!kept) await this.client.deleteObject(key).catch(() => {});
      },
    };
  }

  /** Uploads the file (multipart past `multipartAbove`); durable at once. */
  async publishFile(
    videoId: string,
    name: string,
    localPath: string,
    _options: PublishOptions = {},
  ): Promise<StoredFileInfo> {
    const key = this.#fileKey(videoId, name);
    await s3Call(
      `storing the finished file ${name}`,
      () =>
        putFile(this.client, key, localPath, {
          contentType: contentTypeFor(name),
          multipartAbove: this.#multipartAbove,
          partSize: this.#partSize,
        }),
      true,
    );
    const info = await this.statFile(videoId, name);
    if (!info) {
      throw new NotFoundError(
        `The finished file ${name} of recording ${videoId} is missing right after it was stored (was the recording deleted?).`,
      );
    }
    return info;
  }

  async statFile(
    videoId: string,
    name: string,
  ): Promise<StoredFileInfo | null> {
    const head = await s3Call(
      `looking up the finished file ${name}`,
      () => this.client.headObject(this.#fileKey(videoId, name)),
    );
    return head
      ? { size: head.size, mtime: head.lastModified, etag: `"${head.etag}"` }
      : null;
  }

  async openFile(
    videoId: string,
    name: string,
    start: number,
    end: number,
  ): Promise<ReadableStream<Uint8Array>> {
    const got = await s3Call(
      `reading the finished file ${name}`,
      () => this.client.getObject(this.#fileKey(videoId, name), { start, end }),
    );
    return got.body;
  }

  /** A presigned URL of the finished file (made locally, no request). */
  fileUrl(
    videoId: string,
    name: string,
    method: "GET" | "HEAD",
    expiresInS: number,
  ): Promise<string> {
    return this.client.presign(
      this.#fileKey(videoId, name),
      expiresInS,
      method,
    );
  }

  async removeFile(videoId: string, name: string): Promise<void> {
    await s3Call(
      `removing the file ${name}`,
      () => this.client.deleteObject(this.#fileKey(videoId, name)),
      true,
    );
  }

  async removeRecording(videoId: string): Promise<void> {
    await s3Call(
      `removing recording ${videoId}`,
      () => this.client.deletePrefix(this.#recordingPrefix(videoId)),
    );
  }

  async listRecordingIds(): Promise<string[]> {
    const root = `${this.prefix}recordings/`;
    const ids: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3Call(
        "listing recordings",
        () =>
          this.client.list(root, { delimiter: "/", continuationToken: token }),
      );
      for (const p of page.prefixes ?? []) {
        ids.push(p.slice(root.length, -1));
      }
      token = page.continuationToken;
    } while (token);
    return ids;
  }

  makeWorkDir(videoId: string): Promise<string> {
    return this.scratch.makeWorkDir(videoId);
  }

  removeWorkDir(path: string): Promise<void> {
    return this.scratch.removeWorkDir(path);
  }

  removeAllWorkDirs(): Promise<void> {
    return this.scratch.removeAll();
  }

  close(): void {
    this.client.close();
  }
}
