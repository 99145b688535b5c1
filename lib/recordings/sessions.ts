/**
 * Recording sessions: create, complete, queue again, delete and list. Every
 * record write goes through lib/recordings/transitions.ts; chunk bytes live
 * in storage (lib/recordings/chunks.ts writes them).
 */

import type { AppContext } from "../core/context.ts";
import { ConflictError } from "../core/errors.ts";
import { dropJob, nudgeJob, queueJob } from "../jobs/queue.ts";
import {
  chunkPrefix,
  liveEncodeKey,
  type Recording,
  recordingByCreatedPrefix,
  recordingKey,
} from "../kv/keys.ts";
import { getRecordingEntry, unknownRecording } from "./ids.ts";
import { chunkRequestsUnderWay } from "./inflight.ts";
import { takeOpenSlot } from "./open_slots.ts";
import { commitTransition, updateRecording } from "./transitions.ts";
import { newUploadToken } from "./upload_token.ts";
import { titleFromFilename } from "../../common/title.ts";

/** A new session and its upload token (shown once, stored only hashed). */
export interface CreatedRecording {
  recording: Recording;
  uploadToken: string;
}

/** What a new session may start with (the tus creation headers). */
export type NewRecordingFields = Pick<
  Partial<Recording>,
  "uploadLength" | "metadata" | "protocol" | "mimeType" | "partial" | "title"
>;

/**
 * Creates a session in status `recording`, with `fields` in the same
 * commit. Throws a 503 when MAX_OPEN_RECORDINGS sessions are already
 * recording (partial tus uploads are not recordings and take no slot).
 */
export async function createRecording(
  ctx: AppContext,
  fields: NewRecordingFields = {},
): Promise<CreatedRecording> {
  const release = fields.partial ? () => {} : await takeOpenSlot(ctx);
  try {
    const created = await insertRecording(ctx, fields);
    release(true);
    return created;
  } catch (err) {
    release(false);
    throw err;
  }
}

async function insertRecording(
  ctx: AppContext,
  fields: NewRecordingFields,
): Promise<CreatedRecording> {
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
    ...fields,
  };
  // A tus upload is called by its file name unless it was given a title.
  const title = fields.title ?? titleFromFilename(fields.metadata?.filename);
  if (title) rec.title = title;
  else delete rec.title;
  const res = await commitTransition(ctx, { prev: null, next: rec });
  if (!res.ok) throw new Error(`Could not create recording ${id}`);
  return { recording: rec, uploadToken: token };
}

/** How {@link completeRecording} left things. */
export interface CompleteResult {
  recording: Recording;
  /** A sentence on where the job stands. */
  message: string;
  /** Whether this call ended the recording (false: it had ended already, or `onlyIf` declined). */
  started?: boolean;
}

/**
 * Ends a recording: status `processing` at once and a job queued in the same
 * commit, due at once (processing waits for late chunks before it ends,
 * see lib/recordings/closing.ts). `lastChunk` is the index of the client's
 * last chunk, when it said. A recording with no chunk and none under way is
 * closed too, with its job due when the grace is over (it then fails unless
 * a chunk came), and a 409 says so. Calling it again is harmless and says
 * where the job stands.
 */
