/**
 * A recording's committed chunks as one stream that grows while it is
 * recorded, for a live encode's ffmpeg stdin. Chunks are handed over in
 * index order and only without gaps while chunks may still come (a late
 * chunk for a missing index would belong before what follows it); once no
 * chunk can join the recording any more (lib/recordings/closing.ts
 * `endState` settled) the rest is handed over, gaps and all, exactly as the
 * job reads a recording, and the stream ends. So what was handed over is
 * always a prefix, in index order, of the recording's final chunks, and at
 * the end it is all of them ({@link ChunkFeed.ended}).
 */

import type { AppContext } from "../core/context.ts";
import {
  type ChunkEntry,
  chunkKey,
  chunkPrefix,
  type Recording,
  recordingKey,
} from "../kv/keys.ts";
import { endState } from "../recordings/closing.ts";
import { openChunkStream } from "../recordings/source.ts";
import { LiveEncodeStopped } from "./claim.ts";

/** Chunks listed at once. */
const BATCH = 64;
/** The record is looked at again this often while nothing wakes the feed (ms). */
const POLL_MS = 1_000;

/** Feeds one recording's chunks, in order, as they are committed. */
export class ChunkFeed {
  /** Bytes and chunks handed over so far. */
  fedBytes = 0;
  fedChunks = 0;
  /** The recording's bytes as last read. */
  receivedBytes = 0;
  /** Whether every chunk of the settled recording was handed over. */
  ended = false;
  #ctx: AppContext;
  #id: string;
  #next = 0;
  #final = false;
  #wait: (ms: number) => Promise<void>;
  #signal: AbortSignal;

  /**
   * `wait(ms)` resolves when the recording may have changed (a watch fired)
   * or after `ms`; `signal` stops the feed.
   */
  constructor(
    ctx: AppContext,
    id: string,
    wait: (ms: number) => Promise<void>,
    signal: AbortSignal,
  ) {
    this.#ctx = ctx;
    this.#id = id;
    this.#wait = wait;
    this.#signal = signal;
  }

  /** The bytes, pulled as ffmpeg reads them. Errors end the stream with that error. */
  stream(): ReadableStream<Uint8Array> {
    return ReadableStream.from(this.#pieces());
  }

  async *#pieces(): AsyncGenerator<Uint8Array> {
    while (true) {
      const batch = await this.#nextBatch();
      if (batch === null) {
        this.ended = true;
        return;
      }
      if (batch.length === 0) continue;
      const reader = openChunkStream(this.#ctx, this.#id, batch).getReader();
      let read = false;
      try {
        while (true) {
          const { done, value } = await reader.read();
          if (done) break;
          this.fedBytes += value.length;
          yield value;
        }
        read = true;
      } finally {
        // Stopped mid-batch (ffmpeg went away): let go of the chunks.
        if (!read) await reader.cancel().catch(() => {});
        reader.releaseLock();
      }
      this.fedChunks += batch.length;
    }
  }

  /** The next chunks to hand over; an empty list to look again; null at the end. */
  async #nextBatch(): Promise<ChunkEntry[] | null> {
    const ctx = this.#ctx;
    const id = this.#id;
    while (true) {
      if (this.#signal.aborted) {
        throw this.#signal.reason ??
          new LiveEncodeStopped("stopped", "the live encode was stopped");
      }
      if (this.#final) return null;
      const rec = (await ctx.kv.get<Recording>(recordingKey(id))).value;
      if (!rec) {
        throw new LiveEncodeStopped("gone", "the recording was deleted");
      }
      this.receivedBytes = rec.bytesReceived;
      const listed = await this.#list(BATCH);
      const run: ChunkEntry[] = [];
      for (const c of listed) {
        if (c.index !== this.#next + run.length) break;
        run.push(c);
      }
      if (run.length > 0) {
        this.#next += run.length;
        return run;
      }
      if (rec.status === "recording") {
        await this.#wait(POLL_MS);
        continue;
      }
      if (rec.status !== "processing") {
        throw new LiveEncodeStopped(
          "ended",
          `the recording became ${rec.status} before the live encode had all of it`,
        );
      }
      const end = await endState(ctx, rec, {
        bytes: rec.bytesReceived,
        chunks: rec.chunksReceived,
      });
      if (end.kind === "wait") {
        await this.#wait(Math.max(10, Math.min(end.until - Date.now(), 250)));
        continue;
      }
      if (end.kind !== "settled") continue;
      // No chunk can join any more: the rest, gaps and all.
      const rest = await this.#list(Infinity);
      const bytes = this.fedBytes + rest.reduce((n, c) => n + c.size, 0);
      const chunks = this.fedChunks + rest.length;
      if (bytes !== rec.bytesReceived || chunks !== rec.chunksReceived) {
        continue; // a commit in between; read again
      }
      this.#final = true;
      this.#next = Infinity;
      return rest;
    }
  }

  /** Up to `limit` held chunks from the next index on. */
  async #list(limit: number): Promise<ChunkEntry[]> {
    const out: ChunkEntry[] = [];
    const iter = this.#ctx.kv.list<ChunkEntry>(
      {
        prefix: chunkPrefix(this.#id),
        start: chunkKey(this.#id, this.#next),
      },
      Number.isFinite(limit) ? { limit } : {},
    );
    for await (const e of iter) out.push(e.value);
    return out;
  }
}

/** The bytes a feed handed over, for the claim. */
export function fedOf(feed: ChunkFeed): { bytes: number; chunks: number } {
  return { bytes: feed.fedBytes, chunks: feed.fedChunks };
}
