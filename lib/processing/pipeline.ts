/**
 * Turns a recording's chunks into its finished files: a seekable WebM (or
 * MKV), a faststart MP4 and a poster JPEG, with progress reported as it goes.
 *
 * The path to "complete" is kept short: the codecs come from the recording's
 * own header (lib/matroska.ts; ffprobe only when that cannot be read), one
 * ffmpeg pass reads the stored data file in place (or the chunks through its
 * stdin when they are not laid out in one local file, as in object storage)
 * and writes both videos, the poster is made from the first chunks at the
 * same time, the duration is read back from the finished file's header, and
 * the files are published without fsync where the storage allows: the job
 * flushes them after committing (see lib/jobs/outcomes.ts).
 *
 * Nothing reaches ffmpeg unchecked: the recording must start like WebM or
 * MP4, every run names its demuxer and the protocols it may open, decoders
 * refuse pictures over MAX_VIDEO_PIXELS, every run has a memory limit and a
 * timeout that grows with the recording's duration, and a re-encode starts
 * only once the recording's frames are counted and found within the limits
 * (lib/processing/limits.ts). A recording over a limit fails with a
 * {@link BadRecordingError} that says which.
 */

import { resolve } from "node:path";
import type { AppContext } from "../core/context.ts";
import type { Logger } from "../core/log.ts";
import { mediaKind } from "../core/media_sniff.ts";
import {
  FfmpegError,
  type FfmpegTools,
  probe,
  type ProbeInput,
  type ProbeOptions,
  type ProbeResult,
  runFfmpeg,
} from "./ffmpeg.ts";
import type { MadeFiles, MediaFacts } from "../kv/keys.ts";
import { BadRecordingError } from "./bad_recording.ts";
import { type ByteReader, streamReader } from "./byte_reader.ts";
import {
  checkEncodedFrames,
  checkEncodeWork,
  checkPictureSize,
  runTimeout,
} from "./limits.ts";
import { type MatroskaHead, readMatroskaHead } from "./matroska.ts";
import { fileUrl, subfileUrl } from "./urls.ts";
import { measureWorkload } from "./workload.ts";
import { listChunks } from "../recordings/chunks.ts";
import { openChunkStream } from "../recordings/source.ts";
import {
  canDeferSync,
  type ChunkRef,
  hasLocalPaths,
} from "../storage/storage.ts";

export { BadRecordingError };

/** Video codecs the MP4 container holds as they are. */
const MP4_VIDEO = new Set(["h264", "hevc", "vp9", "av1"]);
/** Audio codecs the MP4 container holds as they are. */
const MP4_AUDIO = new Set(["aac", "opus", "mp3", "alac", "flac"]);
/** Codecs that fit WebM; anything else goes to Matroska. */
const WEBM_VIDEO = new Set(["vp8", "vp9", "av1"]);
const WEBM_AUDIO = new Set(["opus", "vorbis"]);

/** What processing produced. */
export type ProcessingOutput = MadeFiles;

/** How much of the recording's start is probed for its codecs (and makes the poster). */
const PROBE_BYTES = 2 * 1024 * 1024;
/** How much of the finished WebM/MKV is read for its Duration. */
const FINISHED_HEAD_BYTES = 64 * 1024;
/** The poster run is given at most this long (it reads only the first chunks). */
const POSTER_TIMEOUT_MS = 60_000;

/** Progress of a processing run: `fraction` from 0 to 1 and a stage name. */
export type ProgressCallback = (fraction: number, stage: string) => void;

/** The container a recording starts like; a BadRecordingError when neither. */
function containerOf(head: Uint8Array): "webm" | "mp4" {
  const kind = mediaKind(head);
  if (kind) return kind;
  throw new BadRecordingError(
    "The recording does not start like a WebM/Matroska or MP4 file (no EBML header or ftyp box), so it was not processed.",
  );
}

