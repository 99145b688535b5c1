/**
 * Recording sessions: create, append chunks, complete, and read their state.
 * All state lives in Deno KV (see kv_keys.ts); chunk bytes live in storage.
 */

import { type AppContext, perKv } from "../core/context.ts";
import {
  isValidApiKey,
  newUploadToken,
  requestApiKey,
  requestUploadToken,
  requireUploadToken,
} from "../http/access.ts";
import {
  BadRequestError,
  ConflictError,
  NotFoundError,
  TooLargeError,
  UnauthorizedError,
  UnavailableError,
  UnsupportedMediaError,
} from "../core/errors.ts";
import {
  activeJobKey,
  changeHeadKey,
  changeKey,
  type ChunkEntry,
  chunkKey,
  chunkPrefix,
  finishedRecordingKey,
  type Job,
  jobKey,
  jobWakeupKey,
  openRecordingKey,
  openRecordingPrefix,
  type Recording,
  recordingByCreatedKey,
  recordingByCreatedPrefix,
  recordingKey,
} from "../kv/keys.ts";
import type { ChunkRef, StoredChunk } from "../storage/local.ts";
import { commitGrouped } from "../kv/batch.ts";

const UUID_V4 =
  /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const CHANGE_TTL_MS = 60 * 60 * 1000;

let changeCounter = 0;

/** Whether `id` is a lower-case hyphenated version 4 UUID. */
export function isVideoId(id: string): boolean {
  return UUID_V4.test(id);
}

/** Throws a 404 unless `id` is a well-formed id (unknown and malformed look alike). */
export function assertVideoId(id: string): void {
  if (!isVideoId(id)) throw unknownRecording(id);
}

function unknownRecording(id: string): NotFoundError {
  const shown = id.length > 64 ? `${id.slice(0, 64)}...` : id;
  return new NotFoundError(
    `No recording has the id "${shown}"; create one with POST /create/ first.`,
  );
}

/**
 * Adds the change-log entries for a recording change to an atomic operation
 * when other instances share the KV (they follow the log; a lone instance
 * publishes its own changes, so it writes none). Call {@link publishChange}
 * after the commit succeeds.
 */
export function addChange(
  ctx: AppContext,
  atomic: Deno.AtomicOperation,
  rec: Recording,
): void {
  if (!ctx.config.sharedKv) return;
  const seq = `${rec.updatedAt.toString().padStart(15, "0")}-${
    (changeCounter++ % 1e6).toString().padStart(6, "0")
  }-${crypto.randomUUID().slice(0, 8)}`;
  const entry = { id: rec.id, at: rec.updatedAt };
  atomic.set(changeKey(seq), entry, { expireIn: CHANGE_TTL_MS });
  atomic.set(changeHeadKey(), { ...entry, seq });
}

/** Tells this process's live subscribers about a committed change. */
export function publishChange(ctx: AppContext, rec: Recording): void {
  ctx.live.publish(rec);
}

/** A new session and its upload token (shown once, stored only hashed). */
export interface CreatedRecording {
  recording: Recording;
  uploadToken: string;
}

/** Open recordings as counted in KV at `at`, plus the creates since. */
interface OpenTally {
  count: number;
  at: number;
  /** Creates let in whose commit has not finished yet. */
  pending: number;
  /** The count in progress, which creates arriving meanwhile wait for. */
  counting?: Promise<void>;
}

/** How long a count of the open recordings is trusted while far from the cap. */
const OPEN_TALLY_MS = 1000;

const openTallyOf = perKv((): OpenTally => ({
  count: 0,
  at: -Infinity,
  pending: 0,
}));

function countOpenRecordings(ctx: AppContext, tally: OpenTally, max: number) {
  tally.counting ??= (async () => {
    let count = 0;
    for await (
      const _ of ctx.kv.list({ prefix: openRecordingPrefix() }, { limit: max })
    ) count++;
    tally.count = count;
    tally.at = Date.now();
  })().finally(() => tally.counting = undefined);
  return tally.counting;
}

/**
 * Takes one of the MAX_OPEN_RECORDINGS slots, or throws a 503; call the
 * returned function once the create has committed (`true`) or failed. The
 * open recordings are counted in KV at most once a second (creates arriving
 * together wait for one count) and again whenever a create would reach the
 * cap, so a burst of creates does not read the whole index each.
 */
