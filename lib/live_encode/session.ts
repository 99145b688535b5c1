// Over 400 lines: one encode's lifecycle (ffmpeg run, follow, tick, end) shares its private state; split would expose it.
/**
 * One live encode: a claimed recording's chunks fed to ffmpeg as they are
 * committed (lib/live_encode/feed.ts), encoded at nice 19 into fragmented
 * MP4 HLS segments in a scratch folder, each published as it is finished
 * (lib/live_encode/segments.ts), with the claim and the record's view
 * written at most every LIVE_WRITE_MS (which renews the lease). It ends
 * `done` once the settled recording's every chunk went in and ffmpeg ended
 * cleanly, with exactly those chunks in the claim's `input`; otherwise
 * `abandoned` with the reason (ffmpeg failed, a limit, the encode fell
 * LIVE_ENCODE_MAX_LAG_S behind, the worker stops). Deleted recordings and
 * claims another writer ended are left alone (what was stored for a deleted
 * recording is removed).
 */

import type { AppContext } from "../core/context.ts";
import {
  type LiveEncodeClaim,
  liveEncodeKey,
  type Recording,
  recordingKey,
} from "../kv/keys.ts";
import { type FfmpegTools, runFfmpeg } from "../processing/ffmpeg.ts";
import { checkEncodedFrames } from "../processing/limits.ts";
import { h264Args, mp4AudioArgs } from "../processing/passes.ts";
import {
  endLiveEncode,
  type HeldClaim,
  LiveEncodeStopped,
  writeClaim,
} from "./claim.ts";
import { LIVE_SEGMENT_S, LIVE_WRITE_MS } from "./contract.ts";
import { ChunkFeed, fedOf } from "./feed.ts";
import { LIVE_STREAM_FILE, SegmentPublisher } from "./segments.ts";
import { fileUrl } from "../processing/urls.ts";

/** The CPU priority of live encodes: the lowest. */
export const LIVE_NICE = 19;
/** How often segments are looked for and the lag judged (ms). */
const TICK_MS = 500;

/** What a live encode needs to know of the recording it encodes. */
export interface LiveEncodePlan {
  /** The picture, for the MAX_ENCODE_PIXELS check while it runs. */
  width: number;
  height: number;
  /** Whether the recording has audio, and whether the MP4 takes it as it is. */
  audio: boolean;
  copyAudio: boolean;
  /** ffmpeg's flags that keep the frame timing (lib/processing/passes.ts). */
  passthrough: string[];
}

/**
 * The ffmpeg arguments of a live encode: the WebM from stdin, H.264 with a
 * keyframe every {@link LIVE_SEGMENT_S} s and the frame timing kept, audio
 * copied when the MP4 takes it, as one fragmented MP4 (a fragment per
 * keyframe) into `work` (lib/live_encode/segments.ts cuts it).
 */
export function liveEncodeArgs(
  work: string,
  plan: LiveEncodePlan,
  maxPixels: number,
): string[] {
  return [
    "-protocol_whitelist",
    "pipe",
    "-analyzeduration",
    "2000000",
    "-f",
    "matroska",
    "-max_pixels",
    String(maxPixels),
    "-i",
    "pipe:0",
    "-map",
    "0:v:0",
    "-map",
    "0:a:0?",
    ...h264Args(plan.passthrough),
    "-force_key_frames",
    `expr:gte(t,n_forced*${LIVE_SEGMENT_S})`,
    ...mp4AudioArgs(plan.copyAudio),
    "-strict",
    "-2",
    "-f",
    "mp4",
    "-movflags",
    "frag_keyframe+empty_moov+default_base_moof",
    // Written front to back, never seeking back, each packet flushed: it
    // is read as it grows.
    "-seekable",
    "0",
    "-flush_packets",
    "1",
    fileUrl(`${work}/${LIVE_STREAM_FILE}`),
  ];
}

/** Runs one claimed live encode until it is done or stops. */
export class LiveEncodeSession {
  readonly id: string;
  #ctx: AppContext;
  #tools: FfmpegTools;
  #plan: LiveEncodePlan;
  #held: HeldClaim;
  #control = new AbortController();
  #wakers: (() => void)[] = [];
  #lastWriteAt = Date.now();
  #lastWritten = "";
  #writing?: Promise<void>;
  #frames = 0;
  #outTimeS = 0;
  #progressAt = Date.now();
  #status: Recording["status"] = "recording";

