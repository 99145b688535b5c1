// Over 400 lines: the job's one processing run, read top to bottom; its passes and the progressive re-encode are split out already.
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
 * flushes them after committing (see lib/jobs/outcomes.ts). When the MP4
 * needs a re-encode (VP8), the files come one by one instead
 * (lib/processing/progressive.ts): the WebM and the poster, listed while
 * the MP4 is made, then the MP4, from the recording's live encode when it
 * has one that kept up (lib/live_encode/).
 *
 * Nothing reaches ffmpeg unchecked: the recording must start like WebM or
 * MP4, every run names its demuxer and the protocols it may open, decoders
 * refuse pictures over MAX_VIDEO_PIXELS, every run has a memory limit and a
 * timeout that grows with the recording's duration, and a re-encode starts
 * only once the recording's frames are counted and found within the limits
 * (lib/processing/limits.ts). A recording over a limit fails with a
 * {@link BadRecordingError} that says which.
 */

import type { AppContext } from "../core/context.ts";
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
import type { MadeFiles, MediaFacts, Recording } from "../kv/keys.ts";
import { recordingKey } from "../kv/keys.ts";
import { BadRecordingError } from "./bad_recording.ts";
import { type ByteReader, streamReader } from "./byte_reader.ts";
import { checkEncodeWork, checkPictureSize, runTimeout } from "./limits.ts";
import { type MatroskaHead, readMatroskaHead } from "./matroska.ts";
import {
  besidePoster,
  finishedDurationS,
  fitsWebm as fitWebm,
  inPlace,
  MAIN_STREAMS,
  mainInput,
  mainInputArgs,
  mainPassOptions,
  mp4CodecArgs,
  mp4OutputArgs,
  mp4TakesAudio,
  mp4TakesVideo,
  passthroughFlags,
  type ProgressCallback,
  readHead,
  startPoster,
} from "./passes.ts";
import { reencodeProgressively } from "./progressive.ts";
import { fileUrl, subfileUrl } from "./urls.ts";
import { measureWorkload, type Workload } from "./workload.ts";
import { listChunks } from "../recordings/chunks.ts";
import { openChunkStream } from "../recordings/source.ts";
import { canDeferSync } from "../storage/storage.ts";

export { BadRecordingError };

/** What processing produced. */
export type ProcessingOutput = MadeFiles;

/** How much of the recording's start is probed for its codecs (and makes the poster). */
const PROBE_BYTES = 2 * 1024 * 1024;

