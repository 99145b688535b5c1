/**
 * A recording's chunks: accepting one (checks before the body, the commit
 * after it), the chunk ledger, and reading the chunks back in order.
 */

import type { ChunkLedger } from "../../common/chunk_ledger.ts";
import { fromBase64, toBase64 } from "../core/base64.ts";
import { type AppContext, perKv } from "../core/context.ts";
import { SMALL_CHUNKS_ALLOWED } from "../core/config.ts";
import {
  type AppError,
  BadRequestError,
  ConflictError,
  TooLargeError,
  UnsupportedMediaError,
} from "../core/errors.ts";
import { couldBeMediaStart, mediaKind } from "../core/media_sniff.ts";
import {
  type ChunkEntry,
  chunkKey,
  chunkPrefix,
  type Recording,
  recordingKey,
} from "../kv/keys.ts";
import { KvConnectionError } from "../kv/connection_error.ts";
import type { StoredChunk } from "../storage/storage.ts";
import {
  assertVideoId,
  getRecording,
  getRecordingEntry,
  unknownRecording,
} from "./ids.ts";
import { nudgeJob } from "../jobs/queue.ts";
import { chunkTooLate, takesLateChunk } from "./closing.ts";
import { chunkRequestsUnderWay } from "./inflight.ts";
import { observeChunkCommit } from "../ops/instrument.ts";
import {
  commitTransition,
  retryPause,
  updateRecording,
} from "./transitions.ts";
import { noteChunk, noteDuplicate } from "./arrivals.ts";

/** The 400 for a chunk with no bytes. */
export function emptyChunk(): BadRequestError {
  return new BadRequestError(
    "The chunk is empty; send the recording's bytes in the request body.",
  );
}

/**
 * The error for one chunk too many: past MAX_CHUNKS_PER_RECORDING, or one
 * more small chunk than {@link SMALL_CHUNKS_ALLOWED}. Tiny chunks cost as
 * much KV and work as big ones, so a flood of them is refused.
 */
function chunkCap(
  ctx: AppContext,
  rec: Recording,
  small: boolean,
): AppError | null {
  const max = ctx.config.maxChunksPerRecording;
  if (rec.chunksReceived >= max) {
    return new TooLargeError(
      `Recording ${rec.id} already holds ${max} chunks, the most one recording may hold (MAX_CHUNKS_PER_RECORDING); send larger chunks (a longer MediaRecorder timeslice) or complete it.`,
    );
  }
  if (small && (rec.smallChunks ?? 0) >= SMALL_CHUNKS_ALLOWED) {
    return new BadRequestError(
      `Recording ${rec.id} already holds ${SMALL_CHUNKS_ALLOWED} chunks under ${ctx.config.minChunkBytes} bytes (MIN_CHUNK_BYTES); send larger chunks (a longer MediaRecorder timeslice).`,
    );
  }
  return null;
}

function recordingTooLarge(limit: number): TooLargeError {
  return new TooLargeError(
    `The recording has reached the limit of ${limit} bytes (MAX_RECORDING_BYTES); complete it and start a new one.`,
  );
}

/** What {@link commitChunk} reports back. */
export interface AppendResult {
  recording: Recording;
  index: number;
  /** True when this was an exact retry of a chunk already stored. */
  duplicate: boolean;
}

/**
 * The record each recording had after this process's last chunk commit, so
 * the next chunk needs no KV read before its body. It may be stale (another
 * request or process changed the record since): the chunk's commit checks
 * the versionstamp, and on a mismatch reads the record again and decides on
 * that, so a stale entry costs one more round trip, never a wrong answer.
 */
const lastCommitted = perKv(() => new Map<string, Deno.KvEntry<Recording>>());
const COMMITTED_RECORDS_MAX = 4096;

function rememberCommitted(
  kv: Deno.Kv,
  rec: Recording,
  versionstamp: string | null,
): void {
  const map = lastCommitted(kv);
  map.delete(rec.id);
  if (versionstamp === null || rec.status !== "recording") return;
  map.set(rec.id, { key: recordingKey(rec.id), value: rec, versionstamp });
  if (map.size > COMMITTED_RECORDS_MAX) {
    map.delete(map.keys().next().value!);
  }
}

