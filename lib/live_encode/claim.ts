/**
 * The claim of a recording's live encode (["live_encode", id],
 * {@link LiveEncodeClaim}) and the record's view of it (`Recording.live`),
 * always written together through lib/recordings/transitions.ts when the
 * view changes. The claim is a lease like a job's: the worker that holds it
 * renews `leaseUntil` with each write, checked against the versionstamp it
 * last wrote; a worker that finds the lease lapsed (its holder died) or the
 * encode behind, or a job that will not wait for it, ends it `abandoned`,
 * and the holder's next write then fails and it stops.
 */

import type { AppContext } from "../core/context.ts";
import {
  type LiveEncodeClaim,
  liveEncodeKey,
  type LiveEncodeState,
} from "../kv/keys.ts";
import { updateRecording } from "../recordings/transitions.ts";
import { LIVE_INIT, LIVE_PLAYLIST } from "./contract.ts";

/** Why a live encode stopped before it was done. */
export type LiveStopKind =
  /** Its encoded media time lagged too far (LIVE_ENCODE_MAX_LAG_S). */
  | "behind"
  /** Another writer ended its claim (a job that would not wait, a sweep). */
  | "lost"
  /** The recording was deleted. */
  | "gone"
  /** The recording was finished without it, or ffmpeg ended early. */
  | "ended"
  /** ffmpeg failed, or a processing limit was passed. */
  | "failed"
  /** This worker is stopping. */
  | "stopped";

/** A live encode that stopped before it was done; the reason is readable. */
export class LiveEncodeStopped extends Error {
  readonly kind: LiveStopKind;
  constructor(kind: LiveStopKind, message: string) {
    super(message);
    this.name = "LiveEncodeStopped";
    this.kind = kind;
  }
}

/** The record's view of a claim. */
export function viewOf(
  claim: LiveEncodeClaim,
  state: LiveEncodeState["state"],
): LiveEncodeState {
  const view: LiveEncodeState = {
    mode: "encode",
    state,
    playlist: LIVE_PLAYLIST,
    init: LIVE_INIT,
    segments: claim.segments,
    encodedS: Math.round(claim.encodedS * 1000) / 1000,
    updatedAt: claim.updatedAt,
  };
  if (claim.reason) view.reason = claim.reason;
  return view;
}

/** The claim of recording `id`, with its versionstamp. */
export function readClaim(
  ctx: AppContext,
  id: string,
): Promise<Deno.KvEntryMaybe<LiveEncodeClaim>> {
  return ctx.kv.get<LiveEncodeClaim>(liveEncodeKey(id));
}

/**
 * Records that recording `id` gets no live encode (it needs none, or no
 * slot was free while it was young), so no worker judges it again.
 * Nothing is written when another worker judged it first.
 */
export async function skipLiveEncode(
  ctx: AppContext,
  id: string,
  reason: string,
): Promise<void> {
  const now = Date.now();
  const claim: LiveEncodeClaim = {
    videoId: id,
    state: "skipped",
    reason,
    leaseUntil: 0,
    startedAt: now,
    updatedAt: now,
    segments: 0,
    encodedS: 0,
  };
  await ctx.kv.atomic()
    .check({ key: liveEncodeKey(id), versionstamp: null })
    .set(liveEncodeKey(id), claim)
    .commit();
}

/** A claim this worker holds: the value it last wrote and its versionstamp. */
export interface HeldClaim {
  claim: LiveEncodeClaim;
  stamp: string;
}

/**
 * Claims the live encode of recording `id` for `workerId`: only while it
 * records and nobody judged it yet. Resolves the held claim, or null.
 */
