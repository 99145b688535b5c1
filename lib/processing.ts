/**
 * Turns a recording's chunks into its finished files: a seekable WebM (or
 * MKV), a faststart MP4 and a poster JPEG, with progress reported as it goes.
 */

import { resolve } from "node:path";
import type { AppContext } from "./context.ts";
import {
  FfmpegError,
  type FfmpegTools,
  probe,
  type ProbeResult,
  runFfmpeg,
} from "./ffmpeg.ts";
import type { MediaFacts } from "./kv_keys.ts";
import { listChunks, openChunkStream } from "./recordings.ts";

/** Video codecs the MP4 container holds as they are. */
const MP4_VIDEO = new Set(["h264", "hevc", "vp9", "av1"]);
/** Audio codecs the MP4 container holds as they are. */
const MP4_AUDIO = new Set(["aac", "opus", "mp3", "alac", "flac"]);
/** Codecs that fit WebM; anything else goes to Matroska. */
const WEBM_VIDEO = new Set(["vp8", "vp9", "av1"]);
const WEBM_AUDIO = new Set(["opus", "vorbis"]);

/** What processing produced. */
export interface ProcessingOutput {
  files: string[];
  poster?: string;
  media: MediaFacts;
  durationS: number;
}

/** How much of the recording's start is probed for its codecs. */
const PROBE_BYTES = 2 * 1024 * 1024;

/** Progress of a processing run: `fraction` from 0 to 1 and a stage name. */
export type ProgressCallback = (fraction: number, stage: string) => void;

/** A recording that cannot be turned into video; retrying will not help. */
export class BadRecordingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BadRecordingError";
  }
}

function fileUrl(path: string): string {
  return `file:${resolve(path)}`;
}

function sniffExtension(head: Uint8Array): "webm" | "mp4" {
  const isFtyp = head.length >= 8 && head[4] === 0x66 && head[5] === 0x74 &&
    head[6] === 0x79 && head[7] === 0x70;
  return isFtyp ? "mp4" : "webm";
}

async function readHead(path: string, n: number): Promise<Uint8Array> {
  const file = await Deno.open(path);
  try {
    const buf = new Uint8Array(n);
    const read = await file.read(buf);
    return buf.subarray(0, read ?? 0);
  } finally {
    file.close();
  }
}

function streamOf(probed: ProbeResult, type: "video" | "audio") {
  return probed.streams.find((s) => s.codec_type === type);
}

function passthroughFlags(tools: FfmpegTools): string[] {
  const [major, minor] = tools.version;
  return major > 5 || (major === 5 && minor >= 1)
    ? ["-fps_mode", "passthrough"]
    : ["-vsync", "passthrough"];
}

/**
 * Processes one recording in its work folder and publishes the outputs to
 * storage. Throws {@link BadRecordingError} when the input is not media, and
 * {@link FfmpegError} when a tool fails.
 */