async function takeOpenSlot(
  ctx: AppContext,
): Promise<(committed: boolean) => void> {
  const max = ctx.config.maxOpenRecordings;
  const tally = openTallyOf(ctx.kv);
  if (tally.counting) await tally.counting;
  if (
    Date.now() - tally.at > OPEN_TALLY_MS ||
    tally.count + tally.pending + 1 >= max
  ) {
    await countOpenRecordings(ctx, tally, max);
  }
  if (tally.count + tally.pending >= max) {
    throw new UnavailableError(
      `The server already has ${max} recordings in progress (MAX_OPEN_RECORDINGS); complete one or retry later.`,
    );
  }
  tally.pending++;
  return (committed) => {
    tally.pending--;
    if (committed) tally.count++;
  };
}

/**
 * Creates a session in status `recording`. Throws a 503 when
 * MAX_OPEN_RECORDINGS sessions are already recording.
 */
export async function createRecording(
  ctx: AppContext,
): Promise<CreatedRecording> {
  const release = await takeOpenSlot(ctx);
  try {
    const created = await insertRecording(ctx);
    release(true);
    return created;
  } catch (err) {
    release(false);
    throw err;
  }
}

async function insertRecording(ctx: AppContext): Promise<CreatedRecording> {
  const id = crypto.randomUUID();
  await ctx.storage.createRecording(id);
  const now = Date.now();
  const { token, hash } = newUploadToken();
  const rec: Recording = {
    id,
    status: "recording",
    createdAt: now,
    updatedAt: now,
    bytesReceived: 0,
    chunksReceived: 0,
    nextIndex: 0,
    files: [],
    tokenHash: hash,
  };
  const atomic = ctx.kv.atomic()
    .check({ key: recordingKey(id), versionstamp: null })
    .set(recordingKey(id), rec)
    .set(recordingByCreatedKey(now, id), id)
    .set(openRecordingKey(id), id);
  addChange(ctx, atomic, rec);
  const res = await atomic.commit();
  if (!res.ok) throw new Error(`Could not create recording ${id}`);
  publishChange(ctx, rec);
  return { recording: rec, uploadToken: token };
}

/** Reads a recording with its versionstamp, or throws a 404. */
export async function getRecordingEntry(
  ctx: AppContext,
  id: string,
): Promise<Deno.KvEntry<Recording>> {
  assertVideoId(id);
  const entry = await ctx.kv.get<Recording>(recordingKey(id));
  if (entry.versionstamp === null) throw unknownRecording(id);
  return entry as Deno.KvEntry<Recording>;
}

/** Reads a recording, or throws a 404. */
export async function getRecording(
  ctx: AppContext,
  id: string,
): Promise<Recording> {
  return (await getRecordingEntry(ctx, id)).value;
}

