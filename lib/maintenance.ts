/**
 * Housekeeping run at start-up and by the minute sweep: idle recordings are
 * finalized or removed, finished ones past their retention are deleted, and
 * files that no KV record refers to are swept away.
 */

import type { AppContext } from "./context.ts";
import {
  type ChunkEntry,
  chunkPrefix,
  finishedRecordingPrefix,
  openRecordingPrefix,
  type Recording,
  recordingKey,
} from "./kv_keys.ts";
import { completeRecording, deleteRecording } from "./recordings.ts";

/** What one sweep did. */
export interface SweepReport {
  finalized: string[];
  removed: string[];
  retained: string[];
  orphanFiles: number;
  orphanRecordings: number;
}

/**
 * Finalizes recordings that got no chunk for RECORDING_IDLE_TIMEOUT_S (as if
 * completed) when they have data, and removes the empty ones.
 */
export async function expireIdleRecordings(
  ctx: AppContext,
  now = Date.now(),
): Promise<{ finalized: string[]; removed: string[] }> {
  const finalized: string[] = [];
  const removed: string[] = [];
  const idleMs = ctx.config.recordingIdleTimeoutS * 1000;
  if (idleMs <= 0) return { finalized, removed };
  for await (
    const e of ctx.kv.list<string>({ prefix: openRecordingPrefix() })
  ) {
    const rec = (await ctx.kv.get<Recording>(recordingKey(e.value))).value;
    if (!rec || rec.status !== "recording") continue;
    if ((rec.lastChunkAt ?? rec.createdAt) + idleMs > now) continue;
    try {
      if (rec.chunksReceived > 0) {
        await completeRecording(ctx, rec.id, { expired: true });
        finalized.push(rec.id);
      } else {
        await deleteRecording(ctx, rec.id);
        removed.push(rec.id);
      }
    } catch (err) {
      console.error(`idle expiry of ${rec.id} failed:`, err);
    }
  }
  return { finalized, removed };
}

/** Deletes recordings finished more than RETENTION_DAYS ago. */
export async function applyRetention(
  ctx: AppContext,
  now = Date.now(),
): Promise<string[]> {
  const deleted: string[] = [];
  const days = ctx.config.retentionDays;
  if (days <= 0) return deleted;
  const before = now - days * 86_400_000;
  const iter = ctx.kv.list<string>({
    start: [...finishedRecordingPrefix(), 0],
    end: [...finishedRecordingPrefix(), before],
  });
  for await (const e of iter) {
    try {
      await deleteRecording(ctx, e.value);
      deleted.push(e.value);
    } catch (err) {
      console.error(`retention delete of ${e.value} failed:`, err);
      await ctx.kv.delete(e.key);
    }
  }
  return deleted;
}

/**
 * Removes stored files that no KV record refers to: chunks written but never
 * committed (a crash between the write and the commit), folders of
 * recordings that do not exist, and scratch folders. Run it when no request
 * is in flight (at start-up).
 */
export async function sweepOrphans(
  ctx: AppContext,
): Promise<{ files: number; recordings: number }> {
  let files = 0;
  let recordings = 0;
  await ctx.storage.removeAllWorkDirs();
  for (const id of await ctx.storage.listRecordingIds()) {
    const rec = await ctx.kv.get<Recording>(recordingKey(id));
    if (!rec.value) {
      await ctx.storage.removeRecording(id);
      recordings++;
      continue;
    }
    const kept: ChunkEntry[] = [];
    for await (
      const c of ctx.kv.list<ChunkEntry>({ prefix: chunkPrefix(id) })
    ) kept.push(c.value);
    if (await ctx.storage.trimChunks(id, kept) > 0) files++;
  }
  return { files, recordings };
}

/** One full housekeeping pass. */
export async function runSweep(
  ctx: AppContext,
  options: { orphans?: boolean } = {},
): Promise<SweepReport> {
  const { finalized, removed } = await expireIdleRecordings(ctx);
  const retained = await applyRetention(ctx);
  const orphans = options.orphans
    ? await sweepOrphans(ctx)
    : { files: 0, recordings: 0 };
  return {
    finalized,
    removed,
    retained,
    orphanFiles: orphans.files,
    orphanRecordings: orphans.recordings,
  };
}
