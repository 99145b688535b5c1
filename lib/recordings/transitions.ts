/**
 * Every write of a recording record goes through this module. A transition
 * takes the record as read (with its versionstamp), the record to write (or
 * null to delete it) and the caller's extra writes; it derives the index
 * changes from the old and new record, adds the change-log entry when other
 * instances share the KV and the webhook deliveries of a state change
 * (lib/webhooks/events.ts), commits with the versionstamp check, and then
 * publishes the change to this process's live sockets and logs it. Retries
 * follow one policy ({@link RETRY}).
 */

import type { AppContext } from "../core/context.ts";
import { UnavailableError } from "../core/errors.ts";
import { commitGrouped } from "../kv/batch.ts";
import {
  type ChangeEntry,
  changeHeadKey,
  changeKey,
  finishedRecordingKey,
  openRecordingKey,
  partialUploadKey,
  type Recording,
  recordingByCreatedKey,
  recordingByStatusKey,
  recordingByWordKey,
  recordingKey,
} from "../kv/keys.ts";
import { indexTerms } from "../../common/title.ts";
import { addWebhookDeliveries } from "../webhooks/events.ts";

/** Change-log entries live this long (other instances read them within seconds). */
const CHANGE_TTL_MS = 60 * 60 * 1000;

/** The one retry policy for a recording write that lost a versionstamp race. */
export const RETRY = {
  /** Attempts before giving up with a 503. */
  attempts: 100,
  /** Jittered wait before attempt `n` (ms). */
  delayMs: (attempt: number) => Math.random() * Math.min(25, 2 * attempt + 1),
};

let changeCounter = 0;

/**
 * Version of the indexes derived from `status` and `title` (the library's
 * filter and search). Every record written carries it in `indexes`; a
 * record without it was written before those indexes existed and has none
 * (the start-up sweep writes it again, see lib/recordings/maintenance.ts).
 */
export const INDEX_VERSION = 1;

/** Whether a record shows in the list of recordings (partial tus uploads do not). */
function isListed(rec: Recording): boolean {
  return !rec.partial;
}

/** The `["recording_finished", ...]` time of a record, when it has one. */
function finishedAt(rec: Recording | null): number | undefined {
  if (!rec || (rec.status !== "complete" && rec.status !== "failed")) {
    return undefined;
  }
  return rec.finishedAt;
}

/**
 * Adds the record write (or delete), its index changes and the change-log
 * entry to `atomic`. `prev` is the record as read (null when creating),
 * `next` the record to write (null when deleting).
 */
function addRecordWrites(
  ctx: AppContext,
  atomic: Deno.AtomicOperation,
  prev: Recording | null,
  next: Recording | null,
): void {
  const id = (next ?? prev)!.id;
  if (next) atomic.set(recordingKey(id), next);
  else atomic.delete(recordingKey(id));

  const listedBefore = prev !== null && isListed(prev);
  const listedAfter = next !== null && isListed(next);
  if (listedBefore && (!listedAfter || prev.createdAt !== next!.createdAt)) {
    atomic.delete(recordingByCreatedKey(prev.createdAt, id));
  }
  if (listedAfter && (!listedBefore || prev!.createdAt !== next.createdAt)) {
    atomic.set(recordingByCreatedKey(next.createdAt, id), id);
  }

  const openBefore = prev?.status === "recording" && isListed(prev);
  const openAfter = next?.status === "recording" && isListed(next);
  if (openBefore && !openAfter) atomic.delete(openRecordingKey(id));
  if (openAfter && !openBefore) atomic.set(openRecordingKey(id), id);

  const partialBefore = prev !== null && !!prev.partial;
  const partialAfter = next !== null && !!next.partial;
  if (partialBefore && !partialAfter) atomic.delete(partialUploadKey(id));
  if (partialAfter && !partialBefore) atomic.set(partialUploadKey(id), id);

  addLibraryIndexWrites(atomic, prev, next);

  const doneBefore = finishedAt(prev);
  const doneAfter = finishedAt(next);
  if (doneBefore !== undefined && doneBefore !== doneAfter) {
    atomic.delete(finishedRecordingKey(doneBefore, id));
  }
  if (doneAfter !== undefined && doneAfter !== doneBefore) {
    atomic.set(finishedRecordingKey(doneAfter, id), id);
  }

  if (ctx.config.sharedKv) {
    // A deletion carries the record as deleted: other instances cannot
    // read it any more.
    const at = next ? next.updatedAt : Date.now();
    const seq = `${at.toString().padStart(15, "0")}-${
      (changeCounter++ % 1e6).toString().padStart(6, "0")
    }-${crypto.randomUUID().slice(0, 8)}`;
    const entry: ChangeEntry = next
      ? { id, at }
      : { id, at, deleted: deletedView(prev!, at) };
    atomic.set(changeKey(seq), entry, { expireIn: CHANGE_TTL_MS });
    atomic.set(changeHeadKey(), { ...entry, seq });
  }
}

