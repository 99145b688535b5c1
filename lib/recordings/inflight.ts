/**
 * Chunk requests under way, so that a completed recording is processed to
 * its end only once every chunk already on its way has been stored. With a
 * KV shared by several instances, each request leaves a marker in KV
 * (["chunk_inflight", id, request]) that any instance can see, refreshed
 * while the body arrives and void once its `until` passes (its process
 * died); a lone instance counts its requests in memory, since no other
 * process can receive a chunk of its recordings.
 */

import { type AppContext, perKv } from "../core/context.ts";
import { commitGrouped } from "../kv/batch.ts";
import {
  type InflightChunk,
  inflightChunkKey,
  inflightChunkPrefix,
} from "../kv/keys.ts";

/** A marker is void this long after its last refresh. */
const MARKER_LIFE_MS = 60_000;
/** How often a marker is refreshed while its request runs. */
const REFRESH_MS = 20_000;

const localCounts = perKv(() => new Map<string, number>());

/**
 * Marks a chunk request of recording `id` as under way; call the returned
 * function once its chunk is committed or dropped.
 */
export async function beginChunkRequest(
  ctx: AppContext,
  id: string,
  arrivedAt: number,
): Promise<() => Promise<void>> {
  if (!ctx.config.sharedKv) {
    const counts = localCounts(ctx.kv);
    counts.set(id, (counts.get(id) ?? 0) + 1);
    let ended = false;
    return () => {
      if (!ended) {
        ended = true;
        const left = (counts.get(id) ?? 1) - 1;
        if (left > 0) counts.set(id, left);
        else counts.delete(id);
      }
      return Promise.resolve();
    };
  }
  const key = inflightChunkKey(id, crypto.randomUUID());
  const mark = () => {
    const value: InflightChunk = {
      at: arrivedAt,
      until: Date.now() + MARKER_LIFE_MS,
    };
    return commitGrouped(ctx.kv, {
      lock: `inflight:${String(key[2])}`,
      checks: [],
      mutate: (atomic) =>
        atomic.set(key, value, { expireIn: MARKER_LIFE_MS * 2 }),
    });
  };
  await mark();
  const refresh = setInterval(() => mark().catch(() => {}), REFRESH_MS);
  let ended = false;
  return async () => {
    if (ended) return;
    ended = true;
    clearInterval(refresh);
    await ctx.kv.delete(key).catch(() => {});
  };
}

/** How many chunk requests of recording `id` are under way on any instance. */
export async function chunkRequestsUnderWay(
  ctx: AppContext,
  id: string,
): Promise<number> {
  if (!ctx.config.sharedKv) return localCounts(ctx.kv).get(id) ?? 0;
  const now = Date.now();
  let count = 0;
  for await (
    const e of ctx.kv.list<InflightChunk>({ prefix: inflightChunkPrefix(id) })
  ) {
    if (e.value.until > now) count++;
  }
  return count;
}
