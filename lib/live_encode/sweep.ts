/**
 * Housekeeping of live encodes, run with the periodic sweep
 * (lib/recordings/maintenance.ts): claims whose worker died are ended
 * `abandoned`; a finished recording's live files are removed
 * LIVE_FILES_KEEP_S after it finished (the record's `live` then says
 * `removed`), and its claim goes with them; claims of recordings that are
 * gone, and `skipped` marks of recordings no longer recording, are
 * dropped. Of instances sweeping at once, one acts: every write is checked
 * against the claim's versionstamp.
 */

import type { AppContext } from "../core/context.ts";
import {
  type LiveEncodeClaim,
  liveEncodeKey,
  liveEncodePrefix,
  type Recording,
  recordingKey,
} from "../kv/keys.ts";
import { updateRecording } from "../recordings/transitions.ts";
import { canRemoveFiles } from "../storage/storage.ts";
import { abandonIfLapsed } from "./claim.ts";
import { LIVE_INIT, LIVE_PLAYLIST, liveSegmentName } from "./contract.ts";

/** What one sweep of live encodes did. */
export interface LiveSweepReport {
  /** Recordings whose live files were removed. */
  removed: string[];
  /** Claims ended because their worker died. */
  abandoned: number;
  /** Claims dropped (recording gone, or no longer recording). */
  dropped: number;
}

/** See the module's description. */
export async function sweepLiveEncodes(
  ctx: AppContext,
  now = Date.now(),
): Promise<LiveSweepReport> {
  const report: LiveSweepReport = { removed: [], abandoned: 0, dropped: 0 };
  const keepMs = ctx.config.liveFilesKeepS * 1000;
  for await (
    const e of ctx.kv.list<LiveEncodeClaim>({ prefix: liveEncodePrefix() })
  ) {
    const claim = e.value;
    const id = claim.videoId;
    try {
      const rec = (await ctx.kv.get<Recording>(recordingKey(id))).value;
      if (!rec) {
        const res = await ctx.kv.atomic().check(e).delete(e.key).commit();
        if (res.ok) report.dropped++;
        continue;
      }
      if (claim.state === "running") {
        if (claim.leaseUntil < now && await abandonIfLapsed(ctx, id, now)) {
          report.abandoned++;
        }
        continue;
      }
      if (claim.state === "skipped") {
        if (rec.status === "recording") continue;
        const res = await ctx.kv.atomic().check(e).delete(e.key).commit();
        if (res.ok) report.dropped++;
        continue;
      }
      const finished = rec.status === "complete" || rec.status === "failed";
      if (!finished || (rec.finishedAt ?? now) + keepMs > now) continue;
      if (!canRemoveFiles(ctx.storage)) continue;
      if (await removeLiveFiles(ctx, e as Deno.KvEntry<LiveEncodeClaim>)) {
        report.removed.push(id);
      }
    } catch (err) {
      ctx.log.error("sweeping a live encode failed", {
        recording: id,
        error: String(err),
      });
    }
  }
  return report;
}

/**
 * Removes a finished recording's live files (the playlist first, so no
 * player is sent to a segment that is gone; then the init segment and the
 * segments, also any published after the claim's last count), then marks
 * the record's `live` removed and drops the claim in one commit.
 */
async function removeLiveFiles(
  ctx: AppContext,
  entry: Deno.KvEntry<LiveEncodeClaim>,
): Promise<boolean> {
  const storage = ctx.storage;
  if (!canRemoveFiles(storage)) return false;
  const id = entry.value.videoId;
  await storage.removeFile(id, LIVE_PLAYLIST);
  await storage.removeFile(id, LIVE_INIT);
  for (let n = 1;; n++) {
    const name = liveSegmentName(n);
    if (n > entry.value.segments && !await storage.statFile(id, name)) break;
    await storage.removeFile(id, name);
  }
  const result = await updateRecording(ctx, id, async (rec) => {
    const fresh = await ctx.kv.get(liveEncodeKey(id));
    if (fresh.versionstamp !== entry.versionstamp) return null;
    if (!rec?.live) return null;
    return {
      next: {
        ...rec,
        live: { ...rec.live, removed: true, updatedAt: Date.now() },
        updatedAt: Date.now(),
      },
      checks: [entry],
      extra: (atomic) => atomic.delete(liveEncodeKey(id)),
    };
  });
  if (!result.changed) {
    await ctx.kv.atomic().check(entry).delete(entry.key).commit();
  }
  return true;
}
