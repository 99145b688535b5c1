/**
 * Processing a recording whose MP4 needs a re-encode (VP8), file by file:
 * first the seekable WebM (or MKV) with streams copied and the poster,
 * published durably and handed to `listEarly` (the job lists them as soon
 * as no chunk can join the recording any more), then the MP4: the live
 * encode's segments remuxed when it is done and holds exactly this
 * recording (lib/live_encode/reuse.ts), else encoded here as without one.
 * A run that follows one that listed the WebM already reuses it (a listed
 * file never changes) and makes only the MP4.
 */

import type { AppContext } from "../core/context.ts";
import type { MadeFiles, MediaFacts } from "../kv/keys.ts";
import {
  awaitLiveEncode,
  hasLiveEncode,
  remuxLiveEncode,
} from "../live_encode/reuse.ts";
import { canDeferSync, type ChunkRef } from "../storage/storage.ts";
import type { BadRecordingError } from "./bad_recording.ts";
import { type FfmpegTools, type ProbeInput, runFfmpeg } from "./ffmpeg.ts";
import { checkEncodedFrames, type RunTimeout } from "./limits.ts";
import {
  besidePoster,
  finishedDurationS,
  type LocalInput,
  mainInput,
  mainInputArgs,
  mainPassOptions,
  mp4CodecArgs,
  mp4OutputArgs,
  passthroughFlags,
  type ProgressCallback,
  startPoster,
} from "./passes.ts";
import { fileUrl } from "./urls.ts";

/** What processing found out about the recording before any pass. */
export interface ReencodePlan {
  id: string;
  /** The run's scratch folder. */
  work: string;
  chunks: ChunkRef[];
  local: LocalInput;
  format: "matroska" | "mov";
  /** The first chunks, for the poster. */
  head: ProbeInput;
  seekableName: string;
  mp4Name: string;
  posterName: string;
  /** The seekable file is WebM (else Matroska). */
  webm: boolean;
  copyAudio: boolean;
  /** The largest picture, and the recording's video frames. */
  picture: { width: number; height: number };
  frames: number;
  timeout: RunTimeout;
  /** The files a run before this one listed already (the seekable one, the poster). */
  listed?: {
    durationS: number;
    poster?: string;
    sizes: Record<string, number>;
  };
  /** The media facts of the files made. */
  mediaOf(
    sizes: Record<string, number>,
    durationS: number,
    mp4Live?: boolean,
  ): MediaFacts;
}

/** How a run reports and hands over what it made. */
export interface ReencodeOptions {
  signal?: AbortSignal;
  report: ProgressCallback;
  /**
   * Lists the files made early; resolves once they are listed (the
   * recording is settled), rejects when they cannot be (a chunk came: the
   * run is stopped and made again).
   */
  listEarly?: (early: MadeFiles) => Promise<void>;
}

/** Makes the WebM and poster, has them listed, then makes the MP4. */
export async function reencodeProgressively(
  ctx: AppContext,
  tools: FfmpegTools,
  plan: ReencodePlan,
  options: ReencodeOptions,
): Promise<MadeFiles> {
  const { id, work } = plan;
  const input = {
    bytes: plan.chunks.reduce((n, c) => n + c.size, 0),
    chunks: plan.chunks.length,
  };
  let early: {
    durationS: number;
    poster?: string;
    sizes: Record<string, number>;
  };
  let listed: Promise<void>;
  if (plan.listed) {
    early = plan.listed;
    listed = Promise.resolve();
  } else {
    early = await makeSeekable(ctx, tools, plan, options);
    listed = options.listEarly?.({
      files: [plan.seekableName],
      poster: early.poster,
      media: plan.mediaOf(early.sizes, early.durationS),
      durationS: early.durationS,
      input,
    }) ?? Promise.resolve();
  }
  // Awaited before this returns; a failure stops the run there.
  listed.catch(() => {});
  const mp4 = `${work}/${plan.mp4Name}`;
  let live = false;
  if (options.listEarly && await hasLiveEncode(ctx, id)) {
    options.report(0.2, "waiting for the live encode");
    await listed;
    const verdict = await awaitLiveEncode(ctx, id, input, {
      signal: options.signal,
      onProgress: (s) =>
        options.report(
          0.2 + 0.6 * Math.min(1, s / Math.max(1, early.durationS)),
          "waiting for the live encode",
        ),
    });
    if (verdict.use) {
      try {
        await remuxLiveEncode(ctx, tools, id, verdict.claim, mp4, {
          signal: options.signal,
          timeoutMs: plan.timeout.ms,
          frames: plan.frames,
          onProgress: (f) => options.report(0.8 + 0.15 * f, "remuxing mp4"),
        });
        live = true;
      } catch (err) {
        options.signal?.throwIfAborted();
        ctx.log.warn("the live encode could not be used; encoding the mp4", {
          recording: id,
          error: (err as Error).message,
        });
      }
    } else {
      ctx.log.info("encoding the mp4 without a live encode", {
        recording: id,
        reason: verdict.reason,
      });
    }
  }
  if (!live) await encodeMp4(ctx, tools, plan, mp4, early.durationS, options);
  options.signal?.throwIfAborted();
  // Flushed after the commit where the storage can defer it.
  const deferred = canDeferSync(ctx.storage);
  const info = await ctx.storage.publishFile(id, plan.mp4Name, mp4, {
    sync: !deferred,
  });
  await listed;
  return {
    files: [plan.mp4Name, plan.seekableName],
    poster: early.poster,
    media: plan.mediaOf(
      { ...early.sizes, [plan.mp4Name]: info.size },
      early.durationS,
      live || undefined,
    ),
    durationS: early.durationS,
    input,
    unflushed: deferred ? [plan.mp4Name] : undefined,
  };
}

