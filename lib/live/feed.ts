/**
 * Carries recording changes committed by other instances into this
 * process's {@link LiveHub}. Every commit rewrites ["change_head"] and adds
 * an entry to the change log (["change", seq], `{id, at}`); this feed
 * watches the head, reads the log entries it has not seen yet, loads those
 * recordings and publishes them. `kv.watch` may skip intermediate values,
 * so the log (not the head) says what changed.
 *
 * With a local KV file only one process writes, and it publishes its own
 * changes, so the log is written and the feed started only when the KV is
 * shared with other instances (`config.sharedKv`, SHARED_KV: by default for
 * a KV Connect URL).
 */

import type { AppContext } from "../core/context.ts";
import { versionPrint } from "./hub.ts";
import {
  type ChangeEntry,
  changeHeadKey,
  changeKey,
  changePrefix,
  type Recording,
  recordingKey,
} from "../kv/keys.ts";

/** Log entries this much older than the newest one seen are read again (clock skew, slow commits). */
const OVERLAP_MS = 5_000;
/** Recordings whose last published version is remembered (to skip repeats). */
const MAX_REMEMBERED = 10_000;
const MIN_RETRY_MS = 250;
const MAX_RETRY_MS = 10_000;

function seqFloor(at: number): string {
  return Math.max(0, at).toString().padStart(15, "0");
}

/**
 * Starts the cross-instance feed when the KV is shared (`ctx.config.sharedKv`)
 * and returns a function that stops it and resolves once it has stopped.
 * Otherwise it starts nothing.
 */
export function startLiveFeed(ctx: AppContext): () => Promise<void> {
  if (!ctx.config.sharedKv) {
    return () => Promise.resolve();
  }
  const startedAt = Date.now();
  const seen = new Map<string, number>();
  const published = new Map<string, { at: number; print: string }>();
  let newestAt = startedAt;
  let stopped = false;
  let reader: ReadableStreamDefaultReader<unknown> | undefined;
  let wakeRetry: (() => void) | undefined;

  function remember(rec: Recording) {
    published.delete(rec.id);
    published.set(rec.id, { at: rec.updatedAt, print: versionPrint(rec) });
    if (published.size > MAX_REMEMBERED) {
      published.delete(published.keys().next().value!);
    }
  }
  const unsubscribe = ctx.live.subscribe(remember);

  async function catchUp() {
    const ids: string[] = [];
    const deleted = new Map<string, Recording>();
    const iter = ctx.kv.list<ChangeEntry>({
      prefix: changePrefix(),
      start: changeKey(seqFloor(newestAt - OVERLAP_MS)),
    });
    for await (const entry of iter) {
      const seq = String(entry.key[1]);
      if (seen.has(seq)) continue;
      seen.set(seq, entry.value.at);
      newestAt = Math.max(newestAt, entry.value.at);
      if (entry.value.at < startedAt) continue;
      if (entry.value.deleted) deleted.set(entry.value.id, entry.value.deleted);
      if (!ids.includes(entry.value.id)) ids.push(entry.value.id);
    }
    for (const [seq, at] of seen) {
      if (at < newestAt - 2 * OVERLAP_MS) seen.delete(seq);
    }
    for (let i = 0; i < ids.length && !stopped; i += 10) {
      const entries = await ctx.kv.getMany<Recording[]>(
        ids.slice(i, i + 10).map((id) => recordingKey(id)),
      );
      for (const [k, { value }] of entries.entries()) {
        const rec = value ?? deleted.get(ids[i + k]);
        if (!rec || stopped) continue;
        const last = published.get(rec.id);
        if (
          last && (last.at > rec.updatedAt || last.print === versionPrint(rec))
        ) continue;
        ctx.live.publish(rec);
      }
    }
  }

  function pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wakeRetry = undefined;
        resolve();
      }
      wakeRetry = done;
    });
  }

  async function run() {
    let failures = 0;
    while (!stopped) {
      try {
        reader = ctx.kv.watch([changeHeadKey()]).getReader();
        while (!stopped) {
          const { done } = await reader.read();
          if (done || stopped) break;
          await catchUp();
          failures = 0;
        }
      } catch (err) {
        if (stopped) break;
        ctx.log.error("live feed: watching the change log failed", {
          error: String(err),
        });
      }
      if (stopped) break;
      failures++;
      await pause(Math.min(MAX_RETRY_MS, MIN_RETRY_MS * 2 ** failures));
    }
  }

  const running = run();
  return async () => {
    stopped = true;
    unsubscribe();
    wakeRetry?.();
    await reader?.cancel().catch(() => {});
    await running;
  };
}
