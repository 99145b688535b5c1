/**
 * A recording's bytes as uploaded: its stored chunks read back in index
 * order as one stream (for processing and for `/media/<id>/source`).
 */

import type { AppContext } from "../core/context.ts";
import type { Recording } from "../kv/keys.ts";
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
  const openAhead = () => {
    while (ahead.length < OPEN_AHEAD && next < chunks.length) {
      const opened = storage.openChunk(id, chunks[next++]);
      opened.catch(() => {}); // awaited in turn, or dropped on cancel
      ahead.push(opened);
    }
  };
  const dropAhead = () => {
    for (const opened of ahead.splice(0)) {
      opened.then((s) => s.cancel()).catch(() => {});
    }
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
        dropAhead();
        throw err;
      }
    },
    async cancel() {
      dropAhead();
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
