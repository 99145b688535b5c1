/**
 * Group commit for Deno KV. A local KV file has one writer and flushes its
 * WAL on every commit, so under load chunk commits queue behind each other's
 * flushes. Writes handed to {@link commitGrouped} while an earlier group is
 * being committed wait and then go together in one atomic commit (one
 * flush); with no commit in flight a write goes at once, so an idle server
 * adds no delay. When the combined commit fails (a check of one write no
 * longer holds, or a KV limit), every write of the group is committed on its
 * own, so each gets exactly the answer it would have got alone.
 */

import { perKv } from "../core/context.ts";
import { KvConnectionError } from "./connection_error.ts";

/** One atomic write that may share a commit with others. */
export interface GroupedWrite {
  /** Writes with the same lock never share a commit (e.g. a recording id). */
  lock: string;
  checks: Deno.AtomicCheck[];
  /** Adds this write's mutations to an atomic operation. */
  mutate(atomic: Deno.AtomicOperation): void;
}

type Result = Deno.KvCommitResult | Deno.KvCommitError;

interface Pending {
  write: GroupedWrite;
  resolve(result: Result): void;
  reject(err: unknown): void;
}

/** Writes per commit: 2 checks and a few mutations each stay well inside KV's limits (100 checks, 1000 mutations). */
const MAX_GROUP = 32;

class CommitGrouper {
  #kv: Deno.Kv;
  #queue: Pending[] = [];
  #running = false;

  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  commit(write: GroupedWrite): Promise<Result> {
    const { promise, resolve, reject } = Promise.withResolvers<Result>();
    this.#queue.push({ write, resolve, reject });
    if (!this.#running) this.#drain();
    return promise;
  }

  async #drain(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0) {
        const group: Pending[] = [];
        const rest: Pending[] = [];
        const locks = new Set<string>();
        for (const p of this.#queue) {
          if (group.length < MAX_GROUP && !locks.has(p.write.lock)) {
            locks.add(p.write.lock);
            group.push(p);
          } else rest.push(p);
        }
        this.#queue = rest;
        await this.#commitGroup(group);
      }
    } finally {
      this.#running = false;
    }
  }

  async #commitGroup(group: Pending[]): Promise<void> {
    if (group.length > 1) {
      try {
        const atomic = this.#kv.atomic();
        for (const { write } of group) {
          atomic.check(...write.checks);
          write.mutate(atomic);
        }
        const res = await atomic.commit();
        if (res.ok) {
          for (const p of group) p.resolve(res);
          return;
        }
      } catch (err) {
        // The connection broke: the group may have been committed, so no
        // write of it may be tried again on its own.
        if (err instanceof KvConnectionError) {
          for (const p of group) p.reject(err);
          return;
        }
        // a KV limit: fall through to one commit per write
      }
    }
    await Promise.all(group.map(async (p) => {
      try {
        const atomic = this.#kv.atomic().check(...p.write.checks);
        p.write.mutate(atomic);
        p.resolve(await atomic.commit());
      } catch (err) {
        p.reject(err);
      }
    }));
  }
}

const grouperOf = perKv((kv) => new CommitGrouper(kv));

/**
 * Commits `write` atomically, sharing the commit with other writes made at
 * the same time on the same KV handle. Resolves like
 * `Deno.AtomicOperation.commit()`: `ok: false` when one of its checks fails.
 */
export function commitGrouped(
  kv: Deno.Kv,
  write: GroupedWrite,
): Promise<Result> {
  return grouperOf(kv).commit(write);
}
