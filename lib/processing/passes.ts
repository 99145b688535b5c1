/**
 * The pieces of processing's ffmpeg runs: which codecs each container
 * takes as they are, the codec and poster arguments, the poster run, and
 * where the main passes read the recording (the stored data file in place,
 * or the chunks through stdin).
 */

import { resolve } from "node:path";
import type { AppContext } from "../core/context.ts";
import type { Logger } from "../core/log.ts";
import {
  type FfmpegTools,
  type ProbeInput,
  runFfmpeg,
  type RunOptions,
} from "./ffmpeg.ts";
import type { RunTimeout } from "./limits.ts";
import { readMatroskaHead } from "./matroska.ts";
import { fileUrl, subfileUrl } from "./urls.ts";
import { openChunkStream } from "../recordings/source.ts";
import { type ChunkRef, hasLocalPaths } from "../storage/storage.ts";

/** Progress of a processing run: `fraction` from 0 to 1 and a stage name. */
export type ProgressCallback = (fraction: number, stage: string) => void;

/** Video codecs the MP4 container holds as they are. */
const MP4_VIDEO = new Set(["h264", "hevc", "vp9", "av1"]);
/** Audio codecs the MP4 container holds as they are. */
const MP4_AUDIO = new Set(["aac", "opus", "mp3", "alac", "flac"]);
/** Codecs that fit WebM; anything else goes to Matroska. */
const WEBM_VIDEO = new Set(["vp8", "vp9", "av1"]);
const WEBM_AUDIO = new Set(["opus", "vorbis"]);

/** Whether the MP4 takes this video codec (ffprobe's name) as it is. */
export function mp4TakesVideo(codec: string): boolean {
  return MP4_VIDEO.has(codec);
}

/** Whether the MP4 takes this audio codec (ffprobe's name) as it is. */
export function mp4TakesAudio(codec: string): boolean {
  return MP4_AUDIO.has(codec);
}

/** Whether streams of these codecs (absent: none) fit WebM; else Matroska. */
export function fitsWebm(video?: string, audio?: string): boolean {
  return (video === undefined || WEBM_VIDEO.has(video)) &&
    (audio === undefined || WEBM_AUDIO.has(audio));
}

/** The streams every output takes: the first video and the first audio. */
export const MAIN_STREAMS: readonly string[] = [
  "-map",
  "0:v:0?",
  "-map",
  "0:a:0?",
];

/**
 * The MP4's codec arguments: streams copied when the MP4 can hold them,
 * else H.264 (`passthrough` keeps the recording's frame timing) and AAC.
 */
export function mp4CodecArgs(
  copyVideo: boolean,
  copyAudio: boolean,
  passthrough: string[],
): string[] {
  const video = copyVideo ? ["-c:v", "copy"] : h264Args(passthrough);
  return [...video, ...mp4AudioArgs(copyAudio)];
}

/**
 * The H.264 encode of every MP4 tapedeck makes (`passthrough` keeps the
 * recording's frame timing, see {@link passthroughFlags}).
 */
export function h264Args(passthrough: string[]): string[] {
  return [
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-crf",
    "23",
    "-pix_fmt",
    "yuv420p",
    ...passthrough,
  ];
}

/** The MP4's audio arguments: copied when it takes the codec, else AAC. */
export function mp4AudioArgs(copyAudio: boolean): string[] {
  return copyAudio ? ["-c:a", "copy"] : ["-c:a", "aac", "-b:a", "128k"];
}

/** The output arguments of a finished MP4: faststart, written to `url`. */
export function mp4OutputArgs(url: string): string[] {
  return ["-strict", "-2", "-movflags", "+faststart", "-f", "mp4", url];
}

/** The poster's output arguments: one JPEG frame written to `url`. */
export function posterOutputArgs(url: string): string[] {
  return ["-frames:v", "1", "-q:v", "3", "-f", "image2", url];
}

/**
 * The flags of a re-encode that keep the recording's frame timing: every
 * frame with its own timestamp (no frames made up or dropped for a
 * constant rate), in the input's time base (milliseconds for WebM), not
 * rounded to a frame rate ffmpeg guessed.
 */