  constructor(
    ctx: AppContext,
    tools: FfmpegTools,
    id: string,
    held: HeldClaim,
    plan: LiveEncodePlan,
  ) {
    this.#ctx = ctx;
    this.#tools = tools;
    this.id = id;
    this.#held = held;
    this.#plan = plan;
  }

  /** Stops the encode (it ends `abandoned` with `why`, unless gone or lost). */
  abort(why: LiveEncodeStopped): void {
    if (!this.#control.signal.aborted) this.#control.abort(why);
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#wakers.splice(0)) w();
  }

  /** Resolves after `ms`, or sooner when the recording or claim changed. */
  #waitChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakers.push(done);
    });
  }

  /** Runs the encode to its end; never throws. */
  async run(): Promise<void> {
    const ctx = this.#ctx;
    const signal = this.#control.signal;
    const work = await ctx.storage.makeWorkDir(this.id);
    const feed = new ChunkFeed(
      ctx,
      this.id,
      (ms) => this.#waitChange(ms),
      signal,
    );
    const segments = new SegmentPublisher(ctx, this.id, work);
    const watching = this.#follow(feed);
    let ticking: Promise<void> | undefined;
    const ticker = setInterval(() => {
      ticking ??= this.#tick(feed, segments).catch((err) =>
        this.abort(asStop(err))
      ).finally(() => ticking = undefined);
    }, TICK_MS);
    let outcome: LiveEncodeStopped | undefined;
    try {
      await runFfmpeg(
        this.#tools,
        liveEncodeArgs(work, this.#plan, ctx.config.maxVideoPixels),
        {
          input: feed.stream(),
          signal,
          nice: LIVE_NICE,
          maxMemoryBytes: ctx.config.ffmpegMaxMemoryBytes,
          onProgress: (t) => {
            if (t > this.#outTimeS) {
              this.#outTimeS = t;
              this.#progressAt = Date.now();
            }
          },
          onFrames: (frames) => {
            this.#frames = frames;
            try {
              checkEncodedFrames(
                frames,
                this.#plan.width,
                this.#plan.height,
                ctx.config,
              );
            } catch (err) {
              this.abort(
                new LiveEncodeStopped("failed", (err as Error).message),
              );
            }
          },
        },
      );
      if (signal.aborted) throw signal.reason;
      if (!feed.ended) {
        throw new LiveEncodeStopped(
          "ended",
          "ffmpeg ended before the recording did",
        );
      }
    } catch (err) {
      outcome = signal.aborted ? asStop(signal.reason) : asStop(err);
    }
    clearInterval(ticker);
    await ticking;
    try {
      if (!outcome) {
        await segments.publishNew(true);
        if (!segments.ended) {
          outcome = new LiveEncodeStopped(
            "failed",
            "ffmpeg's output did not end with a whole fragment",
          );
        }
      }
      await this.#writing;
      await this.#finish(feed, segments, outcome);
    } catch (err) {
      this.#ctx.log.warn("live encode: could not record its end", {
        recording: this.id,
        error: (err as Error).message,
      });
    } finally {
      this.#control.abort(outcome ?? "done");
      await watching;
      await ctx.storage.removeWorkDir(work);
    }
  }

  /**
   * Follows the recording and the claim: wakes the feed on every change,
   * stops the encode when another writer ended the claim or the recording
   * was deleted.
   */
  async #follow(feed: ChunkFeed): Promise<void> {
    const kv = this.#ctx.kv;
    const stream = kv.watch<[Recording, LiveEncodeClaim]>([
      recordingKey(this.id),
      liveEncodeKey(this.id),
    ]);
    const reader = stream.getReader();
    const stop = () => reader.cancel().catch(() => {});
    this.#control.signal.addEventListener("abort", stop);
    try {
      while (!this.#control.signal.aborted) {
        const { done, value } = await reader.read();
        if (done) return;
        const [rec, claim] = value;
        if (rec.versionstamp === null) {
          this.abort(
            new LiveEncodeStopped("gone", "the recording was deleted"),
          );
        } else {
          this.#status = rec.value.status;
          feed.receivedBytes = Math.max(
            feed.receivedBytes,
            rec.value.bytesReceived,
          );
        }
        if (
          claim.versionstamp !== this.#held.stamp &&
          claim.value?.state !== "running"
        ) {
          this.abort(
            new LiveEncodeStopped(
              "lost",
              claim.value?.reason ?? "its claim was ended elsewhere",
            ),
          );
        }
        this.#wake();
      }
    } catch {
      // the watch ends with the KV
    } finally {
      this.#control.signal.removeEventListener("abort", stop);
    }
  }

  /** Publishes finished segments, judges the lag, writes the claim when due. */
  async #tick(feed: ChunkFeed, segments: SegmentPublisher): Promise<void> {
    if (this.#control.signal.aborted) return;
    await segments.publishNew();
    const lagS = this.#lagS(feed);
    const maxLag = this.#ctx.config.liveEncodeMaxLagS;
    if (lagS > maxLag && this.#status !== "complete") {
      throw new LiveEncodeStopped(
        "behind",
        `it fell ${
          Math.round(lagS)
        } s behind the recording (LIVE_ENCODE_MAX_LAG_S is ${maxLag})`,
      );
    }
    const claim = this.#claimNow(feed, segments, lagS);
    const view = `${claim.segments}`;
    const now = Date.now();
    const viewDue = view !== this.#lastWritten &&
      now - this.#lastWriteAt >= LIVE_WRITE_MS;
    const leaseDue = now - this.#lastWriteAt >= this.#ctx.config.jobLeaseMs / 3;
    if (!viewDue && !leaseDue) return;
    this.#writing = (async () => {
      const stamp = await writeClaim(
        this.#ctx,
        this.id,
        this.#held.stamp,
        claim,
        viewDue,
      );
      if (stamp === null) {
        throw new LiveEncodeStopped("lost", "its claim was ended elsewhere");
      }
      this.#held = { claim, stamp };
      this.#lastWriteAt = now;
      if (viewDue) this.#lastWritten = view;
    })();
    await this.#writing;
  }

  /**
   * How far the encode lags the media received, in seconds: the media time
   * received is estimated from the bytes, at the bytes per second of media
   * that went into ffmpeg so far; and while bytes wait that ffmpeg does not
   * take, at least the time since its output last advanced.
   */
  #lagS(feed: ChunkFeed): number {
    const received = Math.max(feed.receivedBytes, feed.fedBytes);
    const waiting = received > feed.fedBytes;
    const stalled = waiting ? (Date.now() - this.#progressAt) / 1000 : 0;
    const estimate = feed.fedBytes > 0
      ? this.#outTimeS * (received / feed.fedBytes - 1)
      : 0;
    return Math.max(estimate, stalled);
  }

  #claimNow(
    feed: ChunkFeed,
    segments: SegmentPublisher,
    lagS: number,
  ): LiveEncodeClaim {
    const now = Date.now();
    return {
      ...this.#held.claim,
      leaseUntil: now + this.#ctx.config.jobLeaseMs,
      updatedAt: now,
      progressAt: this.#progressAt,
      segments: segments.published.length,
      encodedS: segments.encodedS,
      lagS: Math.round(lagS * 10) / 10,
      fed: fedOf(feed),
    };
  }

  /** Records the end: `done`, or `abandoned` with the reason. */
  async #finish(
    feed: ChunkFeed,
    segments: SegmentPublisher,
    stop: LiveEncodeStopped | undefined,
  ): Promise<void> {
    const ctx = this.#ctx;
    const base = this.#claimNow(feed, segments, stop ? this.#lagS(feed) : 0);
    if (stop?.kind === "gone") {
      const rec = await ctx.kv.get(recordingKey(this.id));
      // Published after the delete removed the rest: remove it too.
      if (rec.versionstamp === null) {
        await ctx.storage.removeRecording(this.id).catch(() => {});
      }
      return;
    }
    if (stop?.kind === "lost") return;
    const ended = await endLiveEncode(ctx, this.id, {
      state: stop ? "abandoned" : "done",
      stamp: this.#held.stamp,
      fields: stop ? { ...base, reason: stop.message } : {
        ...base,
        lagS: 0,
        input: fedOf(feed),
        frames: this.#frames,
      },
    });
    ctx.log.info(stop ? "live encode abandoned" : "live encode done", {
      recording: this.id,
      reason: stop?.message,
      segments: base.segments,
      encoded_s: Math.round(base.encodedS * 10) / 10,
      recorded: ended,
    });
  }
}

/** Any error as the stop it means. */
function asStop(err: unknown): LiveEncodeStopped {
  if (err instanceof LiveEncodeStopped) return err;
  return new LiveEncodeStopped(
    "failed",
    (err as Error)?.message ?? String(err),
  );
}
