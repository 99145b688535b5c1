/**
 * A worker's live encodes: up to LIVE_ENCODE_SLOTS at once. Open
 * recordings (["recording_open"]) are looked at when this process
 * publishes a change of one (the live hub: its own commits, and other
 * instances' through the change feed where it runs) and every
 * {@link SCAN_MS} otherwise, only while a slot is free. Each is judged once,
 * from the Matroska header of its first chunks: one whose MP4 needs a
 * re-encode (VP8) is claimed while it is young enough to be caught up
 * (its first chunk came less than LIVE_ENCODE_MAX_LAG_S ago); any other is
 * marked `skipped` (lib/live_encode/claim.ts), so no worker reads its head
 * again. One live encode per recording: one that stops is not started
 * again, its job encodes the MP4.
 */

import type { AppContext } from "../core/context.ts";
import { mediaKind } from "../core/media_sniff.ts";
import {
  type ChunkEntry,
  chunkPrefix,
  type LiveEncodeClaim,
  liveEncodePrefix,
  openRecordingPrefix,
  type Recording,
  recordingKey,
} from "../kv/keys.ts";
import type { FfmpegTools } from "../processing/ffmpeg.ts";
import { checkPictureSize } from "../processing/limits.ts";
import { readMatroskaHead } from "../processing/matroska.ts";
import {
  mp4TakesAudio,
  mp4TakesVideo,
  passthroughFlags,
} from "../processing/passes.ts";
import { openChunkStream } from "../recordings/source.ts";
import {
  abandonIfLapsed,
  claimLiveEncode,
  endLiveEncode,
  LiveEncodeStopped,
  readClaim,
  skipLiveEncode,
} from "./claim.ts";
import { type LiveEncodePlan, LiveEncodeSession } from "./session.ts";

/** Open recordings are looked at this often while a slot is free (ms). */
const SCAN_MS = 2_000;
/** How much of a recording's start is read for its header. */
const HEAD_BYTES = 256 * 1024;
/** First chunks read for the header. */
const HEAD_CHUNKS = 8;
/** Recordings remembered as judged, so a change of one costs nothing. */
const JUDGED_MAX = 10_000;

/** What judging a recording found. */
type Verdict =
  | { kind: "encode"; plan: LiveEncodePlan }
  | { kind: "skip"; reason: string }
  | { kind: "later" };

/** Starts, follows and stops the live encodes of one worker. */
export class LiveEncoder {
  #ctx: AppContext;
  #tools: FfmpegTools;
  #workerId: string;
  #sessions = new Map<
    string,
    { session: LiveEncodeSession; done: Promise<void> }
  >();
  #judged = new Set<string>();
  #timer?: ReturnType<typeof setInterval>;
  #unsubscribe?: () => void;
  #scanning?: Promise<void>;
  #again = false;
  #stopped = true;

  constructor(ctx: AppContext, tools: FfmpegTools, workerId: string) {
    this.#ctx = ctx;
    this.#tools = tools;
    this.#workerId = workerId;
  }

