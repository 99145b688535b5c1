/**
 * A recording's bytes as uploaded: its stored chunks read back in index
 * order as one stream (for processing and for `/media/<id>/source`).
 */

import type { AppContext } from "../core/context.ts";
import { fromBase64 } from "../core/base64.ts";
import { mediaKind } from "../core/media_sniff.ts";
import type { ChunkEntry, Recording } from "../kv/keys.ts";
import { canOpenChunks, type ChunkRef } from "../storage/storage.ts";
import { listChunks } from "./chunks.ts";
import { getRecording } from "./ids.ts";

/**
 * Chunks opened ahead of the one being read when the storage opens them
 * one by one (an object store: one request each), so their round trips
 * overlap. Each holds at most what its connection buffers.
 */
const OPEN_AHEAD = 4;

/**
 * The given stored chunks of a recording, one after another, as one stream:
 * read as ranges when the storage can ({@link canOpenChunks}), so the cost
 * follows the bytes and not the number of chunks; else chunk by chunk, with
 * the next {@link OPEN_AHEAD} chunks opened while one is read. Nothing is
 * opened before the first read.
 */
export function openChunkStream(
  ctx: AppContext,
  id: string,
  chunks: ChunkRef[],
): ReadableStream<Uint8Array> {
  const storage = ctx.storage;
  let next = 0;
  const ahead: Promise<ReadableStream<Uint8Array>>[] = [];
  // Ends the opens still under way when the stream is cancelled or fails.
  const opens = new AbortController();
  const openAhead = () => {
    while (ahead.length < OPEN_AHEAD && next < chunks.length) {
      const opened = storage.openChunk(id, chunks[next++], {
        signal: opens.signal,
      });
      opened.catch(() => {}); // awaited in turn, or dropped on cancel
      ahead.push(opened);
    }
  };
  const dropAhead = async () => {
    opens.abort();
    await Promise.allSettled(
      ahead.splice(0).map((opened) => opened.then((s) => s.cancel())),
    );
  };
  let current: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        while (true) {
          if (!current) {
            if (canOpenChunks(storage)) {
              if (next >= chunks.length) return controller.close();
              next = chunks.length;
              current = (await storage.openChunks(id, chunks)).getReader();
            } else {
              openAhead();
              const opened = ahead.shift();
              if (!opened) return controller.close();
              current = (await opened).getReader();
              openAhead();
            }
          }
          const { done, value } = await current.read();
          if (!done) return controller.enqueue(value);
          current = undefined;
        }
      } catch (err) {
        await dropAhead();
        throw err;
      }
    },
    async cancel() {
      await dropAhead();
      await current?.cancel();
    },
  });
}

/** The recording's bytes as uploaded: every held chunk in index order. */
export async function openSource(
  ctx: AppContext,
  id: string,
): Promise<{ recording: Recording; body: ReadableStream<Uint8Array> }> {
  const recording = await getRecording(ctx, id);
  const chunks = await listChunks(ctx, id);
  return {
    recording,
    body: openChunkStream(ctx, id, chunks),
  };
}

/**
 * The held chunks of a recording read as one file that grows: its length
 * now, how much of it can no longer change, and any byte range of it.
 */
export interface SourceFile {
  recording: Recording;
  /** Bytes held now: every held chunk, in index order. */
  size: number;
  /** How many chunks are held. */
  chunks: number;
  /**
   * The first `settled` bytes can no longer change: the chunks from the
   * first one up to the first missing index (a chunk arriving late for a
   * missing index would move every byte after it), or every byte once the
   * recording is complete or failed. A live viewer appends only these.
   */
  settled: number;
  /** Bytes [start, end] (inclusive) of the source; nothing is read before the first pull. */
  open(start: number, end: number): ReadableStream<Uint8Array>;
}

/**
 * Reads the chunk list of a recording once and answers for the source as
 * it stands at that moment ({@link SourceFile}).
 */
export async function readSourceFile(
  ctx: AppContext,
  id: string,
): Promise<SourceFile> {
  const recording = await getRecording(ctx, id);
  const chunks = await listChunks(ctx, id);
  const size = chunks.reduce((n, c) => n + c.size, 0);
  return {
    recording,
    size,
    chunks: chunks.length,
    settled: settledBytes(recording, chunks, size),
    open: (start, end) =>
      exactly(
        openChunkStream(ctx, id, sliceChunks(chunks, start, end)),
        end - start + 1,
      ),
  };
}

/** See {@link SourceFile.settled}. */
function settledBytes(
  rec: Recording,
  chunks: ChunkEntry[],
  size: number,
): number {
  if (rec.status === "complete" || rec.status === "failed") return size;
  const first = chunks[0];
  if (!first) return 0;
  // A first chunk that is not index 0 counts as the start only when it
  // starts like a recording; else the real start may still come.
  const head = first.head ? fromBase64(first.head) : new Uint8Array();
  if (first.index !== 0 && mediaKind(head) === null) return 0;
  let settled = 0;
  let expected = first.index;
  for (const chunk of chunks) {
    if (chunk.index !== expected) break;
    settled += chunk.size;
    expected++;
  }
  return settled;
}

/** The parts of `chunks` (one after another) that hold bytes [start, end]. */
export function sliceChunks(
  chunks: ChunkRef[],
  start: number,
  end: number,
): ChunkRef[] {
  const parts: ChunkRef[] = [];
  let at = 0;
  for (const c of chunks) {
    const from = Math.max(start, at);
    const to = Math.min(end + 1, at + c.size);
    if (from < to) {
      parts.push({
        file: c.file,
        offset: (c.offset ?? 0) + (from - at),
        size: to - from,
      });
    }
    at += c.size;
    if (at > end) break;
  }
  return parts;
}

/**
 * `stream` cut to exactly `length` bytes (a store may hand back a whole
 * object for a chunk that starts at its offset 0); shorter is an error.
 */
function exactly(
  stream: ReadableStream<Uint8Array>,
  length: number,
): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  let left = length;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (left <= 0) {
        controller.close();
        await reader.cancel().catch(() => {});
        return;
      }
      const { done, value } = await reader.read();
      if (done) {
        throw new Error(
          `the stored chunks ended ${left} bytes before the source's length`,
        );
      }
      const piece = value.length > left ? value.subarray(0, left) : value;
      left -= piece.length;
      controller.enqueue(piece);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
