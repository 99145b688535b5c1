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
 * The given stored chunks of a recording, one after another, as one stream:
 * read as ranges when the storage can ({@link canOpenChunks}), so the cost
 * follows the bytes and not the number of chunks; else chunk by chunk.
 */
export function openChunkStream(
  ctx: AppContext,
  id: string,
  chunks: ChunkRef[],
): ReadableStream<Uint8Array> {
  const storage = ctx.storage;
  let i = 0;
  let current: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (true) {
        if (!current) {
          if (i >= chunks.length) return controller.close();
          if (canOpenChunks(storage)) {
            current = (await storage.openChunks(id, chunks)).getReader();
            i = chunks.length;
          } else {
            current = (await storage.openChunk(id, chunks[i++])).getReader();
          }
        }
        const { done, value } = await current.read();
        if (!done) return controller.enqueue(value);
        current = undefined;
      }
    },
    async cancel() {
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
