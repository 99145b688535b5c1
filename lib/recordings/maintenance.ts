/**
 * Housekeeping run at start-up and by the minute sweep: idle recordings are
 * finalized or removed, finished ones past their retention are deleted,
 * finished files left unflushed are flushed (or, after a machine crash,
 * made again), and files that no KV record refers to are swept away.
 */

import { type AppContext, perKv } from "../core/context.ts";
import { NotFoundError } from "../core/errors.ts";
import { queueJob } from "../jobs/queue.ts";
import {
  type ChunkEntry,
  chunkPrefix,
  finishedRecordingPrefix,
  openRecordingPrefix,
  partialUploadPrefix,
  type Recording,
  recordingKey,
  type UnflushedOutputs,
  unflushedOutputsPrefix,
} from "../kv/keys.ts";
import { completeRecording, deleteRecording } from "./sessions.ts";
import { updateRecording } from "./transitions.ts";
import { canDeferSync, canTrimChunks } from "../storage/storage.ts";
import { indexLibrary } from "./library.ts";
import { sweepLiveEncodes } from "../live_encode/sweep.ts";

/** What one sweep did. */
export interface SweepReport {
  finalized: string[];
  removed: string[];
  retained: string[];
  /** Recordings whose unflushed finished files were flushed. */
  flushed: string[];
  /** Recordings processed again: their files may not have reached the disk. */
  reprocessed: string[];
  orphanFiles: number;
  orphanRecordings: number;
  /** Records given the library's indexes (at start-up). */
  indexed: number;
  /** Recordings whose live-encode files were removed (LIVE_FILES_KEEP_S after they finished). */
  liveFilesRemoved: string[];
}

/**
 * An unflushed-outputs entry younger than this is left to the job that
 * wrote it (it flushes right after its commit) unless it is the start-up
 * sweep of a local KV, where no other process can be running the job.
 */
export const UNFLUSHED_GRACE_MS = 30_000;

let cachedBootId: string | undefined;

/**
 * This machine's boot id (`/proc/sys/kernel/random/boot_id`), "" where the
 * system has none. Files in the page cache survive a process crash but not
 * a reboot, so the boot id tells which one an unflushed entry outlived.
 */
export async function bootId(): Promise<string> {
  if (cachedBootId === undefined) {
    try {
      cachedBootId =
        (await Deno.readTextFile("/proc/sys/kernel/random/boot_id")).trim();
    } catch {
      cachedBootId = "";
    }
  }
  return cachedBootId;
}

/**
 * Puts a `complete` recording whose finished files may be torn back to
 * `processing` with a fresh job, and deletes its unflushed entry, in one
 * commit (checked against `entry`). Returns whether it was queued; a
 * recording that is gone or no longer complete only loses the entry.
 */
export async function reprocessUnflushed(
  ctx: AppContext,
  entry: Deno.KvEntry<UnflushedOutputs>,
  why: string,
): Promise<boolean> {
  const id = String(entry.key.at(-1));
  const now = Date.now();
  let stale = false;
  const result = await updateRecording(ctx, id, async (rec) => {
    const fresh = await ctx.kv.get(entry.key);
    if (fresh.versionstamp !== entry.versionstamp) {
      stale = true;
      return null;
    }
    if (!rec || rec.status !== "complete") return null;
    return {
      next: {
        ...rec,
        status: "processing",
        progress: 0,
        stage: `queued again: ${why}`,
        error: undefined,
        finishedAt: undefined,
        // Not listed while processing: they may be torn, and are made again.
        files: [],
        poster: undefined,
        updatedAt: now,
      },
      checks: [entry],
      extra(atomic) {
        atomic.delete(entry.key);
        queueJob(ctx, atomic, id, now);
      },
    };
  });
  if (!result.changed && !stale) {
    await ctx.kv.atomic().check(entry).delete(entry.key).commit();
  }
  return result.changed;
}

/**
 * Flushes the finished files of a recording that was committed `complete`
 * with them unflushed (`names`, else the recording's files and poster), then
 * deletes the entry. When the flush fails the files may never reach the
 * disk whole, so the recording is processed again
 * ({@link reprocessUnflushed}). Returns what was done.
 */
