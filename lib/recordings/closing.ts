/**
 * The end of a recording as clients really end it: MediaRecorder's last
 * `dataavailable` and the call to complete_job leave together, so a chunk
 * may arrive (or still be arriving) after the recording was completed. A
 * chunk whose request arrived before complete_job, or up to
 * COMPLETE_GRACE_MS after it, is taken; processing may start at once but
 * publishes `complete` only once no such chunk can come any more (and runs
 * again if one came). A client that says which chunk is its last (or a tus
 * upload that reached its Upload-Length) needs no grace.
 */

import type { AppContext } from "../core/context.ts";
import { ConflictError } from "../core/errors.ts";
import type { Recording } from "../kv/keys.ts";
import { chunkRequestsUnderWay } from "./inflight.ts";

/**
 * Extra wait after the grace before processing ends when the KV is shared,
 * so that the KV marker of a request that arrived just inside the grace (on
 * another instance) is visible.
 */
export const MARKER_MARGIN_MS = 250;

/** How often the end of a grace is looked at again while chunks are under way. */
const POLL_MS = 50;

/**
 * Whether no chunk can join the recording any more: the client said which
 * chunk is its last and every chunk up to it is held, or a tus upload holds
 * its whole Upload-Length.
 */
export function isSealed(rec: Recording): boolean {
  if (
    rec.uploadLength !== undefined && rec.bytesReceived === rec.uploadLength
  ) return true;
  return rec.lastChunk !== undefined &&
    rec.chunksReceived === rec.lastChunk + 1 &&
    rec.nextIndex === rec.lastChunk + 1;
}

/**
 * Whether a completed recording still takes a chunk whose request arrived at
 * `arrivedAt` (with `index`, when the client gave one).
 */
export function takesLateChunk(
  ctx: AppContext,
  rec: Recording,
  arrivedAt: number,
  index?: number,
): boolean {
  if (rec.status !== "processing" || rec.closedAt === undefined) return false;
  if (isSealed(rec)) return false;
  if (rec.lastChunk !== undefined && (index ?? rec.nextIndex) > rec.lastChunk) {
    return false;
  }
  return arrivedAt <= rec.closedAt + ctx.config.completeGraceMs;
}

/** The 409 for a chunk that a completed recording no longer takes. */
export function chunkTooLate(
  ctx: AppContext,
  rec: Recording,
  arrivedAt: number,
): ConflictError {
  if (rec.closedAt === undefined || rec.status === "recording") {
    return new ConflictError(
      `Recording ${rec.id} is ${rec.status}, no longer recording; it takes no more chunks.`,
    );
  }
  if (isSealed(rec) || rec.lastChunk !== undefined) {
    return new ConflictError(
      `Recording ${rec.id} is ${rec.status}, no longer recording: its last chunk${
        rec.lastChunk !== undefined ? ` (index ${rec.lastChunk})` : ""
      } was declared, so it takes no more chunks.`,
    );
  }
  return new ConflictError(
    `Recording ${rec.id} is ${rec.status}, no longer recording: chunks are taken up to COMPLETE_GRACE_MS (${ctx.config.completeGraceMs} ms) after complete_job, and this one came ${
      arrivedAt - rec.closedAt
    } ms after it.`,
  );
}

/** What processing read: the recording's bytes and chunks at the time. */
export interface ProcessedInput {
  bytes: number;
  chunks: number;
}

/** Where the end of a completed recording stands for a run that read `processed`. */
export type EndState =
  | { kind: "settled" }
  | { kind: "changed" }
  | { kind: "gone" }
  | { kind: "wait"; until: number };

/**
 * Whether files made of `processed` can be listed for `rec`: `settled` when
 * no chunk can join it any more (it is sealed, was not completed by its
 * client, or its grace, plus {@link MARKER_MARGIN_MS} with a shared KV, is
 * over and no chunk request is under way); `changed` when it holds other
 * chunks than were processed; `wait` until when to look again.
 */
export async function endState(
  ctx: AppContext,
  rec: Recording | null,
  processed: ProcessedInput,
): Promise<EndState> {
  if (!rec || rec.status !== "processing") return { kind: "gone" };
  if (
    rec.bytesReceived !== processed.bytes ||
    rec.chunksReceived !== processed.chunks
  ) return { kind: "changed" };
  if (rec.closedAt === undefined || isSealed(rec)) return { kind: "settled" };
  const margin = ctx.config.sharedKv ? MARKER_MARGIN_MS : 0;
  const until = rec.closedAt + ctx.config.completeGraceMs + margin;
  if (until > Date.now()) return { kind: "wait", until };
  if (await chunkRequestsUnderWay(ctx, rec.id) > 0) {
    return { kind: "wait", until: Date.now() + POLL_MS };
  }
  return { kind: "settled" };
}