export function passthroughFlags(tools: FfmpegTools): string[] {
  const [major, minor] = tools.version;
  return major > 5 || (major === 5 && minor >= 1)
    ? ["-fps_mode", "passthrough", "-enc_time_base:v", "-1"]
    : ["-vsync", "passthrough"];
}

/** How much of the finished WebM/MKV is read for its Duration. */
const FINISHED_HEAD_BYTES = 64 * 1024;
/** The poster run is given at most this long (it reads only the first chunks). */
const POSTER_TIMEOUT_MS = 60_000;

/** The first `n` bytes of a file (fewer when it is shorter). */
export async function readHead(path: string, n: number): Promise<Uint8Array> {
  const file = await Deno.open(path);
  try {
    const buf = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const read = await file.read(buf.subarray(filled));
      if (read === null) break;
      filled += read;
    }
    return buf.subarray(0, filled);
  } finally {
    file.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).size > 0;
  } catch {
    return false;
  }
}

/**
 * Makes the poster from the recording's first chunks: the frame at 1 s, or
 * the first frame when the head holds less than 1 s of video. Returns
 * whether a poster was made; a failure is logged, not thrown (a recording
 * without a poster is still a good recording), except a cancellation.
 */
export async function makePoster(
  tools: FfmpegTools,
  head: ProbeInput,
  out: string,
  signal: AbortSignal,
  options: { timeoutMs: number; maxPixels: number; maxMemoryBytes: number },
  log: Logger,
): Promise<boolean> {
  for (const seek of [["-ss", "1"], []]) {
    try {
      await runFfmpeg(tools, [
        "-protocol_whitelist",
        head.whitelist,
        "-f",
        head.format,
        "-max_pixels",
        String(options.maxPixels),
        ...seek,
        "-i",
        head.url,
        ...posterOutputArgs(fileUrl(out)),
      ], {
        signal,
        timeoutMs: options.timeoutMs,
        maxMemoryBytes: options.maxMemoryBytes,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      log.warn("no poster: the recording is published without one", {
        file: out.split("/").at(-1),
        error: (err as Error).message,
      });
      return false;
    }
    if (await exists(out)) return true;
  }
  return false;
}

/**
 * The duration of a finished WebM/MKV, as the muxer wrote it into the
 * file's header; `fallbackS` (ffmpeg's last output time) when it cannot be
 * read there.
 */
export async function finishedDurationS(
  path: string,
  fallbackS: number,
): Promise<number> {
  const finished = readMatroskaHead(await readHead(path, FINISHED_HEAD_BYTES));
  return finished?.durationS ?? fallbackS;
}

/** A poster run started beside a main pass, with a signal of its own. */
export interface PosterRun {
  /** Whether a poster was made (rejects only when the run was stopped). */
  made: Promise<boolean>;
  /** Stops the run. */
  stop(): void;
  /** Lets go of the caller's signal: aborting it no longer stops the run. */
  release(): void;
}

/**
 * Starts {@link makePoster} from `head` (none: no poster, `made` is false)
 * into `out`, with its own signal so a failed main pass can stop it too;
 * `signal` (the run's) stops it until {@link PosterRun.release}. Its
 * timeout is the run's, at most POSTER_TIMEOUT_MS.
 */
export function startPoster(
  ctx: AppContext,
  tools: FfmpegTools,
  head: ProbeInput | undefined,
  out: string,
  timeoutMs: number,
  signal?: AbortSignal,
): PosterRun {
  const control = new AbortController();
  const stop = () => control.abort();
  signal?.addEventListener("abort", stop);
  if (signal?.aborted) stop();
  const made = head
    ? makePoster(
      tools,
      head,
      out,
      control.signal,
      {
        timeoutMs: Math.min(timeoutMs, POSTER_TIMEOUT_MS),
        maxPixels: ctx.config.maxVideoPixels,
        maxMemoryBytes: ctx.config.ffmpegMaxMemoryBytes,
      },
      ctx.log,
    )
    : Promise.resolve(false);
  // Awaited by the caller only after its main pass: a poster stopped
  // before that must not count as an unhandled rejection meanwhile.
  made.catch(() => {});
  return {
    made,
    stop,
    release: () => signal?.removeEventListener("abort", stop),
  };
}

/**
 * Runs `main` (a main pass and what follows it) beside `poster`: when it
 * fails, the poster is stopped and waited for before the error is thrown;
 * either way the poster lets go of the run's signal at the end.
 */
export async function besidePoster<T>(
  poster: PosterRun,
  main: () => Promise<T>,
): Promise<T> {
  try {
    return await main();
  } catch (err) {
    poster.stop();
    await poster.made.catch(() => {});
    throw err;
  } finally {
    poster.release();
  }
}

/** Where the recording's chunks lie in one local file, in order, from offset 0. */
export type LocalInput = { path: string; end: number } | null;

/**
 * The recording's data file when ffmpeg can read it in place: the chunks
 * lie in it one after another, in index order, from offset 0 (one client
 * sending in order, the usual case), and its path is one the `subfile`
 * protocol can carry. Null otherwise.
 */
export async function inPlace(
  ctx: AppContext,
  id: string,
  chunks: ChunkRef[],
): Promise<LocalInput> {
  if (!hasLocalPaths(ctx.storage)) return null;
  const local = await ctx.storage.localPathOf(id, chunks);
  if (!local) return null;
  const path = resolve(local.path);
  // The subfile URL ends its options at ",,:": keep paths with commas on
  // the stdin route.
  return path.includes(",") ? null : { path, end: local.end };
}

/** The ffmpeg input of a main pass. */
export interface MainInput {
  args: string[];
  /** Bytes for stdin, when the chunks are streamed. */
  stream?: ReadableStream<Uint8Array>;
  /** Whether the file is read in place (progress from ffmpeg's `total_size` then tracks it). */
  inPlace: boolean;
}

/**
 * The first arguments of a main pass over the whole recording: the
 * protocols and demuxer (`format`) it may use, the picture limit, `input`,
 * and the streams every output takes ({@link MAIN_STREAMS}).
 */
export function mainInputArgs(
  input: MainInput,
  format: string,
  maxPixels: number,
): string[] {
  return [
    "-protocol_whitelist",
    input.inPlace ? "file,subfile" : "file,pipe",
    "-fflags",
    "+genpts",
    "-f",
    format,
    "-max_pixels",
    String(maxPixels),
    ...input.args,
    ...MAIN_STREAMS,
  ];
}

/**
 * The run options every main pass has: the run's `signal` and `timeout`,
 * the memory limit, and the bytes for stdin when `input` is streamed.
 */
export function mainPassOptions(
  ctx: AppContext,
  input: MainInput,
  timeout: RunTimeout,
  signal: AbortSignal | undefined,
): RunOptions {
  return {
    signal,
    timeoutMs: timeout.ms,
    timeoutText: timeout.text,
    maxMemoryBytes: ctx.config.ffmpegMaxMemoryBytes,
    input: input.stream,
  };
}

/**
 * A main pass's input: the data file read in place through ffmpeg's
 * `subfile` protocol, up to the end of the last chunk (so bytes past it,
 * such as an uncommitted append that may grow while ffmpeg reads, are never
 * read), else the chunks streamed to ffmpeg's stdin.
 */
export function mainInput(
  ctx: AppContext,
  id: string,
  chunks: ChunkRef[],
  local: LocalInput,
  progressOf: (bytes: number) => void,
): MainInput {
  if (local) {
    return { args: ["-i", subfileUrl(local.path, local.end)], inPlace: true };
  }
  let fed = 0;
  const stream = openChunkStream(ctx, id, chunks).pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(piece, controller) {
        fed += piece.length;
        progressOf(fed);
        controller.enqueue(piece);
      },
    }),
  );
  return { args: ["-i", "pipe:0"], stream, inPlace: false };
}