/**
 * The seekable WebM/MKV (streams copied, duration and cues written) and,
 * beside it, the poster; both published durably (they are listed before
 * the job commits, with nothing left to flush).
 */
async function makeSeekable(
  ctx: AppContext,
  tools: FfmpegTools,
  plan: ReencodePlan,
  options: ReencodeOptions,
): Promise<
  { durationS: number; poster?: string; sizes: Record<string, number> }
> {
  const config = ctx.config;
  const total = plan.chunks.reduce((n, c) => n + c.size, 0);
  const progressOf = (bytes: number) =>
    options.report(0.05 + 0.1 * Math.min(1, bytes / total), "making webm");
  const input = mainInput(ctx, plan.id, plan.chunks, plan.local, progressOf);
  const seekable = `${plan.work}/${plan.seekableName}`;
  let lastOutTimeS = 0;
  options.report(0.05, "making webm");
  const pass = runFfmpeg(tools, [
    ...mainInputArgs(input, plan.format, config.maxVideoPixels),
    "-c",
    "copy",
    "-f",
    plan.webm ? "webm" : "matroska",
    fileUrl(seekable),
  ], {
    ...mainPassOptions(ctx, input, plan.timeout, options.signal),
    onBytes: input.inPlace ? progressOf : undefined,
    onProgress: (t) => lastOutTimeS = Math.max(lastOutTimeS, t),
  });
  const posterRun = startPoster(
    ctx,
    tools,
    plan.head,
    `${plan.work}/${plan.posterName}`,
    plan.timeout.ms,
    options.signal,
  );
  const poster = await besidePoster(posterRun, async () => {
    await pass;
    return await posterRun.made ? plan.posterName : undefined;
  });
  const durationS = await finishedDurationS(seekable, lastOutTimeS);
  options.signal?.throwIfAborted();
  const sizes: Record<string, number> = {};
  for (const name of [plan.seekableName, ...(poster ? [poster] : [])]) {
    sizes[name] = (await ctx.storage.publishFile(
      plan.id,
      name,
      `${plan.work}/${name}`,
    )).size;
  }
  return { durationS, poster, sizes };
}

/**
 * Encodes the MP4 from the recording (H.264 keeping the frame timing),
 * stopped as soon as it passes MAX_ENCODE_PIXELS.
 */
async function encodeMp4(
  ctx: AppContext,
  tools: FfmpegTools,
  plan: ReencodePlan,
  out: string,
  durationS: number,
  options: ReencodeOptions,
): Promise<void> {
  const config = ctx.config;
  const stage = "encoding mp4";
  const report = (fraction: number) =>
    options.report(0.2 + 0.75 * Math.min(1, fraction), stage);
  const input = mainInput(ctx, plan.id, plan.chunks, plan.local, () => {});
  const control = new AbortController();
  const stop = () => control.abort();
  options.signal?.addEventListener("abort", stop);
  if (options.signal?.aborted) stop();
  let overLimit: BadRecordingError | undefined;
  report(0);
  try {
    await runFfmpeg(tools, [
      ...mainInputArgs(input, plan.format, config.maxVideoPixels),
      ...mp4CodecArgs(false, plan.copyAudio, passthroughFlags(tools)),
      ...mp4OutputArgs(fileUrl(out)),
    ], {
      ...mainPassOptions(ctx, input, plan.timeout, control.signal),
      onProgress: (t) => report(t / Math.max(1, durationS)),
      onFrames: (frames) => {
        try {
          checkEncodedFrames(
            frames,
            plan.picture.width,
            plan.picture.height,
            config,
          );
        } catch (err) {
          overLimit ??= err as BadRecordingError;
          stop();
        }
      },
    });
  } catch (err) {
    throw overLimit ?? err;
  } finally {
    options.signal?.removeEventListener("abort", stop);
  }
}