  get #slots(): number {
    return this.#tools.missing ? 0 : this.#ctx.config.liveEncodeSlots;
  }

  /** How many live encodes run now. */
  get busy(): number {
    return this.#sessions.size;
  }

  /**
   * Starts looking for recordings to encode. With a local KV file no other
   * process can hold a claim, so claims left running by a previous process
   * are ended `abandoned` now.
   */
  async start(): Promise<void> {
    if (this.#slots === 0) return;
    this.#stopped = false;
    if (!this.#ctx.config.sharedKv) await this.#abandonOrphans();
    this.#unsubscribe = this.#ctx.live.subscribe((rec) => this.#onChange(rec));
    this.#timer = setInterval(() => this.scan(), SCAN_MS);
    this.scan();
  }

  /** Stops every live encode (each ends `abandoned`) and waits for them. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    clearInterval(this.#timer);
    for (const { session } of this.#sessions.values()) {
      session.abort(
        new LiveEncodeStopped("stopped", "its worker stopped (shutdown)"),
      );
    }
    await this.#scanning;
    await Promise.allSettled([...this.#sessions.values()].map((s) => s.done));
  }

  /** Stops the live encode of recording `id` (deleted), if this worker runs it. */
  async cancel(id: string): Promise<void> {
    const running = this.#sessions.get(id);
    if (!running) return;
    running.session.abort(
      new LiveEncodeStopped("gone", "the recording was deleted"),
    );
    await running.done;
  }

  #onChange(rec: Recording): void {
    if (
      this.#stopped || this.#sessions.size >= this.#slots ||
      rec.status !== "recording" || rec.chunksReceived === 0 ||
      this.#judged.has(rec.id) || this.#sessions.has(rec.id)
    ) return;
    this.scan();
  }

  /** Looks at the open recordings now (one pass at a time). */
  scan(): void {
    if (this.#stopped) return;
    if (this.#scanning) {
      this.#again = true;
      return;
    }
    this.#scanning = this.#scan().catch((err) => {
      if (!this.#stopped) {
        this.#ctx.log.warn("live encode: looking for recordings failed", {
          error: String(err),
        });
      }
    }).finally(() => {
      this.#scanning = undefined;
      if (this.#again) {
        this.#again = false;
        this.scan();
      }
    });
  }

  async #scan(): Promise<void> {
    const ctx = this.#ctx;
    if (this.#sessions.size >= this.#slots) return;
    const ids: string[] = [];
    for await (
      const e of ctx.kv.list<string>({ prefix: openRecordingPrefix() })
    ) {
      if (!this.#judged.has(e.value) && !this.#sessions.has(e.value)) {
        ids.push(e.value);
      }
    }
    for (const id of ids) {
      if (this.#stopped || this.#sessions.size >= this.#slots) return;
      const claim = await readClaim(ctx, id);
      if (claim.value) {
        this.#remember(id);
        if (claim.value.state === "running") await abandonIfLapsed(ctx, id);
        continue;
      }
      const rec = (await ctx.kv.get<Recording>(recordingKey(id))).value;
      if (!rec || rec.status !== "recording" || rec.chunksReceived === 0) {
        continue;
      }
      const verdict = await this.#judge(rec);
      if (verdict.kind === "later") continue;
      this.#remember(id);
      if (verdict.kind === "skip") {
        await skipLiveEncode(ctx, id, verdict.reason);
        continue;
      }
      const firstAt = rec.arrivals?.start ?? rec.createdAt;
      const maxLagMs = ctx.config.liveEncodeMaxLagS * 1000;
      if (Date.now() - firstAt > maxLagMs) {
        await skipLiveEncode(
          ctx,
          id,
          "no live-encode slot was free while it could still be caught up",
        );
        continue;
      }
      const held = await claimLiveEncode(ctx, id, this.#workerId);
      if (held) this.#run(id, held, verdict.plan);
    }
  }

  #run(
    id: string,
    held: NonNullable<Awaited<ReturnType<typeof claimLiveEncode>>>,
    plan: LiveEncodePlan,
  ): void {
    const session = new LiveEncodeSession(
      this.#ctx,
      this.#tools,
      id,
      held,
      plan,
    );
    this.#ctx.log.info("live encode started", { recording: id });
    const done = session.run().finally(() => {
      this.#sessions.delete(id);
      this.scan();
    });
    this.#sessions.set(id, { session, done });
  }

  #remember(id: string): void {
    this.#judged.add(id);
    if (this.#judged.size > JUDGED_MAX) {
      this.#judged.delete(this.#judged.values().next().value!);
    }
  }

  /** Reads the recording's header from its first chunks and decides. */
  async #judge(rec: Recording): Promise<Verdict> {
    const ctx = this.#ctx;
    const chunks: ChunkEntry[] = [];
    for await (
      const e of ctx.kv.list<ChunkEntry>({ prefix: chunkPrefix(rec.id) }, {
        limit: HEAD_CHUNKS,
      })
    ) chunks.push(e.value);
    if (chunks.length === 0 || chunks[0].index !== 0) return { kind: "later" };
    const head = await readStart(openChunkStream(ctx, rec.id, chunks));
    const kind = mediaKind(head);
    if (kind === "mp4") {
      return {
        kind: "skip",
        reason: "an MP4 recording's MP4 is a stream copy",
      };
    }
    const parsed = kind === "webm" ? readMatroskaHead(head) : null;
    if (!parsed) {
      const whole = chunks.length === HEAD_CHUNKS || head.length >= HEAD_BYTES;
      return whole
        ? { kind: "skip", reason: "its header could not be read" }
        : { kind: "later" };
    }
    const video = parsed.tracks.find((t) => t.type === "video");
    const audio = parsed.tracks.find((t) => t.type === "audio");
    if (!video) return { kind: "skip", reason: "it has no video" };
    if (mp4TakesVideo(video.codecName)) {
      return { kind: "skip", reason: "its MP4 is a stream copy" };
    }
    try {
      checkPictureSize(video.width ?? 0, video.height ?? 0, ctx.config);
    } catch (err) {
      return { kind: "skip", reason: (err as Error).message };
    }
    return {
      kind: "encode",
      plan: {
        width: video.width ?? 0,
        height: video.height ?? 0,
        audio: !!audio,
        copyAudio: !audio || mp4TakesAudio(audio.codecName),
        passthrough: passthroughFlags(this.#tools),
      },
    };
  }

  /** Ends the claims a previous process of this KV left running. */
  async #abandonOrphans(): Promise<void> {
    for await (
      const e of this.#ctx.kv.list<LiveEncodeClaim>({
        prefix: liveEncodePrefix(),
      })
    ) {
      if (e.value.state !== "running") continue;
      await endLiveEncode(this.#ctx, e.value.videoId, {
        state: "abandoned",
        onlyIf: (c) => c.state === "running",
        fields: { reason: "the server restarted while it ran" },
      });
    }
  }
}

/** Up to {@link HEAD_BYTES} from the start of a stream (then cancelled). */
async function readStart(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const out = new Uint8Array(HEAD_BYTES);
  let filled = 0;
  const reader = stream.getReader();
  try {
    while (filled < HEAD_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      const n = Math.min(value.length, HEAD_BYTES - filled);
      out.set(value.subarray(0, n), filled);
      filled += n;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return out.subarray(0, filled);
}