function notRecording(rec: Recording): ConflictError {
  return new ConflictError(
    `Recording ${rec.id} is ${rec.status}, no longer recording; it takes no more chunks.`,
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
 * any byte of the body is read. With `remembered`, the record this process
 * committed last for the recording stands in for a KV read (the chunk's
 * commit then re-checks it against KV).
 */
export async function assertAcceptsChunks(
  ctx: AppContext,
  id: string,
  options: { allowClosed?: boolean; remembered?: boolean } = {},
): Promise<Deno.KvEntry<Recording>> {
  assertVideoId(id);
  const entry = (options.remembered && lastCommitted(ctx.kv).get(id)) ||
    await getRecordingEntry(ctx, id);
  const rec = entry.value;
  if (rec.status !== "recording") {
    if (options.allowClosed) return entry;
    throw notRecording(rec);
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
export async function commitChunk(
  ctx: AppContext,
  id: string,
  stored: StoredChunk,
  options: {
    index?: number;
    contentType?: string;
    expectOffset?: number;
    /** The record as read before the body: the first commit tries it as is. */
    entry?: Deno.KvEntry<Recording>;
  } = {},
): Promise<AppendResult> {
  let keep = false;
  try {
    if (stored.size === 0) throw emptyChunk();
    const limit = ctx.config.maxRecordingBytes;
    for (let attempt = 0;; attempt++) {
      const [recEntry, known] =
        attempt === 0 && options.entry?.value.status === "recording"
          ? [options.entry, undefined]
          : await readForCommit(ctx, id, options.index);
      const rec = recEntry.value;
      // A record read before the body (or remembered from the last commit)
      // may be stale: judge a failing check again on a fresh read.
      const early = attempt === 0 && recEntry === options.entry;
      if (rec.status !== "recording") {
        // The retry of a chunk whose reply was lost (say, the one that
        // completed the session) is still answered as a duplicate.
        if (
          options.index !== undefined && known?.value &&
          await ctx.storage.sameBytes(id, known.value, stored)
        ) return { recording: rec, index: options.index, duplicate: true };
        throw notRecording(rec);
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
      const mediaChecked = rec.mediaChecked ||
        await checkRecordingStart(ctx, id, index, stored.head);
      const existing = known ??
        (attempt > 0 && options.index === undefined
          ? await ctx.kv.get<ChunkEntry>(chunkKey(id, index))
          : undefined);
      if (existing?.value) {
        if (await ctx.storage.sameBytes(id, existing.value, stored)) {
          return { recording: rec, index, duplicate: true };
        }
        if (options.index !== undefined) {
          throw new ConflictError(
            `Chunk ${index} of recording ${id} is already stored with different content; send each index once.`,
          );
        }
        continue;
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
        mediaChecked: mediaChecked || undefined,
      };
      const res = await commitGrouped(ctx.kv, {
        lock: id,
        checks: [recEntry, { key: chunkKey(id, index), versionstamp: null }],
        mutate(atomic) {
          atomic.set(chunkKey(id, index), chunk).set(recordingKey(id), next);
          addChange(ctx, atomic, next);
        },
      });
      rememberCommitted(ctx.kv, next, res.ok ? res.versionstamp : null);
      if (res.ok) {
        keep = true;
        publishChange(ctx, next);
        return { recording: next, index, duplicate: false };
      }
      if (attempt > 200) {
        throw new UnavailableError(
          `Recording ${id} is being changed by many requests at once; retry the chunk.`,
          1,
        );
      }
      await new Promise((r) =>
        setTimeout(r, Math.random() * Math.min(20, attempt + 1))
      );
    }
  } finally {
    await stored.settle(keep);
  }
}

/** Chunks whose first bytes are kept, to judge a recording's start. */
const HEAD_CHUNKS = 8;

function toBase64(bytes: Uint8Array): string {
  return (bytes as unknown as { toBase64(): string }).toBase64();
}

function fromBase64(text: string): Uint8Array {
  return (Uint8Array as unknown as { fromBase64(s: string): Uint8Array })
    .fromBase64(text);
}

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
  if (looksLikeMedia(prefix)) return true;
  if (length < 8 && isMediaPrefix(prefix)) return false;
  throw new UnsupportedMediaError(
    "The recording does not start like a WebM/Matroska or MP4 file (no EBML header or ftyp box); send the recording's own bytes from the start.",
  );
}

/** Whether a start too short to judge could still become a media header. */
function isMediaPrefix(prefix: Uint8Array): boolean {
  const ebml = [0x1a, 0x45, 0xdf, 0xa3];
  const ftyp = [0x66, 0x74, 0x79, 0x70];
  return prefix.every((b, i) => i >= 4 || b === ebml[i]) ||
    prefix.every((b, i) => i < 4 || b === ftyp[i - 4]);
}

/** Whether bytes start like a WebM/Matroska (EBML) or MP4 (ftyp) file. */
export function looksLikeMedia(head: Uint8Array): boolean {
  const ebml = head.length >= 4 && head[0] === 0x1a && head[1] === 0x45 &&
    head[2] === 0xdf && head[3] === 0xa3;
  const ftyp = head.length >= 8 && head[4] === 0x66 && head[5] === 0x74 &&
    head[6] === 0x79 && head[7] === 0x70;
  return ebml || ftyp;
}

function cleanMime(contentType: string | undefined): string | undefined {
  if (!contentType) return undefined;
  const type = contentType.split(";")[0].trim().toLowerCase();
  if (!/^(video|audio)\//.test(type)) return undefined;
  return contentType.slice(0, 100);
}

/** The 400 for a chunk with no bytes. */
export function emptyChunk(): BadRequestError {
  return new BadRequestError(
    "The chunk is empty; send the recording's bytes in the request body.",
  );
}

function recordingTooLarge(limit: number): TooLargeError {
  return new TooLargeError(
    `The recording has reached the limit of ${limit} bytes (MAX_RECORDING_BYTES); complete it and start a new one.`,
  );
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

/** Adds a fresh queued job (and the workers' wake-up) to an atomic operation. */
export function queueJob(
  ctx: AppContext,
  atomic: Deno.AtomicOperation,
  id: string,
  now: number,
): void {
  const job: Job = {
    videoId: id,
    state: "queued",
    attempts: 0,
    maxAttempts: ctx.config.jobMaxAttempts,
    runAfter: now,
    leaseUntil: 0,
    createdAt: now,
    updatedAt: now,
  };
  atomic.set(jobKey(id), job).set(activeJobKey(id), id)
    .set(jobWakeupKey(), now);
}

/** Which chunks the server holds, so a client can resend only what is lacking. */
export interface ChunkLedger {
  bytes_received: number;
  chunks_received: number;
  /** Index the next chunk without an index would get. */
  next_index: number;
  /** Held indexes as inclusive [first, last] ranges. */
  received: Array<[number, number]>;
  /** Indexes below `next_index` that are not held (at most 10,000 listed). */
  missing: number[];
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

/** The given stored chunks of a recording, one after another, as one stream. */
export function openChunkStream(
  ctx: AppContext,
  id: string,
  chunks: ChunkRef[],
): ReadableStream<Uint8Array> {
  let i = 0;
  let current: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (true) {
        if (!current) {
          if (i >= chunks.length) return controller.close();
          current = (await ctx.storage.openChunk(id, chunks[i++])).getReader();
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

/** How {@link completeRecording} left things. */
export interface CompleteResult {
  recording: Recording;
  /** A sentence on where the job stands. */
  message: string;
}

/**
 * Ends a recording: status `processing` at once and a job queued in the same
 * commit. Calling it again is harmless and says where the job stands.
 */
export async function completeRecording(
  ctx: AppContext,
  id: string,
  options: { expired?: boolean } = {},
): Promise<CompleteResult> {
  for (let attempt = 0;; attempt++) {
    const entry = await getRecordingEntry(ctx, id);
    const rec = entry.value;
    if (rec.status !== "recording") {
      return { recording: rec, message: describeJob(rec) };
    }
    if (rec.chunksReceived === 0) {
      throw new ConflictError(
        `Recording ${id} has no data yet; send at least one chunk to /add_data/${id}/ before completing it.`,
      );
    }
    const now = Date.now();
    const next: Recording = {
      ...rec,
      status: "processing",
      progress: 0,
      stage: "queued",
      updatedAt: now,
      ...(options.expired ? { expired: true } : {}),
    };
    const atomic = ctx.kv.atomic()
      .check(entry)
      .set(recordingKey(id), next)
      .delete(openRecordingKey(id));
    queueJob(ctx, atomic, id, now);
    addChange(ctx, atomic, next);
    const res = await atomic.commit();
    if (res.ok) {
      publishChange(ctx, next);
      return { recording: next, message: "Processing started" };
    }
    if (attempt > 50) {
      throw new ConflictError(`Recording ${id} is busy; retry completing it.`);
    }
  }
}

function describeJob(rec: Recording): string {
  switch (rec.status) {
    case "processing":
      return `Processing already started (${
        Math.round((rec.progress ?? 0) * 100)
      }% done)`;
    case "complete":
      return "Processing is already complete";
    case "failed":
      return `Processing failed: ${rec.error ?? "unknown reason"}`;
    default:
      return "Processing started";
  }
}

/** The SPEC.md status object of a recording, with our extensions. */
export function statusBody(rec: Recording): Record<string, unknown> {
  const body: Record<string, unknown> = {
    status: rec.status,
    bytes_received: rec.bytesReceived,
    chunks_received: rec.chunksReceived,
    created_at: new Date(rec.createdAt).toISOString(),
    updated_at: new Date(rec.updatedAt).toISOString(),
  };
  if (rec.status === "processing") body.progress = rec.progress ?? 0;
  if (rec.status === "complete") body.progress = 1;
  if (rec.stage && rec.status === "processing") body.stage = rec.stage;
  if (rec.durationS !== undefined) body.duration_s = rec.durationS;
  if (rec.status === "failed" && rec.error) body.error = rec.error;
  return body;
}

/** The SPEC.md finished-files object with download URLs. */
export function finishedFilesBody(rec: Recording): Record<string, unknown> {
  const ready = rec.status === "complete";
  const files = ready ? rec.files : [];
  return {
    completed_videos: files,
    urls: files.map((name) => `/media/${rec.id}/${name}`),
    poster: ready && rec.poster ? `/media/${rec.id}/${rec.poster}` : null,
  };
}

/** Whether `name` is a finished file (video or poster) of this recording. */
export function isFinishedFile(rec: Recording, name: string): boolean {
  return rec.status === "complete" &&
    (rec.files.includes(name) || rec.poster === name);
}

/** A page of recordings, newest first. */
export interface RecordingPage {
  recordings: Recording[];
  /** Pass back as `cursor` for the next page; null at the end. */
  cursor: string | null;
}

/** Lists recordings newest first, `limit` at a time. */
export async function listRecordings(
  ctx: AppContext,
  options: { limit?: number; cursor?: string } = {},
): Promise<RecordingPage> {
  const limit = Math.min(Math.max(options.limit ?? 50, 1), 500);
  const iter = ctx.kv.list<string>(
    { prefix: recordingByCreatedPrefix() },
    { reverse: true, limit, cursor: options.cursor || undefined },
  );
  const ids: string[] = [];
  for await (const entry of iter) ids.push(entry.value);
  const recordings: Recording[] = [];
  for (let i = 0; i < ids.length; i += 10) {
    const entries = await ctx.kv.getMany<Recording[]>(
      ids.slice(i, i + 10).map((id) => recordingKey(id)),
    );
    for (const e of entries) if (e.value) recordings.push(e.value);
  }
  return {
    recordings,
    cursor: ids.length === limit && iter.cursor ? iter.cursor : null,
  };
}

/**
 * Queues a failed recording for processing again (a fresh set of attempts).
 * Other states are left as they are and reported.
 */
export async function retryRecording(
  ctx: AppContext,
  id: string,
): Promise<CompleteResult> {
  for (let attempt = 0;; attempt++) {
    const entry = await getRecordingEntry(ctx, id);
    const rec = entry.value;
    if (rec.status !== "failed") {
      if (rec.status === "recording") {
        throw new ConflictError(
          `Recording ${id} is still recording; complete it with /complete_job/${id}/ instead.`,
        );
      }
      return { recording: rec, message: describeJob(rec) };
    }
    const now = Date.now();
    const next: Recording = {
      ...rec,
      status: "processing",
      progress: 0,
      stage: "queued",
      error: undefined,
      finishedAt: undefined,
      updatedAt: now,
    };
    const atomic = ctx.kv.atomic()
      .check(entry)
      .set(recordingKey(id), next);
    queueJob(ctx, atomic, id, now);
    if (rec.finishedAt) {
      atomic.delete(finishedRecordingKey(rec.finishedAt, id));
    }
    addChange(ctx, atomic, next);
    if ((await atomic.commit()).ok) {
      publishChange(ctx, next);
      return { recording: next, message: "Processing queued again" };
    }
    if (attempt > 50) {
      throw new ConflictError(`Recording ${id} is busy; retry the request.`);
    }
  }
}

/**
 * Deletes a recording: its KV record, indexes, chunk entries and job, then
 * its stored bytes. Live subscribers get the record with `deleted: true`.
 */
export async function deleteRecording(
  ctx: AppContext,
  id: string,
): Promise<void> {
  let gone: Recording | undefined;
  for (let attempt = 0; !gone; attempt++) {
    const entry = await getRecordingEntry(ctx, id);
    const rec = entry.value;
    const next = { ...rec, updatedAt: Date.now(), deleted: true };
    const atomic = ctx.kv.atomic()
      .check(entry)
      .delete(recordingKey(id))
      .delete(recordingByCreatedKey(rec.createdAt, id))
      .delete(openRecordingKey(id))
      .delete(jobKey(id))
      .delete(activeJobKey(id));
    if (rec.finishedAt) atomic.delete(finishedRecordingKey(rec.finishedAt, id));
    addChange(ctx, atomic, next);
    if ((await atomic.commit()).ok) gone = next;
    else if (attempt > 50) {
      throw new ConflictError(`Recording ${id} is busy; retry deleting it.`);
    }
  }
  let batch = ctx.kv.atomic();
  let n = 0;
  for await (const c of ctx.kv.list({ prefix: chunkPrefix(id) })) {
    batch.delete(c.key);
    if (++n % 500 === 0) {
      await batch.commit();
      batch = ctx.kv.atomic();
    }
  }
  await batch.commit();
  await ctx.storage.removeRecording(id);
  publishChange(ctx, gone);
}

/**
 * With REQUIRE_UPLOAD_TOKEN on, throws a 401 unless the request carries this
 * recording's own upload token (a 404 for an unknown id comes first).
 */
export async function authorizeUpload(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<void> {
  if (!ctx.config.requireUploadToken) return;
  const rec = await getRecording(ctx, id);
  requireUploadToken(ctx.config, req, rec.tokenHash, id);
}

/**
 * With PRIVATE_RECORDINGS on, throws a 401 unless the request carries an API
 * key or this recording's upload token; otherwise the id is the capability.
 */
export async function authorizeView(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<void> {
  if (!ctx.config.privateRecordings) return;
  if (isValidApiKey(ctx.config, requestApiKey(req))) return;
  const rec = await getRecording(ctx, id);
  if (!requestUploadToken(req)) {
    throw new UnauthorizedError(
      `Recording ${id} is private: send an API key or its upload token.`,
    );
  }
  requireUploadToken(
    { ...ctx.config, requireUploadToken: true },
    req,
    rec.tokenHash,
    id,
  );
}
