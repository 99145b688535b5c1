/**
 * The tus `concatenation` extension, as tusd has it: `Upload-Concat:
 * partial` uploads are stored but are no recordings (never listed, never
 * processed); `Upload-Concat: final;<urls>` makes one recording of finished
 * partials, in order, and completes it. This is what tus-js-client's
 * `parallelUploads` sends. The final recording is built hidden (as a
 * partial) and shown and completed in one commit, so a crash half way
 * leaves nothing but uploads that expire; the partials are removed once it
 * is complete. An object store copies the parts' chunks inside the bucket
 * (CopyObject: chunks are usually below the 5 MiB an UploadPartCopy part
 * needs), so no byte passes through this process.
 */

import type { AppContext } from "../core/context.ts";
import {
  BadRequestError,
  TooLargeError,
  UnsupportedMediaError,
} from "../core/errors.ts";
import { fromBase64 } from "../core/base64.ts";
import { mediaKind } from "../core/media_sniff.ts";
import { queueJob } from "../jobs/queue.ts";
import { type ChunkEntry, chunkKey, type Recording } from "../kv/keys.ts";
import { commitChunk, listChunks } from "../recordings/chunks.ts";
import { getRecording, unknownRecording } from "../recordings/ids.ts";
import {
  type CreatedRecording,
  createRecording,
  deleteRecording,
} from "../recordings/sessions.ts";
import { updateRecording } from "../recordings/transitions.ts";
import { canCopyChunks, type StoredChunk } from "../storage/storage.ts";

/**
 * The partial uploads a final upload names, checked: each exists, is a
 * partial upload and is finished. Throws a 400 naming the first that is not.
 */
export async function finishedPartials(
  ctx: AppContext,
  ids: string[],
): Promise<Recording[]> {
  const parts: Recording[] = [];
  for (const id of ids) {
    const rec = await getRecording(ctx, id).catch(() => null);
    if (!rec) {
      throw new BadRequestError(
        `Upload-Concat names upload ${id}, which does not exist (or expired).`,
      );
    }
    if (!rec.partial || rec.concat) {
      throw new BadRequestError(
        `Upload-Concat names upload ${id}, which is not a partial upload (create parts with Upload-Concat: partial).`,
      );
    }
    if (
      rec.uploadLength === undefined || rec.bytesReceived !== rec.uploadLength
    ) {
      throw new BadRequestError(
        `Upload-Concat names upload ${id}, which is not finished: it holds ${rec.bytesReceived} of ${
          rec.uploadLength ?? "an unknown number of"
        } bytes.`,
      );
    }
    parts.push(rec);
  }
  return parts;
}

/** Throws a 415 unless the first partial starts like a WebM or MP4 file. */
async function assertMediaStart(ctx: AppContext, first: Recording) {
  const head = (await ctx.kv.get<ChunkEntry>(chunkKey(first.id, 0))).value
    ?.head;
  if (!head || !mediaKind(fromBase64(head))) {
    throw new UnsupportedMediaError(
      `Upload ${first.id}, the first part, does not start like a WebM/Matroska or MP4 file; concatenate the parts of a recording in order.`,
    );
  }
}

/** Chunk copies under way ahead of the one being committed. */
const COPIES_AHEAD = 4;

/**
 * A chunk of a partial upload stored again for the final upload `to`:
 * copied inside the storage where it can ({@link canCopyChunks}), else
 * read and written.
 */
async function copyChunk(
  ctx: AppContext,
  source: { from: string; chunk: ChunkEntry },
  to: string,
): Promise<StoredChunk> {
  const { from, chunk } = source;
  if (canCopyChunks(ctx.storage)) {
    const head = chunk.head ? fromBase64(chunk.head) : new Uint8Array(0);
    return await ctx.storage.copyChunk(from, chunk, to, head);
  }
  return await ctx.storage.writeChunk(
    to,
    await ctx.storage.openChunk(from, chunk),
    ctx.config.maxChunkBytes,
    { length: chunk.size },
  );
}

/**
 * Makes one recording of finished partial uploads (already checked by
 * {@link finishedPartials}, and authorized by the caller), in order, and
 * completes it.
 */
export async function concatenateUploads(
  ctx: AppContext,
  parts: Recording[],
  fields: { metadata?: Record<string, string>; urls: string[] },
): Promise<CreatedRecording> {
  const total = parts.reduce((n, p) => n + p.bytesReceived, 0);
  if (total > ctx.config.maxRecordingBytes) {
    throw new TooLargeError(
      `The parts hold ${total} bytes together, over the limit of ${ctx.config.maxRecordingBytes} bytes (MAX_RECORDING_BYTES).`,
    );
  }
  await assertMediaStart(ctx, parts[0]);
  const created = await createRecording(ctx, {
    partial: true,
    protocol: "tus",
    uploadLength: total,
    metadata: fields.metadata,
    mimeType: fields.metadata?.filetype?.slice(0, 100) ?? parts[0].mimeType,
  });
  const id = created.recording.id;
  const sources: { from: string; chunk: ChunkEntry }[] = [];
  for (const part of parts) {
    for (const chunk of await listChunks(ctx, part.id)) {
      sources.push({ from: part.id, chunk });
    }
  }
  // Copies inside the store run a few ahead of the commits, which go in
  // order; chunks written through this process go one at a time (a local
  // store appends them to one file).
  const ahead = canCopyChunks(ctx.storage) ? COPIES_AHEAD : 1;
  const copies: Promise<StoredChunk>[] = [];
  let index = 0;
  try {
    for (; index < sources.length; index++) {
      while (copies.length < Math.min(index + ahead, sources.length)) {
        const copy = copyChunk(ctx, sources[copies.length], id);
        copy.catch(() => {});
        copies.push(copy);
      }
      await commitChunk(ctx, id, await copies[index], { index });
    }
  } catch (err) {
    for (const copy of copies.slice(index + 1)) {
      copy.then((c) => c.settle(false)).catch(() => {});
    }
    throw err;
  }
  const now = Date.now();
  const shown = await updateRecording(ctx, id, (rec) => {
    if (!rec) throw unknownRecording(id);
    return {
      next: {
        ...rec,
        partial: undefined,
        concat: fields.urls,
        mediaChecked: true,
        status: "processing",
        progress: 0,
        stage: "queued",
        closedAt: now,
        updatedAt: now,
      },
      extra: (atomic) => queueJob(ctx, atomic, id, now),
    };
  });
  for (const part of parts) {
    await deleteRecording(ctx, part.id).catch(() => {});
  }
  return { recording: shown.recording!, uploadToken: created.uploadToken };
}