/**
 * Checks that a recording takes chunks (404, 409 or 413 otherwise) before
 * any byte of the body is read: it is recording, or was completed so
 * recently that a chunk arriving at `arrivedAt` is still taken
 * (lib/recordings/closing.ts). With `allowClosed` a closed recording passes
 * too (the commit then answers a retried chunk as a duplicate). With
 * `remembered`, the record this process committed last for the recording
 * stands in for a KV read (the chunk's commit then re-checks it against KV).
 */
export async function assertAcceptsChunks(
  ctx: AppContext,
  id: string,
  options: {
    arrivedAt?: number;
    index?: number;
    allowClosed?: boolean;
    remembered?: boolean;
  } = {},
): Promise<Deno.KvEntry<Recording>> {
  assertVideoId(id);
  const entry = (options.remembered && lastCommitted(ctx.kv).get(id)) ||
    await getRecordingEntry(ctx, id);
  const rec = entry.value;
  const arrivedAt = options.arrivedAt ?? Date.now();
  if (rec.status !== "recording") {
    if (
      options.allowClosed ||
      takesLateChunk(ctx, rec, arrivedAt, options.index)
    ) return entry;
    throw chunkTooLate(ctx, rec, arrivedAt);
  }
  if (rec.bytesReceived >= ctx.config.maxRecordingBytes) {
    throw recordingTooLarge(ctx.config.maxRecordingBytes);
  }
  return entry;
}

/**
 * Reads the recording and, when the index is known, its chunk slot in one
 * round trip (the hot path of every chunk).
 */
async function readForCommit(
  ctx: AppContext,
  id: string,
  index: number | undefined,
): Promise<
  [Deno.KvEntry<Recording>, Deno.KvEntryMaybe<ChunkEntry> | undefined]
> {
  assertVideoId(id);
  if (index === undefined) return [await getRecordingEntry(ctx, id), undefined];
  const [rec, chunk] = await ctx.kv.getMany<[Recording, ChunkEntry]>([
    recordingKey(id),
    chunkKey(id, index),
  ]);
  if (rec.versionstamp === null) throw unknownRecording(id);
  return [rec as Deno.KvEntry<Recording>, chunk];
}

/**
 * Records a chunk already written to storage in one atomic commit (chunk
 * entry plus the session's counters). An exact retry of an indexed chunk is
 * stored once; a different body for a taken index is a 409. The stored
 * bytes are deleted whenever the chunk is not kept.
 */
export function commitChunk(
  ctx: AppContext,
  id: string,
  stored: StoredChunk,
  options: Parameters<typeof storeChunk>[3] = {},
): Promise<AppendResult> {
  return observeChunkCommit(
    ctx,
    id,
    stored.size,
    () => storeChunk(ctx, id, stored, options),
  );
}

