/**
 * Chunk requests under way, in the order they arrived. A completed
 * recording is processed to its end only once every chunk already on its way
 * has been stored, and an unindexed chunk takes its place after the chunks
 * whose requests arrived before it (clients that post each MediaRecorder
 * blob without waiting send the next request before the last body is in).
 *
 * With a KV shared by several instances, each request leaves a marker in KV
 * (["chunk_inflight", id, request]) that any instance can see, refreshed
 * while the body arrives and void once its `until` passes (its process
 * died); a lone instance keeps them in memory, since no other process can
 * receive a chunk of its recordings.
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
/** How often earlier requests are looked at again, with a shared KV. */
const POLL_MS = 15;

/** One request under way: when it arrived and a tie-breaker. */
interface Arrival {
  at: number;
  order: string;
}

/** A chunk request marked under way. */
export interface ChunkRequest {
  /**
   * Waits (at most `maxMs`) until every request of the same recording that
   * arrived before this one has ended, so unindexed chunks take their
   * places in arrival order.
   */
  waitForEarlier(maxMs: number): Promise<void>;
  /** Marks the request as ended (its chunk committed or dropped). */
  end(): Promise<void>;
}

interface LocalArrival extends Arrival {
  done: Promise<void>;
}

const localArrivals = perKv(() => new Map<string, LocalArrival[]>());
let localOrder = 0;

function before(a: Arrival, b: Arrival): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

function pause(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function beginLocal(ctx: AppContext, id: string, at: number): ChunkRequest {
  const all = localArrivals(ctx.kv);
  const { promise: done, resolve } = Promise.withResolvers<void>();
  const mine: LocalArrival = {
    at,
    order: (localOrder++).toString(36).padStart(12, "0"),
    done,
  };
  all.set(id, [...(all.get(id) ?? []), mine]);
  let ended = false;
  return {
    async waitForEarlier(maxMs) {
      const deadline = Date.now() + maxMs;
      while (true) {
        const earlier = (all.get(id) ?? []).filter((a) => before(a, mine));
        const left = deadline - Date.now();
        if (earlier.length === 0 || left <= 0) return;
        await Promise.race([
          Promise.all(earlier.map((a) => a.done)),
          pause(left),
        ]);
      }
    },
    end() {
      if (!ended) {
        ended = true;
        const left = (all.get(id) ?? []).filter((a) => a !== mine);
        if (left.length > 0) all.set(id, left);
        else all.delete(id);
        resolve();
      }
      return Promise.resolve();
    },
  };
}

async function beginShared(
  ctx: AppContext,
  id: string,
  at: number,
): Promise<ChunkRequest> {
  const order = crypto.randomUUID();
  const key = inflightChunkKey(id, order);
  const mine: Arrival = { at, order };
  const mark = () => {
    const value: InflightChunk = { at, until: Date.now() + MARKER_LIFE_MS };
    return commitGrouped(ctx.kv, {
      lock: `inflight:${order}`,
      checks: [],
      mutate: (atomic) =>
        atomic.set(key, value, { expireIn: MARKER_LIFE_MS * 2 }),
    });
  };
  await mark();
  const refresh = setInterval(() => mark().catch(() => {}), REFRESH_MS);
  let ended = false;
  return {
    async waitForEarlier(maxMs) {
      const deadline = Date.now() + maxMs;
      while (Date.now() < deadline) {
        const now = Date.now();
        let earlier = false;
        for await (
          const e of ctx.kv.list<InflightChunk>({
            prefix: inflightChunkPrefix(id),
          })
        ) {
          const other = { at: e.value.at, order: String(e.key.at(-1)) };
          if (e.value.until > now && before(other, mine)) {
            earlier = true;
            break;
          }
        }
        if (!earlier) return;
        await pause(POLL_MS);
      }
    },
    async end() {
      if (ended) return;
      ended = true;
      clearInterval(refresh);
      await ctx.kv.delete(key).catch(() => {});
    },
  };
}

/** Marks a chunk request of recording `id`, arrived at `arrivedAt`, as under way. */
export async function beginChunkRequest(
  ctx: AppContext,
  id: string,
  arrivedAt: number,
): Promise<ChunkRequest> {
  return ctx.config.sharedKv
    ? await beginShared(ctx, id, arrivedAt)
    : beginLocal(ctx, id, arrivedAt);
}

/** How many chunk requests of recording `id` are under way on any instance. */
export async function chunkRequestsUnderWay(
  ctx: AppContext,
  id: string,
): Promise<number> {
  if (!ctx.config.sharedKv) return localArrivals(ctx.kv).get(id)?.length ?? 0;
  const now = Date.now();
  let count = 0;
  for await (
    const e of ctx.kv.list<InflightChunk>({ prefix: inflightChunkPrefix(id) })
  ) {
    if (e.value.until > now) count++;
  }
  return count;
}