/** The container a recording starts like; a BadRecordingError when neither. */
function containerOf(head: Uint8Array): "webm" | "mp4" {
  const kind = mediaKind(head);
  if (kind) return kind;
  throw new BadRecordingError(
    "The recording does not start like a WebM/Matroska or MP4 file (no EBML header or ftyp box), so it was not processed.",
  );
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
  options: {
    signal?: AbortSignal;
    onProgress?: ProgressCallback;
    /**
     * Lists files made before the others (a re-encode's WebM and poster,
     * lib/processing/progressive.ts) once the recording is settled;
     * without it, every file comes with the result.
     */
    listEarly?: (early: MadeFiles) => Promise<void>;
  } = {},
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

    const fitsWebm = fitWebm(video?.codec, audio?.codec);
    const seekableName = `${id}.${fitsWebm ? "webm" : "mkv"}`;
    const seekable = `${work}/${seekableName}`;
    const copyVideo = !video || mp4TakesVideo(video.codec);
    const copyAudio = !audio || mp4TakesAudio(audio.codec);
    const mp4Name = `${id}.mp4`;
    const mp4 = `${work}/${mp4Name}`;
    const posterName = `${id}.jpg`;
    const streams = MAIN_STREAMS;

    // The whole recording's frames and duration, before anything decodes
    // it: what a re-encode will cost, and the picture size VP8 keyframes
    // announce (VP8 can change it at any keyframe). A stream copy of other
    // codecs needs neither, and is spared reading the recording twice.
    const vp8 = parsed?.tracks.some((t) => t.codecName === "vp8") ?? false;
    const needsWalk = (!!video && !copyVideo) || vp8;
    const load: Omit<Workload, "countedBy"> = !needsWalk
      ? { frames: 0, durationS: NaN }
      : await measureWorkload(
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

    const total = chunks.reduce((n, c) => n + c.size, 0);
    const mediaOf = (
      sizes: Record<string, number>,
      durationS: number,
      mp4Live?: boolean,
    ): MediaFacts => {
      const media: MediaFacts = {
        container: fitsWebm ? "webm" : "matroska",
        durationS,
        sizes,
        mp4Video: video ? (copyVideo ? "copy" : "libx264") : undefined,
        mp4Audio: audio ? (copyAudio ? "copy" : "aac") : undefined,
      };
      if (mp4Live) media.mp4Live = true;
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
      return media;
    };

    if (video && !copyVideo) {
      // A re-encode: the WebM first, listed while the MP4 is made
      // (lib/processing/progressive.ts); a WebM listed by an earlier run
      // is kept as it is.
      const rec = (await ctx.kv.get<Recording>(recordingKey(id))).value;
      const listed = rec?.files.includes(seekableName)
        ? {
          durationS: rec.durationS ?? load.durationS,
          poster: rec.poster,
          sizes: Object.fromEntries(
            Object.entries(rec.media?.sizes ?? {}).filter(([name]) =>
              name === seekableName || name === rec.poster
            ),
          ),
        }
        : undefined;
      return await reencodeProgressively(ctx, tools, {
        id,
        work,
        chunks,
        local,
        format,
        head: headSource,
        seekableName,
        mp4Name,
        posterName,
        webm: fitsWebm,
        copyAudio,
        picture: picture ?? { width: 0, height: 0 },
        frames: load.frames,
        timeout,
        listed,
        mediaOf,
      }, {
        signal: options.signal,
        report,
        listEarly: options.listEarly,
      });
    }

    const stage = "remuxing";
    const progressOf = (bytes: number) =>
      report(0.05 + 0.85 * Math.min(1, bytes / total), stage);
    const input = mainInput(ctx, id, chunks, local, progressOf);

    // One pass: the seekable WebM/MKV (streams copied, duration and cues
    // written) and the faststart MP4.
    let lastOutTimeS = 0;
    report(0.05, stage);
    const mainRun = runFfmpeg(tools, [
      ...mainInputArgs(input, format, maxPixels),
      "-c",
      "copy",
      "-f",
      fitsWebm ? "webm" : "matroska",
      fileUrl(seekable),
      ...streams,
      ...mp4CodecArgs(copyVideo, copyAudio, passthroughFlags(tools)),
      ...mp4OutputArgs(fileUrl(mp4)),
    ], {
      ...mainPassOptions(ctx, input, timeout, options.signal),
      onBytes: input.inPlace ? progressOf : undefined,
      onProgress: (t) => lastOutTimeS = Math.max(lastOutTimeS, t),
    });
    // The poster, from the head, started right after the main pass and run
    // beside it; its own signal so a failed main pass stops it too.
    const posterRun = startPoster(
      ctx,
      tools,
      video ? headSource : undefined,
      `${work}/${posterName}`,
      timeout.ms,
      options.signal,
    );
    let posterSettled = false;
    // Awaited below; settled either way.
    posterRun.made.catch(() => {}).finally(() => posterSettled = true);

    await besidePoster(posterRun, () => mainRun);

    // The muxer wrote the Duration into the finished file's header.
    const durationS = await finishedDurationS(seekable, lastOutTimeS);

    if (!posterSettled) report(0.95, "poster");
    const poster = await posterRun.made ? posterName : undefined;

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
    const media = mediaOf(sizes, durationS);
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
