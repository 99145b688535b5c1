/**
 * How much video a whole recording holds, read before ffmpeg decodes any of
 * it: the frames of its first video stream, how long it lasts and the
 * largest picture a VP8 keyframe announces. WebM/Matroska is walked block
 * by block (lib/processing/matroska_blocks.ts); MP4, and a Matroska file
 * that walk gives up on, is counted by ffprobe's demuxer.
 */

import { type ByteReader, fileReader } from "./byte_reader.ts";
import {
  type FfmpegTools,
  type ProbeInput,
  type ProbeOptions,
  probePackets,
} from "./ffmpeg.ts";
import type { MatroskaHead } from "./matroska.ts";
import { tallyMatroskaBlocks } from "./matroska_blocks.ts";
import { subfileUrl } from "./urls.ts";

/** Where the whole recording is read. */
export interface RecordingBytes {
  /** The local file holding the recording from offset 0 to `end`, if any. */
  local: { path: string; end: number } | null;
  /**
   * A reader at the recording's first byte, when `local` is null: used for
   * the block walk (and closed) instead of a new stream.
   */
  reader?: ByteReader;
  /** The recording's bytes as a new stream (used when `local` is null). */
  open(): ReadableStream<Uint8Array>;
  /** The container, as its first bytes say. */
  container: "webm" | "mp4";
}

/** What a recording asks of a re-encode. */
export interface Workload {
  /** Frames of the first video stream (0 without one). */
  frames: number;
  /** From the earliest to the latest timestamp. */
  durationS: number;
  /** The largest picture a VP8 keyframe announces, when read. */
  largestKeyframe?: { width: number; height: number };
  /** Who counted: the block walk or ffprobe. */
  countedBy: "matroska" | "ffprobe";
}

/**
 * Measures the recording: walks its Matroska blocks when `head` (its parsed
 * header) is given, else, or when the walk gives up, asks ffprobe. Closes
 * `bytes.reader`.
 */
export async function measureWorkload(
  tools: FfmpegTools,
  bytes: RecordingBytes,
  head: MatroskaHead | null,
  hasVideo: boolean,
  options: ProbeOptions,
): Promise<Workload> {
  let walked: Workload | null = null;
  try {
    if (head) walked = await walkMatroska(bytes, head);
  } finally {
    await bytes.reader?.close();
  }
  if (walked) return walked;
  const input: ProbeInput = bytes.local
    ? {
      url: subfileUrl(bytes.local.path, bytes.local.end),
      whitelist: "file,subfile",
      format: bytes.container === "mp4" ? "mov" : "matroska",
    }
    : {
      url: "pipe:0",
      whitelist: "pipe",
      format: bytes.container === "mp4" ? "mov" : "matroska",
      stream: bytes.open(),
    };
  const tally = await probePackets(
    tools,
    input,
    hasVideo ? "v:0" : "a:0",
    options,
  );
  return {
    frames: hasVideo ? tally.packets : 0,
    durationS: Math.max(0, (tally.lastS ?? 0) - (tally.firstS ?? 0)),
    countedBy: "ffprobe",
  };
}

async function walkMatroska(
  bytes: RecordingBytes,
  head: MatroskaHead,
): Promise<Workload | null> {
  const video = head.tracks.find((t) => t.type === "video");
  const vp8 = new Set(
    head.tracks.filter((t) => t.codecName === "vp8").map((t) => t.number),
  );
  const reader = bytes.local
    ? await fileReader(bytes.local.path, bytes.local.end)
    : bytes.reader;
  if (!reader) return null;
  let tally;
  try {
    tally = await tallyMatroskaBlocks(reader, vp8);
  } finally {
    await reader.close();
  }
  if (!tally) return null;
  let first = Infinity;
  let last = -Infinity;
  for (const t of tally.values()) {
    first = Math.min(first, t.firstS);
    last = Math.max(last, t.lastS);
  }
  const track = video ? tally.get(video.number) : undefined;
  return {
    frames: track?.frames ?? 0,
    durationS: last > first ? last - first : 0,
    largestKeyframe: track?.largestKeyframe,
    countedBy: "matroska",
  };
}