/**
 * The library's indexes of a listed record: by status, and by the
 * beginnings of its title's words, both ordered by creation time. Only
 * what changed between `prev` and `next` is written.
 */
function addLibraryIndexWrites(
  atomic: Deno.AtomicOperation,
  prev: Recording | null,
  next: Recording | null,
): void {
  const before = prev && isListed(prev) && prev.indexes === INDEX_VERSION
    ? prev
    : null;
  const after = next && isListed(next) ? next : null;
  const id = (next ?? prev)!.id;
  const moved = !!before && !!after && before.createdAt !== after.createdAt;
  if (
    before &&
    (!after || moved || before.status !== after.status)
  ) atomic.delete(recordingByStatusKey(before.status, before.createdAt, id));
  if (
    after &&
    (!before || moved || before.status !== after.status)
  ) atomic.set(recordingByStatusKey(after.status, after.createdAt, id), id);
  if (before?.title === after?.title && !moved && !!before === !!after) return;
  const termsBefore = indexTerms(before?.title);
  const termsAfter = indexTerms(after?.title);
  for (const term of termsBefore) {
    if (!termsAfter.has(term) || moved) {
      atomic.delete(recordingByWordKey(term, before!.createdAt, id));
    }
  }
  for (const term of termsAfter) {
    if (!termsBefore.has(term) || moved) {
      atomic.set(recordingByWordKey(term, after!.createdAt, id), id);
    }
  }
}

/** The name of the state change from `prev` to `next`, if it is one worth a log line. */
function eventOf(
  prev: Recording | null,
  next: Recording | null,
): string | null {
  if (!prev) {
    return next?.partial ? "upload.partial_created" : "recording.created";
  }
  if (!next) return "recording.deleted";
  if (prev.status === "recording" && next.status === "processing") {
    return next.expired ? "recording.expired" : "recording.completed";
  }
  if (next.status === "failed" && prev.status !== "failed") {
    return "recording.failed";
  }
  if (next.status === "complete" && prev.status !== "complete") {
    return "recording.complete";
  }
  if (
    next.status === "processing" &&
    (prev.status === "complete" || prev.status === "failed")
  ) return "recording.requeued";
  if (
    next.status === "processing" && next.runStartedAt !== undefined &&
    next.runStartedAt !== prev.runStartedAt
  ) return "recording.processing";
  return null;
}

/** What live sockets are shown of a deleted record. */
function deletedView(prev: Recording, at: number): Recording {
  return { ...prev, updatedAt: at, deleted: true };
}

/** Tells this process's live sockets and the log about a committed change. */
function published(
  ctx: AppContext,
  prev: Recording | null,
  next: Recording | null,
  cause?: string,
): void {
  const shown = next ?? deletedView(prev!, Date.now());
  if (!shown.partial) ctx.live.publish(shown);
  const event = !next && cause ? `recording.${cause}` : eventOf(prev, next);
  if (!event) return;
  ctx.log.info(event, {
    event,
    recording: shown.id,
    status: next ? next.status : "deleted",
    reason: next?.status === "failed" ? next.error : undefined,
    bytes: shown.bytesReceived,
    chunks: shown.chunksReceived,
  });
}

/** A transition to commit: the record as read and the record to write. */
export interface Transition {
  /** The record as read, with its versionstamp; null to create a new one. */
  prev: Deno.KvEntry<Recording> | null;
  /** The record to write; null to delete it. */
  next: Recording | null;
  /** Other writes of the same commit (chunk entries, jobs, ...). */
  extra?: (atomic: Deno.AtomicOperation) => void;
  /** Other checks of the same commit. */
  checks?: Deno.AtomicCheck[];
  /**
   * Share the commit with other writes made at the same time (the chunk
   * hot path, see lib/kv/batch.ts); writes of one recording never share.
   */
  grouped?: boolean;
  /** Why a record is deleted, when not by a client ("expired"): named in the log. */
  cause?: string;
}