/** {@link commitChunk}'s work, inside its span. */
async function storeChunk(
  ctx: AppContext,
  id: string,
  stored: StoredChunk,
  options: {
    index?: number;
    contentType?: string;
    expectOffset?: number;
    /** The record as read before the body: the first commit tries it as is. */
    entry?: Deno.KvEntry<Recording>;
    /** When the request arrived (a completed recording takes it within its grace). */
    arrivedAt?: number;
  } = {},
): Promise<AppendResult> {
  let keep = false;
  try {
    if (stored.size === 0) throw emptyChunk();
    const limit = ctx.config.maxRecordingBytes;
    const yieldUntil = Date.now() + START_YIELD_MS;
    for (let attempt = 0;; attempt++) {
      const [recEntry, known] =
        attempt === 0 && options.entry?.value.status === "recording"
          ? [options.entry, undefined]
          : await readForCommit(ctx, id, options.index);
      const rec = recEntry.value;
      // A record read before the body (or remembered from the last commit)
      // may be stale: judge a failing check again on a fresh read.
      const early = attempt === 0 && recEntry === options.entry;
      const arrivedAt = options.arrivedAt ?? Date.now();
      if (
        rec.status !== "recording" &&
        (options.arrivedAt === undefined ||
          !takesLateChunk(ctx, rec, arrivedAt, options.index))
      ) {
        // The retry of a chunk whose reply was lost (say, the one that
        // completed the session) is still answered as a duplicate.
        if (
          options.index !== undefined && known?.value &&
          await ctx.storage.sameBytes(id, known.value, stored)
        ) return { recording: rec, index: options.index, duplicate: true };
        throw chunkTooLate(ctx, rec, arrivedAt);
      }
      if (rec.bytesReceived + stored.size > limit) {
        if (early) continue;
        throw recordingTooLarge(limit);
      }
      if (
        options.expectOffset !== undefined &&
        rec.bytesReceived !== options.expectOffset
      ) {
        if (early) continue;
        throw new ConflictError(
          `Upload-Offset ${options.expectOffset} does not match the ${rec.bytesReceived} bytes the server holds; resume from ${rec.bytesReceived}.`,
        );
      }
      if (
        rec.uploadLength !== undefined &&
        rec.bytesReceived + stored.size > rec.uploadLength
      ) {
        if (early) continue;
        throw new ConflictError(
          `The chunk would pass the declared Upload-Length of ${rec.uploadLength} bytes.`,
        );
      }
      const index = options.index ?? rec.nextIndex;
      let mediaChecked: boolean | undefined;
      try {
        mediaChecked = rec.mediaChecked || rec.partial ||
          await checkRecordingStart(ctx, id, index, stored.head);
      } catch (err) {
        // A stale record gives an unindexed chunk the index of one that
        // was stored meanwhile: judge it again on a fresh read.
        if (early) continue;
        // Unindexed chunks sent together may arrive out of order (a
        // browser's first blob can be a single byte, sent beside the
        // next): let the others commit first, then judge it again.
        if (
          options.index === undefined && Date.now() < yieldUntil &&
          await chunkRequestsUnderWay(ctx, id) > 1
        ) {
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        throw err;
      }
      // An unindexed chunk whose slot another request took (a stale record)
      // only needs a fresh read; it is never anybody's duplicate.
      if (known?.value) {
        if (await ctx.storage.sameBytes(id, known.value, stored)) {
          await recordDuplicate(ctx, id, index);
          return { recording: rec, index, duplicate: true };
        }
        throw new ConflictError(
          `Chunk ${index} of recording ${id} is already stored with different content; send each index once.`,
        );
      }
      const small = stored.size < ctx.config.minChunkBytes;
      const capped = chunkCap(ctx, rec, small);
      if (capped) {
        if (early) continue;
        throw capped;
      }
      const now = Date.now();
      const chunk: ChunkEntry = {
        index,
        file: stored.file,
        offset: stored.offset,
        size: stored.size,
        explicit: options.index !== undefined,
        at: now,
        head: index < HEAD_CHUNKS ? toBase64(stored.head) : undefined,
      };
      const next: Recording = {
        ...rec,
        bytesReceived: rec.bytesReceived + stored.size,
        chunksReceived: rec.chunksReceived + 1,
        nextIndex: Math.max(rec.nextIndex, index + 1),
        lastChunkAt: now,
        updatedAt: now,
        mimeType: rec.mimeType ?? cleanMime(options.contentType),
        smallChunks: small ? (rec.smallChunks ?? 0) + 1 : rec.smallChunks,
        mediaChecked: (mediaChecked && !rec.partial) || undefined,
        arrivals: noteChunk(rec.arrivals, {
          at: now,
          size: stored.size,
          index,
          nextIndex: rec.nextIndex,
          lastChunkAt: rec.lastChunkAt,
          afterStop: rec.status !== "recording",
        }),
      };
      const res = await commitTransition(ctx, {
        prev: recEntry,
        next,
        checks: [{ key: chunkKey(id, index), versionstamp: null }],
        extra: (atomic) => atomic.set(chunkKey(id, index), chunk),
        grouped: true,
      }).catch((err) => {
        // The connection broke before the answer: the commit may have been
        // applied, so the bytes stay (a retry is then a duplicate).
        if (err instanceof KvConnectionError) keep = true;
        throw err;
      });
      rememberCommitted(ctx.kv, next, res.ok ? res.versionstamp : null);
      if (res.ok) {
        keep = true;
        if (rec.status !== "recording") await nudgeJob(ctx, id);
        return { recording: next, index, duplicate: false };
      }
      await retryPause(attempt, `Recording ${id}`);
    }
  } finally {
    await stored.settle(keep);
  }
}

/**
 * Marks a chunk that arrived again with the bytes already held in the
 * recording's arrival log, while it is recording (the picture of the
 * upload shows retries). Best effort: the chunk's answer does not depend
 * on it.
 */
async function recordDuplicate(
  ctx: AppContext,
  id: string,
  index: number,
): Promise<void> {
  const now = Date.now();
  try {
    await updateRecording(ctx, id, (rec) =>
      rec?.status === "recording"
        ? {
          next: {
            ...rec,
            arrivals: noteDuplicate(rec.arrivals, now, index),
            updatedAt: now,
          },
        }
        : null);
  } catch (err) {
    ctx.log.warn("could not mark a duplicate chunk", {
      recording: id,
      error: (err as Error).message,
    });
  }
}

/** How long an unindexed chunk that does not start the recording waits for others under way. */
const START_YIELD_MS = 5000;

/** Chunks whose first bytes are kept, to judge a recording's start. */
const HEAD_CHUNKS = 8;

/**
 * Judges the first bytes of a recording once enough of them are held (a
 * browser's first chunk can be a single byte). Returns true when they are a
 * WebM/Matroska or MP4 start, false while undecided, and throws a 415 when
 * they are something else.
 */
async function checkRecordingStart(
  ctx: AppContext,
  id: string,
  index: number,
  head: Uint8Array,
): Promise<boolean> {
  if (index >= HEAD_CHUNKS) return false;
  const others = await ctx.kv.getMany<ChunkEntry[]>(
    Array.from({ length: HEAD_CHUNKS }, (_, i) => chunkKey(id, i)),
  );
  const parts: Uint8Array[] = [];
  let length = 0;
  for (let i = 0; i < HEAD_CHUNKS && length < 8; i++) {
    const part = i === index
      ? head
      : others[i].value?.head
      ? fromBase64(others[i].value!.head!)
      : undefined;
    if (!part) break;
    parts.push(part);
    length += part.length;
  }
  const prefix = new Uint8Array(length);
  let offset = 0;
  for (const p of parts) {
    prefix.set(p, offset);
    offset += p.length;
  }
  if (mediaKind(prefix)) return true;
  if (length < 8 && couldBeMediaStart(prefix)) return false;
  throw new UnsupportedMediaError(
    "The recording does not start like a WebM/Matroska or MP4 file (no EBML header or ftyp box); send the recording's own bytes from the start.",
  );
}

function cleanMime(contentType: string | undefined): string | undefined {
  if (!contentType) return undefined;
  const type = contentType.split(";")[0].trim().toLowerCase();
  if (!/^(video|audio)\//.test(type)) return undefined;
  return contentType.slice(0, 100);
}

/** The chunks of a recording in index order. */
export async function listChunks(
  ctx: AppContext,
  id: string,
): Promise<ChunkEntry[]> {
  const chunks: ChunkEntry[] = [];
  for await (
    const entry of ctx.kv.list<ChunkEntry>({ prefix: chunkPrefix(id) })
  ) {
    chunks.push(entry.value);
  }
  return chunks;
}

/** The chunk ledger of a recording. */
export async function chunkLedger(
  ctx: AppContext,
  id: string,
): Promise<ChunkLedger> {
  const rec = await getRecording(ctx, id);
  const received: Array<[number, number]> = [];
  const missing: number[] = [];
  let expected = 0;
  for await (const e of ctx.kv.list<ChunkEntry>({ prefix: chunkPrefix(id) })) {
    const index = e.value.index;
    for (let i = expected; i < index && missing.length < 10_000; i++) {
      missing.push(i);
    }
    const last = received.at(-1);
    if (last && last[1] === index - 1) last[1] = index;
    else received.push([index, index]);
    expected = index + 1;
  }
  return {
    bytes_received: rec.bytesReceived,
    chunks_received: rec.chunksReceived,
    next_index: rec.nextIndex,
    received,
    missing,
  };
}