/** The first `n` bytes of a file (fewer when it is shorter). */
async function readHead(path: string, n: number): Promise<Uint8Array> {
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

/** The facts of one stream that processing uses. */
interface StreamFacts {
  /** ffprobe's codec_name ("" when unknown). */
  codec: string;
  width?: number;
  height?: number;
  channels?: number;
  sampleRate?: number;
}

function streamOf(
  probed: ProbeResult,
  type: "video" | "audio",
): StreamFacts | undefined {
  const s = probed.streams.find((s) => s.codec_type === type);
  if (!s) return undefined;
  return {
    codec: s.codec_name ?? "",
    width: s.width,
    height: s.height,
    channels: s.channels,
    sampleRate: s.sample_rate ? Number(s.sample_rate) : undefined,
  };
}

/**
 * The first video and audio stream of the recording's head: read from its
 * Matroska header (`parsed`), or by ffprobe when that cannot be read (MP4,
 * odd files).
 */
async function probeHead(
  tools: FfmpegTools,
  parsed: MatroskaHead | null,
  head: ProbeInput,
  options: ProbeOptions,
): Promise<{ video?: StreamFacts; audio?: StreamFacts }> {
  if (parsed) {
    const pick = (type: "video" | "audio"): StreamFacts | undefined => {
      const t = parsed.tracks.find((t) => t.type === type);
      return t
        ? {
          codec: t.codecName,
          width: t.width,
          height: t.height,
          channels: t.channels,
          sampleRate: t.sampleRate,
        }
        : undefined;
    };
    return { video: pick("video"), audio: pick("audio") };
  }
  let probed: ProbeResult;
  try {
    probed = await probe(tools, head, options);
  } catch (err) {
    if (err instanceof FfmpegError) {
      throw new BadRecordingError(
        `The uploaded data is not a readable recording (${err.message}).`,
      );
    }
    throw err;
  }
  return { video: streamOf(probed, "video"), audio: streamOf(probed, "audio") };
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
async function makePoster(
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

/** The ffmpeg input of the main pass. */
interface MainInput {
  args: string[];
  /** Bytes for stdin, when the chunks are streamed. */
  stream?: ReadableStream<Uint8Array>;
  /** Whether progress comes from ffmpeg's `total_size` (the file is read in place). */
  inPlace: boolean;
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
  const video = copyVideo ? ["-c:v", "copy"] : [
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
  const audio = copyAudio ? ["-c:a", "copy"] : ["-c:a", "aac", "-b:a", "128k"];
  return [...video, ...audio];
}

/** The poster's output arguments: one JPEG frame written to `url`. */
export function posterOutputArgs(url: string): string[] {
  return ["-frames:v", "1", "-q:v", "3", "-f", "image2", url];
}

function passthroughFlags(tools: FfmpegTools): string[] {
  const [major, minor] = tools.version;
  return major > 5 || (major === 5 && minor >= 1)
    ? ["-fps_mode", "passthrough"]
    : ["-vsync", "passthrough"];
}

/**
 * Processes one recording in its work folder and publishes the outputs to
 * storage, unflushed where the storage can defer the flush (then listed in
 * `unflushed`: the caller flushes them after committing). Throws
 * {@link BadRecordingError} when the input is not media or is over a
 * processing limit (lib/processing/limits.ts), and
 * {@link FfmpegError} when the main ffmpeg pass fails. A poster that
 * cannot be made is left out (the result has no `poster`) and logged: it
 * does not fail the job.
 */
export async function processRecording(
  ctx: AppContext,
  tools: FfmpegTools,
  id: string,
  options: { signal?: AbortSignal; onProgress?: ProgressCallback } = {},
): Promise<ProcessingOutput> {
  const report = options.onProgress ?? (() => {});
  const config = ctx.config;
  const maxPixels = config.maxVideoPixels;
  const maxMemoryBytes = config.ffmpegMaxMemoryBytes;
  const probeOptions: ProbeOptions = {
    timeoutMs: config.ffmpegTimeoutMs,
    maxPixels,
    maxMemoryBytes,
  };
  const work = await ctx.storage.makeWorkDir(id);
  /** The chunks' stream, when they are not in place: head, then block walk. */
  let reader: ByteReader | undefined;
  try {
    report(0.01, "probing");
    const chunks = await listChunks(ctx, id);
    if (chunks.length === 0) {
      throw new BadRecordingError("The recording has no chunks to process.");
    }
    // The head: whole chunks, the first one at least, up to PROBE_BYTES.
    let headBytes = 0;
    for (const c of chunks) {
      if (headBytes > 0 && headBytes + c.size > PROBE_BYTES) break;
      headBytes += c.size;
    }
    if (tools.missing) throw new FfmpegError(tools.missing);
    // The first chunks: read in place when the chunks lie in one local file
    // in order (see mainInput), else from the stream of the chunks (which
    // then goes on to the block walk) into head.bin. Whichever it is, what
    // ffmpeg reads must start like WebM or MP4 (chunk indexes decide
    // nothing here).
    const local = await inPlace(ctx, id, chunks);
    const headPath = `${work}/head.bin`;
    let head: Uint8Array;
    if (local) {
      head = await readHead(local.path, Math.min(local.end, headBytes));
    } else {
      reader = streamReader(openChunkStream(ctx, id, chunks));
      head = await reader.peek(headBytes);
      await Deno.writeFile(headPath, head);
    }
    const container = containerOf(head);
    const format = container === "mp4" ? "mov" : "matroska";
    const headSource: ProbeInput = local
      ? {
        url: subfileUrl(local.path, head.length),
        whitelist: "file,subfile",
        format,
      }
      : { url: fileUrl(headPath), whitelist: "file", format };
    const parsed = container === "webm" ? readMatroskaHead(head) : null;
    const { video, audio } = await probeHead(
      tools,
      parsed,
      headSource,
      probeOptions,
    );
    if (!video && !audio) {
      throw new BadRecordingError(
        "The uploaded data holds no audio or video stream.",
      );
    }
    if (video?.width && video.height) {
      checkPictureSize(video.width, video.height, config);
    }
    options.signal?.throwIfAborted();

    const fitsWebm = (!video || WEBM_VIDEO.has(video.codec)) &&
      (!audio || WEBM_AUDIO.has(audio.codec));
    const seekableName = `${id}.${fitsWebm ? "webm" : "mkv"}`;
    const seekable = `${work}/${seekableName}`;
    const copyVideo = !video || MP4_VIDEO.has(video.codec);
    const copyAudio = !audio || MP4_AUDIO.has(audio.codec);
    const mp4Name = `${id}.mp4`;
    const mp4 = `${work}/${mp4Name}`;
    const streams = MAIN_STREAMS;
    const mp4Codecs = mp4CodecArgs(
      copyVideo,
      copyAudio,
      passthroughFlags(tools),
    );

    // The whole recording's frames and duration, before anything decodes it.
    const load = await measureWorkload(
      tools,
      {
        local,
        reader,
        open: () => openChunkStream(ctx, id, chunks),
        container,
      },
      parsed,
      !!video,
      probeOptions,
    );
    const picture = largestPicture(video, load.largestKeyframe);
    if (picture) checkPictureSize(picture.width, picture.height, config);
    if (video && !copyVideo) {
      checkEncodeWork({
        width: picture?.width ?? 0,
        height: picture?.height ?? 0,
        frames: load.frames,
        durationS: load.durationS,
      }, config);
    }
    const timeout = runTimeout(config, load.durationS);
    options.signal?.throwIfAborted();

    const stage = copyVideo ? "remuxing" : "encoding mp4";
    const total = chunks.reduce((n, c) => n + c.size, 0);
    const progressOf = (bytes: number) =>
      report(0.05 + 0.85 * Math.min(1, bytes / total), stage);
    const input = mainInput(ctx, id, chunks, local, progressOf);

    // A re-encode is stopped as soon as it passes MAX_ENCODE_PIXELS.
    const mainControl = new AbortController();
    let overLimit: BadRecordingError | undefined;
    const stopMain = () => mainControl.abort();
    options.signal?.addEventListener("abort", stopMain);
    if (options.signal?.aborted) stopMain();
    const onFrames = video && !copyVideo && picture
      ? (frames: number) => {
        try {
          checkEncodedFrames(frames, picture.width, picture.height, config);
        } catch (err) {
          overLimit ??= err as BadRecordingError;
          stopMain();
        }
      }
      : undefined;

    // One pass: the seekable WebM/MKV (streams copied, duration and cues
    // written) and the faststart MP4.
    let lastOutTimeS = 0;
    report(0.05, stage);
    const mainRun = runFfmpeg(tools, [
      "-protocol_whitelist",
      input.inPlace ? "file,subfile" : "file,pipe",
      "-fflags",
      "+genpts",
      "-f",
      format,
      "-max_pixels",
      String(maxPixels),
      ...input.args,
      ...streams,
      "-c",
      "copy",
      "-f",
      fitsWebm ? "webm" : "matroska",
      fileUrl(seekable),
      ...streams,
      ...mp4Codecs,
      "-strict",
      "-2",
      "-movflags",
      "+faststart",
      "-f",
      "mp4",
      fileUrl(mp4),
    ], {
      signal: mainControl.signal,
      timeoutMs: timeout.ms,
      timeoutText: timeout.text,
      maxMemoryBytes,
      input: input.stream,
      onBytes: input.inPlace ? progressOf : undefined,
      onProgress: (t) => lastOutTimeS = Math.max(lastOutTimeS, t),
      onFrames,
    });
    // The poster, from the head, started right after the main pass and run
    // beside it; its own signal so a failed main pass stops it too.
    const posterName = `${id}.jpg`;
    const posterControl = new AbortController();
    const stopPoster = () => posterControl.abort();
    options.signal?.addEventListener("abort", stopPoster);
    if (options.signal?.aborted) stopPoster();
    const posterRun = video
      ? makePoster(
        tools,
        headSource,
        `${work}/${posterName}`,
        posterControl.signal,
        {
          timeoutMs: Math.min(timeout.ms, POSTER_TIMEOUT_MS),
          maxPixels,
          maxMemoryBytes,
        },
        ctx.log,
      )
      : Promise.resolve(false);
    let posterSettled = false;
    // Awaited below; settled either way.
    posterRun.catch(() => {}).finally(() => posterSettled = true);

    try {
      await mainRun;
    } catch (err) {
      stopPoster();
      await posterRun.catch(() => {});
      throw overLimit ?? err;
    } finally {
      options.signal?.removeEventListener("abort", stopPoster);
      options.signal?.removeEventListener("abort", stopMain);
    }

    // The muxer wrote the Duration into the finished file's header.
    const finished = readMatroskaHead(
      await readHead(seekable, FINISHED_HEAD_BYTES),
    );
    const durationS = finished?.durationS ?? lastOutTimeS;

    if (!posterSettled) report(0.95, "poster");
    const poster = await posterRun ? posterName : undefined;

    options.signal?.throwIfAborted();
    const sizes: Record<string, number> = {};
    const published = [mp4Name, seekableName, ...(poster ? [poster] : [])];
    // Flushed after the commit where the storage can defer it; else
    // durable once published.
    const deferred = canDeferSync(ctx.storage);
    for (const name of published) {
      const info = await ctx.storage.publishFile(id, name, `${work}/${name}`, {
        sync: !deferred,
      });
      sizes[name] = info.size;
    }
    const media: MediaFacts = {
      container: fitsWebm ? "webm" : "matroska",
      durationS,
      sizes,
      mp4Video: video ? (copyVideo ? "copy" : "libx264") : undefined,
      mp4Audio: audio ? (copyAudio ? "copy" : "aac") : undefined,
    };
    if (video) {
      media.video = {
        codec: video.codec || "unknown",
        width: video.width ?? 0,
        height: video.height ?? 0,
      };
    }
    if (audio) {
      media.audio = {
        codec: audio.codec || "unknown",
        channels: audio.channels,
        sampleRate: audio.sampleRate,
      };
    }
    return {
      files: [mp4Name, seekableName],
      poster,
      media,
      durationS,
      input: { bytes: total, chunks: chunks.length },
      unflushed: deferred ? published : undefined,
    };
  } finally {
    await reader?.close();
    await ctx.storage.removeWorkDir(work);
  }
}

/** The larger of the header's picture and the largest VP8 keyframe's. */
function largestPicture(
  video: StreamFacts | undefined,
  keyframe: { width: number; height: number } | undefined,
): { width: number; height: number } | undefined {
  const header = video?.width && video.height
    ? { width: video.width, height: video.height }
    : undefined;
  if (!header || !keyframe) return header ?? keyframe;
  return keyframe.width * keyframe.height > header.width * header.height
    ? keyframe
    : header;
}

/**
 * The recording's data file when ffmpeg can read it in place: the chunks
 * lie in it one after another, in index order, from offset 0 (one client
 * sending in order, the usual case), and its path is one the `subfile`
 * protocol can carry. Null otherwise.
 */
async function inPlace(
  ctx: AppContext,
  id: string,
  chunks: ChunkRef[],
): Promise<{ path: string; end: number } | null> {
  if (!hasLocalPaths(ctx.storage)) return null;
  const local = await ctx.storage.localPathOf(id, chunks);
  if (!local) return null;
  const path = resolve(local.path);
  // The subfile URL ends its options at ",,:": keep paths with commas on
  // the stdin route.
  return path.includes(",") ? null : { path, end: local.end };
}

/**
 * The main pass's input: the data file read in place through ffmpeg's
 * `subfile` protocol, up to the end of the last chunk (so bytes past it,
 * such as an uncommitted append that may grow while ffmpeg reads, are never
 * read), else the chunks streamed to ffmpeg's stdin.
 */
function mainInput(
  ctx: AppContext,
  id: string,
  chunks: ChunkRef[],
  local: { path: string; end: number } | null,
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