/** What a committed transition returns: the KV result. */
export type TransitionResult = Deno.KvCommitResult | Deno.KvCommitError;

/**
 * Commits one transition: the versionstamp check, the record and its
 * derived index and change-log writes, and the caller's extra writes, in one
 * atomic commit. On success the change is published and logged; `ok: false`
 * means a check failed and nothing was written.
 */
export async function commitTransition(
  ctx: AppContext,
  transition: Transition,
): Promise<TransitionResult> {
  const prev = transition.prev;
  // The caller's record carries the index mark too, so a record it keeps
  // (lib/recordings/chunks.ts) stands for what KV holds.
  if (transition.next) transition.next.indexes = INDEX_VERSION;
  const next = transition.next
    ? {
      ...transition.next,
      updatedAt: Math.max(
        transition.next.updatedAt,
        prev?.value.updatedAt ?? 0,
      ),
    }
    : null;
  const id = (next ?? prev?.value)!.id;
  const checks: Deno.AtomicCheck[] = [
    prev ?? { key: recordingKey(id), versionstamp: null },
    ...(transition.checks ?? []),
  ];
  const mutate = (atomic: Deno.AtomicOperation) => {
    addRecordWrites(ctx, atomic, prev?.value ?? null, next);
    // Webhook deliveries of the state change, in its own commit.
    addWebhookDeliveries(
      ctx,
      atomic,
      eventOf(prev?.value ?? null, next),
      prev?.value ?? null,
      next,
      transition.cause,
    );
    transition.extra?.(atomic);
  };
  let res: TransitionResult;
  if (transition.grouped) {
    res = await commitGrouped(ctx.kv, { lock: id, checks, mutate });
  } else {
    const atomic = ctx.kv.atomic().check(...checks);
    mutate(atomic);
    res = await atomic.commit();
  }
  if (res.ok) published(ctx, prev?.value ?? null, next, transition.cause);
  return res;
}

/** One step of {@link updateRecording}: the record to write and its extra writes. */
export interface Step {
  next: Recording | null;
  /** See {@link Transition.cause}. */
  cause?: string;
  extra?: (atomic: Deno.AtomicOperation) => void;
  checks?: Deno.AtomicCheck[];
}

/** What {@link updateRecording} did. */
export interface UpdateResult {
  /** The record as it now is (null when deleted or absent). */
  recording: Recording | null;
  /** Whether a write was committed (false when `change` declined). */
  changed: boolean;
  versionstamp?: string;
}

/** Waits before retry `attempt`, or throws a 503 once the policy gives up. */
export async function retryPause(attempt: number, what: string): Promise<void> {
  if (attempt + 1 >= RETRY.attempts) {
    throw new UnavailableError(
      `${what} is being changed by many requests at once; retry the request.`,
      1,
    );
  }
  await new Promise((r) => setTimeout(r, RETRY.delayMs(attempt)));
}

/**
 * Reads recording `id` and commits the step `change` makes of it, again on a
 * fresh read whenever another write got there first (the retry policy). The
 * change returns null to leave the record as it is, and is called with null
 * when the record does not exist.
 */
export async function updateRecording(
  ctx: AppContext,
  id: string,
  change: (
    rec: Recording | null,
    entry: Deno.KvEntryMaybe<Recording>,
  ) => Step | null | Promise<Step | null>,
): Promise<UpdateResult> {
  for (let attempt = 0;; attempt++) {
    const entry = await ctx.kv.get<Recording>(recordingKey(id));
    const step = await change(entry.value, entry);
    if (!step) return { recording: entry.value, changed: false };
    if (!entry.value && !step.next) {
      return { recording: null, changed: false };
    }
    const res = await commitTransition(ctx, {
      prev: entry.value ? entry as Deno.KvEntry<Recording> : null,
      next: step.next,
      extra: step.extra,
      checks: step.checks,
      cause: step.cause,
    });
    if (res.ok) {
      return {
        recording: step.next,
        changed: true,
        versionstamp: res.versionstamp,
      };
    }
    await retryPause(attempt, `Recording ${id}`);
  }
}