export async function flushOutputs(
  ctx: AppContext,
  entry: Deno.KvEntry<UnflushedOutputs>,
  names?: string[],
): Promise<"flushed" | "reprocessed" | "dropped"> {
  const id = String(entry.key.at(-1));
  if (!names) {
    const rec = (await ctx.kv.get<Recording>(recordingKey(id))).value;
    if (!rec || rec.status !== "complete") {
      await ctx.kv.atomic().check(entry).delete(entry.key).commit();
      return "dropped";
    }
    names = [...rec.files, ...(rec.poster ? [rec.poster] : [])];
  }
  try {
    // A storage that cannot defer the flush made the files durable at once.
    if (canDeferSync(ctx.storage)) await ctx.storage.syncFiles(id, names);
  } catch (err) {
    ctx.log.error("flushing finished files failed; processing again", {
      recording: id,
      error: (err as Error).message,
    });
    return await reprocessUnflushed(
        ctx,
        entry,
        "its finished files could not be flushed to disk",
      )
      ? "reprocessed"
      : "dropped";
  }
  await ctx.kv.atomic().check(entry).delete(entry.key).commit();
  return "flushed";
}

/**
 * Settles the unflushed-outputs entries that outlived their job (older than
 * {@link UNFLUSHED_GRACE_MS}, or all of them at start-up with a local KV):
 * written during this boot, the files are still in the page cache and are
 * flushed; written during another boot (the machine went down before the
 * flush, the page cache is lost) or by a machine without a boot id, the
 * files may be torn and the recording is processed again.
 */
export async function recoverUnflushedOutputs(
  ctx: AppContext,
  options: { startup?: boolean; now?: number } = {},
): Promise<{ flushed: string[]; reprocessed: string[] }> {
  const flushed: string[] = [];
  const reprocessed: string[] = [];
  const boot = await bootId();
  const now = options.now ?? Date.now();
  const anyAge = (options.startup ?? false) && !ctx.config.sharedKv;
  for await (
    const e of ctx.kv.list<UnflushedOutputs>({
      prefix: unflushedOutputsPrefix(),
    })
  ) {
    const id = String(e.key.at(-1));
    if (!anyAge && e.value.at + UNFLUSHED_GRACE_MS > now) continue;
    try {
      if (e.value.bootId !== "" && e.value.bootId === boot) {
        const done = await flushOutputs(ctx, e);
        if (done === "flushed") flushed.push(id);
        if (done === "reprocessed") reprocessed.push(id);
      } else if (
        await reprocessUnflushed(
          ctx,
          e,
          "the machine went down before its finished files were flushed to disk",
        )
      ) reprocessed.push(id);
    } catch (err) {
      ctx.log.error("settling unflushed files failed", {
        recording: id,
        error: String(err),
      });
    }
  }
  return { flushed, reprocessed };
}

/**
 * Finalizes recordings that got no chunk for RECORDING_IDLE_TIMEOUT_S (as if
 * completed) when they have data, and removes the empty ones and the tus
 * partial uploads that no final upload claimed.
 */
