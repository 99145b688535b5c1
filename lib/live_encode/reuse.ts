/**
 * What the job takes from a recording's live encode (lib/live_encode/):
 * only a finished one (`done`) whose segments hold exactly the recording's
 * final chunks, remuxed into the faststart MP4 with `-c copy`, and only
 * when the remux has every frame the recording has. A live encode that
 * died, stalled or fell behind is ended `abandoned` and nothing of it is
 * used: a VP8 recording (a tab capture) has one keyframe, at its start, so
 * a decode cannot start again mid-recording, and the job encodes the whole
 * MP4 as it does without a live encode.
 */

import type { AppContext } from "../core/context.ts";
import { type LiveEncodeClaim, liveEncodeKey } from "../kv/keys.ts";
import { type FfmpegTools, runFfmpeg } from "../processing/ffmpeg.ts";
import { fileUrl } from "../processing/urls.ts";
import type { ProcessedInput } from "../recordings/closing.ts";
import {
  abandonIfLapsed,
  endLiveEncode,
  LiveEncodeStopped,
  readClaim,
} from "./claim.ts";
import { LIVE_INIT, liveSegmentName } from "./contract.ts";

/** Whether to take the live encode, and why not. */
export type LiveVerdict =
  | { use: true; claim: LiveEncodeClaim }
  | { use: false; reason: string };

/** Whether recording `id` has a live encode the job may wait for. */
export async function hasLiveEncode(
  ctx: AppContext,
  id: string,
): Promise<boolean> {
  const state = (await readClaim(ctx, id)).value?.state;
  return state === "running" || state === "done";
}

/**
 * Waits for the live encode of a settled recording (`input`: its final
 * chunks) to be done, while it keeps up: one that is behind
 * (LIVE_ENCODE_MAX_LAG_S), whose lease lapsed, or whose output did not
 * advance for JOB_LEASE_MS is ended `abandoned` here. `onProgress` gets
 * the seconds encoded.
 */
export async function awaitLiveEncode(
  ctx: AppContext,
  id: string,
  input: ProcessedInput,
  options: { signal?: AbortSignal; onProgress?: (encodedS: number) => void },
): Promise<LiveVerdict> {
  const maxLag = ctx.config.liveEncodeMaxLagS;
  const stallMs = ctx.config.jobLeaseMs;
  const watch = ctx.kv.watch([liveEncodeKey(id)]).getReader();
  let wake: (() => void) | undefined;
  const following = (async () => {
    try {
      while (true) {
        const { done } = await watch.read();
        if (done) return;
        wake?.();
      }
    } catch {
      // the watch ends with the KV
    }
  })();
  try {
    while (true) {
      options.signal?.throwIfAborted();
      const claim = (await readClaim(ctx, id)).value;
      if (!claim || claim.state === "skipped") {
        return { use: false, reason: claim?.reason ?? "it had no live encode" };
      }
      if (claim.state === "abandoned") {
        return {
          use: false,
          reason: claim.reason ?? "its live encode stopped",
        };
      }
      if (claim.state === "done") {
        const same = claim.input?.bytes === input.bytes &&
          claim.input?.chunks === input.chunks;
        return same ? { use: true, claim } : {
          use: false,
          reason: "its live encode holds other chunks than the recording",
        };
      }
      const now = Date.now();
      if (claim.leaseUntil < now) {
        await abandonIfLapsed(ctx, id, now);
        continue;
      }
      if ((claim.lagS ?? 0) > maxLag) {
        await endLiveEncode(ctx, id, {
          state: "abandoned",
          onlyIf: (c) => (c.lagS ?? 0) > maxLag,
          fields: {
            reason: `it was ${
              Math.round(claim.lagS ?? 0)
            } s behind when the recording ended (LIVE_ENCODE_MAX_LAG_S is ${maxLag})`,
          },
        });
        continue;
      }
      const progressAt = claim.progressAt ?? claim.startedAt;
      if (now - progressAt > stallMs) {
        await endLiveEncode(ctx, id, {
          state: "abandoned",
          onlyIf: (c) => (c.progressAt ?? c.startedAt) === progressAt,
          fields: {
            reason: `its output did not advance for ${
              Math.round(stallMs / 1000)
            } s (JOB_LEASE_MS)`,
          },
        });
        continue;
      }
      options.onProgress?.(claim.encodedS);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 1_000);
        const onAbort = () => done();
        options.signal?.addEventListener("abort", onAbort);
        function done() {
          clearTimeout(timer);
          options.signal?.removeEventListener("abort", onAbort);
          wake = undefined;
          resolve();
        }
        wake = done;
      });
    }
  } finally {
    await watch.cancel().catch(() => {});
    await following;
  }
}

/** The remux of a live encode did not give the recording's frames. */
export class LiveRemuxMismatch extends LiveEncodeStopped {
  constructor(message: string) {
    super("failed", message);
  }
}

/**
 * Remuxes a done live encode's segments (the init segment, then every
 * media segment, read from storage as one fragmented MP4) into a faststart
 * MP4 at `out`, streams copied. Throws {@link LiveRemuxMismatch} when it
 * does not hold `frames` video frames.
 */
export async function remuxLiveEncode(
  ctx: AppContext,
  tools: FfmpegTools,
  id: string,
  claim: LiveEncodeClaim,
  out: string,
  options: {
    signal?: AbortSignal;
    timeoutMs: number;
    frames: number;
    onProgress?: (fraction: number) => void;
  },
): Promise<void> {
  const names = [LIVE_INIT];
  for (let n = 1; n <= claim.segments; n++) names.push(liveSegmentName(n));
  let frames = 0;
  await runFfmpeg(tools, [
    "-protocol_whitelist",
    "pipe",
    "-f",
    "mov",
    "-i",
    "pipe:0",
    "-map",
    "0",
    "-c",
    "copy",
    // No edit list: one would cut the last audio packet (its duration is
    // not in the fragments); the streams keep their fragments' times.
    "-use_editlist",
    "0",
    "-movflags",
    "+faststart",
    "-f",
    "mp4",
    fileUrl(out),
  ], {
    input: storedFiles(
      ctx,
      id,
      names,
      (i) => options.onProgress?.(i / names.length),
    ),
    signal: options.signal,
    timeoutMs: options.timeoutMs,
    maxMemoryBytes: ctx.config.ffmpegMaxMemoryBytes,
    onFrames: (n) => frames = n,
  });
  if (frames !== options.frames) {
    throw new LiveRemuxMismatch(
      `the live encode's segments hold ${frames} video frames, the recording ${options.frames}`,
    );
  }
}

/** Stored files of a recording, one after another, as one stream. */
function storedFiles(
  ctx: AppContext,
  id: string,
  names: string[],
  onFile: (index: number) => void,
): ReadableStream<Uint8Array> {
  async function* pieces(): AsyncGenerator<Uint8Array> {
    for (const [i, name] of names.entries()) {
      onFile(i);
      const info = await ctx.storage.statFile(id, name);
      if (!info) {
        throw new LiveRemuxMismatch(`the live file ${name} is missing`);
      }
      if (info.size === 0) continue;
      yield* await ctx.storage.openFile(id, name, 0, info.size - 1);
    }
  }
  return ReadableStream.from(pieces());
}