export async function completeRecording(
  ctx: AppContext,
  id: string,
  options: {
    expired?: boolean;
    lastChunk?: number;
    /**
     * Ends the recording only if this holds for the record as read, judged
     * again on every read (the sweep's idle check: a chunk that arrives
     * meanwhile keeps it open).
     */
    onlyIf?: (rec: Recording) => boolean;
  } = {},
): Promise<CompleteResult> {
  await getRecordingEntry(ctx, id);
  const now = Date.now();
  const grace = ctx.config.completeGraceMs;
  let noData = false;
  let started = false;
  const result = await updateRecording(ctx, id, async (rec) => {
    // Judged again on every read.
    started = false;
    noData = false;
    if (!rec) throw unknownRecording(id);
    if (options.onlyIf && !options.onlyIf(rec)) return null;
    if (rec.status !== "recording" && rec.chunksReceived === 0) {
      throw noDataYet(ctx, rec);
    }
    if (rec.status !== "recording") {
      const hint = options.lastChunk;
      if (
        hint === undefined || rec.status !== "processing" ||
        rec.closedAt === undefined || rec.lastChunk !== undefined
      ) return null;
      return { next: { ...rec, lastChunk: hint, updatedAt: now } };
    }
    noData = !options.expired && rec.chunksReceived === 0 &&
      await chunkRequestsUnderWay(ctx, id) === 0;
    started = true;
    return {
      next: {
        ...rec,
        status: "processing",
        progress: 0,
        stage: noData ? "waiting for data" : "queued",
        updatedAt: now,
        closedAt: options.expired ? undefined : now,
        lastChunk: options.lastChunk,
        ...(options.expired ? { expired: true } : {}),
      },
      extra: (atomic) =>
        queueJob(ctx, atomic, id, now, noData ? now + grace : now),
    };
  });
  if (noData) throw noDataYet(ctx, result.recording!);
  // A hint given after the stop may end the wait for late chunks.
  if (result.changed && !started) await nudgeJob(ctx, id);
  const rec = result.recording!;
  return {
    recording: rec,
    message: started ? "Processing started" : describeJob(rec),
    started,
  };
}

/** The 409 for completing (or retrying) a recording that holds no chunk. */
function noDataYet(ctx: AppContext, rec: Recording): ConflictError {
  const id = rec.id;
  return new ConflictError(
    rec.status === "failed"
      ? `Recording ${id} has no data: ${rec.error ?? "it failed"}`
      : `Recording ${id} has no data yet: it ends as failed unless a chunk arrives at /add_data/${id}/ within COMPLETE_GRACE_MS (${ctx.config.completeGraceMs} ms).`,
  );
}

/** A sentence on where a recording's job stands. */
export function describeJob(rec: Recording): string {
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

/**
 * Queues a failed recording for processing again (a fresh set of attempts).
 * Other states are left as they are and reported.
 */
export async function retryRecording(
  ctx: AppContext,
  id: string,
): Promise<CompleteResult> {
  await getRecordingEntry(ctx, id);
  const now = Date.now();
  const result = await updateRecording(ctx, id, (rec) => {
    if (!rec) throw unknownRecording(id);
    if (rec.status === "recording") {
      throw new ConflictError(
        `Recording ${id} is still recording; complete it with /complete_job/${id}/ instead.`,
      );
    }
    if (rec.chunksReceived === 0) throw noDataYet(ctx, rec);
    if (rec.status !== "failed") return null;
    return {
      next: {
        ...rec,
        status: "processing",
        progress: 0,
        stage: "queued",
        error: undefined,
        finishedAt: undefined,
        updatedAt: now,
      },
      extra: (atomic) => queueJob(ctx, atomic, id, now),
    };
  });
  const rec = result.recording!;
  return {
    recording: rec,
    message: result.changed ? "Processing queued again" : describeJob(rec),
  };
}

/**
 * Deletes a recording: its KV record, indexes and job in one commit (a
 * worker running the job loses its lease and stops; this instance's own
 * worker is stopped at once and waited for), then its chunk entries and its
 * stored bytes. Live subscribers get the record with `deleted: true`; a
 * worker that finishes afterwards publishes nothing and removes what it
 * stored (lib/jobs/worker.ts), and the sweep removes whatever else is left.
 * Resolves whether this call deleted it (false when `onlyIf` declined).
 */
export async function deleteRecording(
  ctx: AppContext,
  id: string,
  options: {
    cause?: "expired";
    /**
     * Deletes only if this holds for the record as read, judged again on
     * every read (sweeps: the recording is still idle, still finished).
     */
    onlyIf?: (rec: Recording) => boolean;
  } = {},
): Promise<boolean> {
  await getRecordingEntry(ctx, id);
  const result = await updateRecording(ctx, id, (rec) => {
    if (!rec) throw unknownRecording(id);
    if (options.onlyIf && !options.onlyIf(rec)) return null;
    return {
      next: null,
      cause: options.cause,
      extra: (atomic) => {
        dropJob(atomic, id);
        // A live encode's claim: its worker's next write fails and it stops.
        atomic.delete(liveEncodeKey(id));
      },
    };
  });
  if (!result.changed) return false;
  await ctx.jobs?.cancel(id);
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
  return true;
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