export async function processRecording(
  ctx: AppContext,
  tools: FfmpegTools,
  id: string,
  options: { signal?: AbortSignal; onProgress?: ProgressCallback } = {},
): Promise<ProcessingOutput> {
  const report = options.onProgress ?? (() => {});
  const timeoutMs = ctx.config.ffmpegTimeoutMs;
  const work = await ctx.storage.makeWorkDir(id);
  try {
    report(0.01, "probing");
    const chunks = await listChunks(ctx, id);
    if (chunks.length === 0) {
      throw new BadRecordingError("The recording has no chunks to process.");
    }
    const headChunks: typeof chunks = [];
    let headBytes = 0;
    for (const c of chunks) {
      if (headChunks.length > 0 && headBytes + c.size > PROBE_BYTES) break;
      headChunks.push(c);
      headBytes += c.size;
    }
    if (tools.missing) throw new FfmpegError(tools.missing);
    const headPath = `${work}/head.bin`;
    await ctx.storage.assemble(id, headChunks, headPath);
    const ext = sniffExtension(await readHead(headPath, 16));
    let probed: ProbeResult;
    try {
      probed = await probe(tools, headPath, { timeoutMs });
    } catch (err) {
      if (err instanceof FfmpegError) {
        throw new BadRecordingError(
          `The uploaded data is not a readable recording (${err.message}).`,
        );
      }
      throw err;
    }
    const video = streamOf(probed, "video");
    const audio = streamOf(probed, "audio");
    if (!video && !audio) {
      throw new BadRecordingError(
        "The uploaded data holds no audio or video stream.",
      );
    }
    options.signal?.throwIfAborted();

    const fitsWebm = (!video || WEBM_VIDEO.has(video.codec_name ?? "")) &&
      (!audio || WEBM_AUDIO.has(audio.codec_name ?? ""));
    const seekableName = `${id}.${fitsWebm ? "webm" : "mkv"}`;
    const seekable = `${work}/${seekableName}`;
    const copyVideo = !video || MP4_VIDEO.has(video.codec_name ?? "");
    const copyAudio = !audio || MP4_AUDIO.has(audio.codec_name ?? "");
    const mp4Name = `${id}.mp4`;
    const mp4 = `${work}/${mp4Name}`;
    const streams = ["-map", "0:v:0?", "-map", "0:a:0?"];
    const mp4Codecs: string[] = [];
    if (copyVideo) mp4Codecs.push("-c:v", "copy");
    else {
      mp4Codecs.push(
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        ...passthroughFlags(tools),
      );
    }
    if (copyAudio) mp4Codecs.push("-c:a", "copy");
    else mp4Codecs.push("-c:a", "aac", "-b:a", "128k");

    // One pass over the chunks, fed to ffmpeg's stdin: the seekable WebM/MKV
    // (streams copied, duration and cues written) and the faststart MP4.
    const stage = copyVideo ? "remuxing" : "encoding mp4";
    const total = chunks.reduce((n, c) => n + c.size, 0);
    let fed = 0;
    const input = openChunkStream(ctx, id, chunks)
      .pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(piece, controller) {
            fed += piece.length;
            report(0.05 + 0.85 * (fed / total), stage);
            controller.enqueue(piece);
          },
        }),
      );
    report(0.05, stage);
    await runFfmpeg(tools, [
      "-protocol_whitelist",
      "file,pipe",
      "-fflags",
      "+genpts",
      "-f",
      ext === "mp4" ? "mov" : "matroska",
      "-i",
      "pipe:0",
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
    ], { signal: options.signal, timeoutMs, input });

    const remuxed = await probe(tools, seekable, { timeoutMs });
    const durationS = Number(remuxed.format?.duration ?? 0) || 0;

    let poster: string | undefined;
    if (video) {
      report(0.97, "poster");
      poster = `${id}.jpg`;
      const at = durationS > 0 ? Math.min(1, durationS / 2) : 0;
      await runFfmpeg(tools, [
        "-protocol_whitelist",
        "file",
        "-ss",
        at.toFixed(3),
        "-i",
        fileUrl(seekable),
        "-frames:v",
        "1",
        "-q:v",
        "3",
        "-f",
        "image2",
        fileUrl(`${work}/${poster}`),
      ], { signal: options.signal, timeoutMs });
    }

    options.signal?.throwIfAborted();
    const sizes: Record<string, number> = {};
    for (const name of [mp4Name, seekableName, poster]) {
      if (!name) continue;
      const info = await ctx.storage.publishFile(id, name, `${work}/${name}`);
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
        codec: video.codec_name ?? "unknown",
        width: video.width ?? 0,
        height: video.height ?? 0,
      };
    }
    if (audio) {
      media.audio = {
        codec: audio.codec_name ?? "unknown",
        channels: audio.channels,
        sampleRate: audio.sample_rate ? Number(audio.sample_rate) : undefined,
      };
    }
    return { files: [mp4Name, seekableName], poster, media, durationS };
  } finally {
    await ctx.storage.removeWorkDir(work);
  }
}
