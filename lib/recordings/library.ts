/**
 * The video library: listing recordings with a search and a status filter
 * (over the indexes lib/recordings/transitions.ts derives), renaming, the
 * picture of an upload, and indexing records written before those indexes
 * existed. Creating and deleting are in sessions.ts.
 */

import type { AppContext } from "../core/context.ts";
import { BadRequestError } from "../core/errors.ts";
import {
  type ChunkEntry,
  chunkPrefix,
  type Recording,
  recordingByCreatedPrefix,
  recordingByStatusPrefix,
  recordingByWordPrefix,
  recordingKey,
  type RecordingStatus,
} from "../kv/keys.ts";
import {
  type LibraryFilter,
  matchesFilter,
  MAX_TITLE_LENGTH,
  queryWords,
  searchTerm,
  STATUSES,
  tidyTitle,
} from "../../common/title.ts";
import type { UploadPicture } from "../../common/upload_picture.ts";
import { describeUpload, replayArrivals } from "./arrivals.ts";
import { getRecording, unknownRecording } from "./ids.ts";
import type { RecordingPage } from "./sessions.ts";
import { INDEX_VERSION, updateRecording } from "./transitions.ts";

/** Index entries one listing reads at most while filtering (the page may come out short; its cursor goes on). */
const SCAN_BUDGET = 2000;
/** Chunks read at most to rebuild the picture of an old upload. */
const REPLAY_CHUNKS_MAX = 50_000;

/** Which page of the library to list. */
export interface LibraryQuery extends LibraryFilter {
  limit: number;
  cursor?: string;
}

/**
 * Lists recordings newest first, `limit` at a time, that match `q` (every
 * word starts a word of the title) and `status`. Reads the title-word
 * index for a search, the status index for a status alone, the creation
 * index otherwise; records are checked against the whole filter.
 */
export async function searchRecordings(
  ctx: AppContext,
  query: LibraryQuery,
): Promise<RecordingPage> {
  const limit = Math.min(Math.max(query.limit, 1), 500);
  const filter: LibraryFilter = { q: query.q, status: query.status };
  const term = searchTerm(queryWords(query.q));
  const prefix = term !== undefined
    ? recordingByWordPrefix(term)
    : query.status
    ? recordingByStatusPrefix(query.status)
    : recordingByCreatedPrefix();
  const iter = ctx.kv.list<string>({ prefix }, {
    reverse: true,
    cursor: query.cursor || undefined,
    batchSize: Math.min(500, limit * 2 + 10),
  });
  const recordings: Recording[] = [];
  let scanned = 0;
  let batch: { id: string; cursor: string }[] = [];
  let cursor: string | null = null;
  const flush = async (): Promise<boolean> => {
    const entries = await ctx.kv.getMany<Recording[]>(
      batch.map((b) => recordingKey(b.id)),
    );
    for (const [i, e] of entries.entries()) {
      if (e.value && !e.value.partial && matchesFilter(e.value, filter)) {
        recordings.push(e.value);
        if (recordings.length === limit) {
          cursor = batch[i].cursor;
          batch = [];
          return true;
        }
      }
    }
    cursor = batch.at(-1)?.cursor ?? cursor;
    batch = [];
    return false;
  };
  let full = false;
  let exhausted = true;
  for await (const entry of iter) {
    batch.push({ id: entry.value, cursor: iter.cursor });
    scanned++;
    if (batch.length === 10 && (full = await flush())) {
      exhausted = false;
      break;
    }
    if (scanned >= SCAN_BUDGET) {
      exhausted = false;
      break;
    }
  }
  if (!full && batch.length > 0) full = await flush();
  if (full) {
    // The page is full: there is more only if the index goes on.
    const more = ctx.kv.list({ prefix }, {
      reverse: true,
      cursor: cursor ?? undefined,
      limit: 1,
    });
    let any = false;
    for await (const _ of more) any = true;
    return { recordings, cursor: any ? cursor : null };
  }
  return { recordings, cursor: exhausted ? null : cursor };
}

/**
 * A title as given to `create` or a rename: tidied; "" or null means none
 * (the recording is called by its creation time). Throws a 400 for a title
 * that is not a string or too long.
 */
export function parseTitle(value: unknown): string | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value !== "string") {
    throw new BadRequestError("The title must be a string.");
  }
  const title = tidyTitle(value);
  if ([...title].length > MAX_TITLE_LENGTH) {
    throw new BadRequestError(
      `The title is ${
        [...title].length
      } characters long; it may have at most ${MAX_TITLE_LENGTH}.`,
    );
  }
  return title || undefined;
}

/**
 * Renames a recording (`undefined` drops its title); its indexes change in
 * the same commit. Throws a 404 for an unknown id.
 */
export async function renameRecording(
  ctx: AppContext,
  id: string,
  title: string | undefined,
): Promise<Recording> {
  await getRecording(ctx, id);
  const result = await updateRecording(ctx, id, (rec) => {
    if (!rec) throw unknownRecording(id);
    if (rec.title === title) return null;
    const next: Recording = { ...rec, updatedAt: Date.now() };
    if (title) next.title = title;
    else delete next.title;
    return { next };
  });
  return result.recording!;
}

/**
 * The picture of a recording's upload at `now`: from its arrival log, or
 * rebuilt from its chunks for a recording written before logs were kept.
 */
export async function loadUploadPicture(
  ctx: AppContext,
  id: string,
  now = Date.now(),
): Promise<UploadPicture> {
  const rec = await getRecording(ctx, id);
  return await uploadPictureOf(ctx, rec, now);
}

/** {@link loadUploadPicture} for a record already read. */
export async function uploadPictureOf(
  ctx: AppContext,
  rec: Recording,
  now = Date.now(),
): Promise<UploadPicture> {
  if (rec.arrivals || rec.chunksReceived === 0) {
    return describeUpload(rec, rec.arrivals, now);
  }
  const chunks: ChunkEntry[] = [];
  for await (
    const e of ctx.kv.list<ChunkEntry>({ prefix: chunkPrefix(rec.id) }, {
      limit: REPLAY_CHUNKS_MAX,
    })
  ) chunks.push(e.value);
  return describeUpload(rec, replayArrivals(rec, chunks), now, true);
}

/**
 * Writes again (through transitions, so their indexes are derived) every
 * listed record that lacks the current library indexes; returns how many.
 * Run by the start-up sweep; a record already indexed costs one read.
 */
export async function indexLibrary(ctx: AppContext): Promise<number> {
  let written = 0;
  let ids: string[] = [];
  const pass = async () => {
    const entries = await ctx.kv.getMany<Recording[]>(
      ids.map((id) => recordingKey(id)),
    );
    for (const e of entries) {
      if (!e.value || e.value.indexes === INDEX_VERSION) continue;
      const result = await updateRecording(
        ctx,
        e.value.id,
        (rec) =>
          rec && rec.indexes !== INDEX_VERSION ? { next: { ...rec } } : null,
      );
      if (result.changed) written++;
    }
    ids = [];
  };
  for await (
    const entry of ctx.kv.list<string>({ prefix: recordingByCreatedPrefix() })
  ) {
    ids.push(entry.value);
    if (ids.length === 10) await pass();
  }
  if (ids.length > 0) await pass();
  return written;
}

/** Whether `value` is a status a library view can be filtered by. */
export function isStatus(value: string): value is RecordingStatus {
  return (STATUSES as readonly string[]).includes(value);
}