export async function expireIdleRecordings(
  ctx: AppContext,
  now = Date.now(),
): Promise<{ finalized: string[]; removed: string[] }> {
  const finalized: string[] = [];
  const removed: string[] = [];
  const idleMs = ctx.config.recordingIdleTimeoutS * 1000;
  if (idleMs <= 0) return { finalized, removed };
  // Judged again on every read of the commit that acts on it: a chunk that
  // came meanwhile keeps a recording open, and of instances that sweep at
  // once only one acts (the others find it changed or gone).
  const idle = (rec: Recording) =>
    (rec.lastChunkAt ?? rec.createdAt) + idleMs <= now;
  const idleOpen = (rec: Recording) =>
    rec.status === "recording" && !rec.partial && idle(rec);
  for await (
    const e of ctx.kv.list<string>({ prefix: openRecordingPrefix() })
  ) {
    const rec = (await ctx.kv.get<Recording>(recordingKey(e.value))).value;
    if (!rec || !idleOpen(rec)) continue;
    try {
      if (rec.chunksReceived > 0) {
        const done = await completeRecording(ctx, rec.id, {
          expired: true,
          onlyIf: (r) => idleOpen(r) && r.chunksReceived > 0,
        });
        if (done.started) finalized.push(rec.id);
      } else if (
        await deleteRecording(ctx, rec.id, {
          cause: "expired",
          onlyIf: (r) => idleOpen(r) && r.chunksReceived === 0,
        })
      ) removed.push(rec.id);
    } catch (err) {
      if (err instanceof NotFoundError) continue; // deleted meanwhile
      ctx.log.error("idle expiry failed", {
        recording: rec.id,
        error: String(err),
      });
    }
  }
  for await (
    const e of ctx.kv.list<string>({ prefix: partialUploadPrefix() })
  ) {
    const rec = (await ctx.kv.get<Recording>(recordingKey(e.value))).value;
    if (!rec || !rec.partial || !idle(rec)) continue;
    try {
      if (
        await deleteRecording(ctx, rec.id, {
          cause: "expired",
          onlyIf: (r) => !!r.partial && idle(r),
        })
      ) removed.push(rec.id);
    } catch (err) {
      if (err instanceof NotFoundError) continue;
      ctx.log.error("idle expiry of a partial upload failed", {
        recording: rec.id,
        error: String(err),
      });
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
  const expired = (rec: Recording) =>
    (rec.status === "complete" || rec.status === "failed") &&
    rec.finishedAt !== undefined && rec.finishedAt < before;
  for await (const e of iter) {
    try {
      // Only one of the instances that sweep at once deletes it, and not
      // if it was queued again meanwhile.
      if (await deleteRecording(ctx, e.value, { onlyIf: expired })) {
        deleted.push(e.value);
      }
    } catch (err) {
      if (err instanceof NotFoundError) continue;
      ctx.log.error("retention delete failed", {
        recording: e.value,
        error: String(err),
      });
      await ctx.kv.delete(e.key);
    }
  }
  return deleted;
}

/** Stored recordings found without a KV record by the last sweep of each KV handle. */
const orphanSuspects = perKv(() => new Set<string>());

/**
 * Removes stored things that no KV record refers to. With `idle` (the
 * start-up sweep of a lone instance: no request or job in flight), at once:
 * the folders of recordings that do not exist, chunks written but never
 * committed (a crash between the write and the commit) and scratch folders.
 * Otherwise (every sweep, on every instance, with a shared KV too), only the
 * stored recordings found without a record by two sweeps in a row: a
 * recording is stored just before its record is committed, and a job that
 * ends after its recording was deleted may store files again.
 */
export async function sweepOrphans(
  ctx: AppContext,
  options: { idle?: boolean } = { idle: true },
): Promise<{ files: number; recordings: number }> {
  let files = 0;
  let recordings = 0;
  const suspects = orphanSuspects(ctx.kv);
  const seen = new Set<string>();
  if (options.idle) await ctx.storage.removeAllWorkDirs();
  for (const id of await ctx.storage.listRecordingIds()) {
    const rec = await ctx.kv.get<Recording>(recordingKey(id));
    if (!rec.value) {
      if (!options.idle && !suspects.has(id)) {
        seen.add(id);
        continue;
      }
      await ctx.storage.removeRecording(id);
      recordings++;
      continue;
    }
    // Uncommitted chunk bytes are trimmed where the storage can (else they
    // go with their recording).
    if (!options.idle || !canTrimChunks(ctx.storage)) continue;
    const kept: ChunkEntry[] = [];
    for await (
      const c of ctx.kv.list<ChunkEntry>({ prefix: chunkPrefix(id) })
    ) kept.push(c.value);
    if (await ctx.storage.trimChunks(id, kept) > 0) files++;
  }
  suspects.clear();
  for (const id of seen) suspects.add(id);
  return { files, recordings };
}

/**
 * One full housekeeping pass; `startup` for the one before the worker starts
 * (unflushed outputs of any age are settled then), `orphans` when no request
 * is in flight (a lone instance starting): stored things no record refers to
 * are removed at once, not only after two sweeps.
 */
export async function runSweep(
  ctx: AppContext,
  options: { orphans?: boolean; startup?: boolean } = {},
): Promise<SweepReport> {
  const { finalized, removed } = await expireIdleRecordings(ctx);
  const retained = await applyRetention(ctx);
  const { flushed, reprocessed } = await recoverUnflushedOutputs(ctx, {
    startup: options.startup,
  });
  const orphans = await sweepOrphans(ctx, { idle: options.orphans ?? false });
  const live = await sweepLiveEncodes(ctx);
  // Records written before the library's indexes existed get them.
  const indexed = options.startup ? await indexLibrary(ctx) : 0;
  return {
    indexed,
    finalized,
    removed,
    retained,
    flushed,
    reprocessed,
    orphanFiles: orphans.files,
    orphanRecordings: orphans.recordings,
    liveFilesRemoved: live.removed,
  };
}