export async function claimLiveEncode(
  ctx: AppContext,
  id: string,
  workerId: string,
): Promise<HeldClaim | null> {
  let claim: LiveEncodeClaim | undefined;
  const result = await updateRecording(ctx, id, async (rec) => {
    if (!rec || rec.status !== "recording" || rec.partial || rec.live) {
      return null;
    }
    const entry = await readClaim(ctx, id);
    if (entry.versionstamp !== null) return null;
    const now = Date.now();
    claim = {
      videoId: id,
      state: "running",
      workerId,
      leaseUntil: now + ctx.config.jobLeaseMs,
      startedAt: now,
      updatedAt: now,
      progressAt: now,
      segments: 0,
      encodedS: 0,
      lagS: 0,
      fed: { bytes: 0, chunks: 0 },
    };
    const held = claim;
    return {
      next: { ...rec, live: viewOf(held, "running"), updatedAt: now },
      checks: [entry],
      extra: (atomic) => atomic.set(liveEncodeKey(id), held),
    };
  });
  if (!result.changed || !claim || !result.versionstamp) return null;
  return { claim, stamp: result.versionstamp };
}

/**
 * Writes the held claim anew (its lease renewed), and the record's view
 * with it when `withView`. Resolves the new versionstamp, or null when the
 * claim is no longer this worker's or the recording is gone.
 */
export async function writeClaim(
  ctx: AppContext,
  id: string,
  stamp: string,
  claim: LiveEncodeClaim,
  withView: boolean,
): Promise<string | null> {
  if (!withView) {
    const res = await ctx.kv.atomic()
      .check({ key: liveEncodeKey(id), versionstamp: stamp })
      .set(liveEncodeKey(id), claim)
      .commit();
    return res.ok ? res.versionstamp : null;
  }
  const result = await updateRecording(ctx, id, async (rec) => {
    if (!rec) return null;
    if ((await readClaim(ctx, id)).versionstamp !== stamp) return null;
    return {
      next: { ...rec, live: viewOf(claim, "running"), updatedAt: Date.now() },
      checks: [{ key: liveEncodeKey(id), versionstamp: stamp }],
      extra: (atomic) => atomic.set(liveEncodeKey(id), claim),
    };
  });
  return result.changed && result.versionstamp ? result.versionstamp : null;
}

/**
 * Ends a running live encode `done` or `abandoned`, claim and view in one
 * commit: the holder's own end (`stamp`, the versionstamp it last wrote),
 * or anyone's, for any running claim for which `onlyIf` holds (judged on
 * every fresh read). Resolves whether it was ended by this call.
 */
export async function endLiveEncode(
  ctx: AppContext,
  id: string,
  end: {
    state: "done" | "abandoned";
    stamp?: string;
    onlyIf?: (claim: LiveEncodeClaim) => boolean;
    /** Fields the claim ends with (reason, input, segments, ...). */
    fields: Partial<LiveEncodeClaim>;
  },
): Promise<boolean> {
  const result = await updateRecording(ctx, id, async (rec) => {
    const entry = await readClaim(ctx, id);
    const claim = entry.value;
    if (!claim || claim.state !== "running") return null;
    if (end.stamp !== undefined && entry.versionstamp !== end.stamp) {
      return null;
    }
    if (end.onlyIf && !end.onlyIf(claim)) return null;
    const now = Date.now();
    const ended: LiveEncodeClaim = {
      ...claim,
      ...end.fields,
      state: end.state,
      leaseUntil: 0,
      updatedAt: now,
    };
    if (!rec) {
      // The recording is gone: only the claim is left to close.
      await ctx.kv.atomic().check(entry).set(liveEncodeKey(id), ended)
        .commit();
      return null;
    }
    return {
      next: { ...rec, live: viewOf(ended, end.state), updatedAt: now },
      checks: [entry],
      extra: (atomic) => atomic.set(liveEncodeKey(id), ended),
    };
  });
  return result.changed;
}

/**
 * Abandons recording `id`'s live encode if it is running and its holder's
 * lease lapsed (the worker died or was stopped without a word).
 */
export function abandonIfLapsed(
  ctx: AppContext,
  id: string,
  now = Date.now(),
): Promise<boolean> {
  return endLiveEncode(ctx, id, {
    state: "abandoned",
    onlyIf: (claim) => claim.leaseUntil < now,
    fields: { reason: "its worker stopped (the lease on it lapsed)" },
  });
}
