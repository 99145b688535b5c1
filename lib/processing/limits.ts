/**
 * What a recording may ask of ffmpeg, checked before any run decodes it:
 * the size of its pictures, and for a re-encode the pixels to make per
 * second of recording and in all; and how long one ffmpeg run may take for
 * a recording of a given duration. A recording over a limit fails at once
 * with a {@link BadRecordingError} that names the limit and its setting.
 */

import type { Config } from "../core/config.ts";
import { BadRecordingError } from "./bad_recording.ts";

/** The settings the limits come from. */
export type ProcessingLimits = Pick<
  Config,
  | "maxVideoPixels"
  | "maxVideoPixelRate"
  | "maxEncodePixels"
  | "ffmpegTimeoutMs"
  | "ffmpegTimeoutPerSecondMs"
>;

/** The video a re-encode would have to make. */
export interface VideoWork {
  /** The largest picture of the recording. */
  width: number;
  height: number;
  frames: number;
  /** From the first to the last frame's timestamp. */
  durationS: number;
}

/** Throws when a picture of `width` x `height` is over MAX_VIDEO_PIXELS. */
export function checkPictureSize(
  width: number,
  height: number,
  limits: ProcessingLimits,
): void {
  const pixels = width * height;
  if (pixels <= limits.maxVideoPixels) return;
  throw new BadRecordingError(
    `The recording's video has ${width}x${height} pictures (${pixels} pixels), more than the limit of ${limits.maxVideoPixels} pixels per picture (MAX_VIDEO_PIXELS); it was not processed.`,
  );
}

/**
 * Throws when re-encoding `work` would make more pixels per second of
 * recording than MAX_VIDEO_PIXEL_RATE (a recording shorter than a second
 * counts as one second) or more pixels in all than MAX_ENCODE_PIXELS.
 */
export function checkEncodeWork(
  work: VideoWork,
  limits: ProcessingLimits,
): void {
  const total = work.width * work.height * work.frames;
  const what = `${work.width}x${work.height}, ${work.frames} frames in ${
    work.durationS.toFixed(1)
  } s`;
  const rate = Math.round(total / Math.max(1, work.durationS));
  if (rate > limits.maxVideoPixelRate) {
    throw new BadRecordingError(
      `Re-encoding the recording's video would take ${rate} pixels per second of recording (${what}), more than the limit of ${limits.maxVideoPixelRate} (MAX_VIDEO_PIXEL_RATE); it was not processed.`,
    );
  }
  if (total > limits.maxEncodePixels) {
    throw new BadRecordingError(
      `Re-encoding the recording's video would take ${total} pixels (${what}), more than the limit of ${limits.maxEncodePixels} (MAX_ENCODE_PIXELS); it was not processed.`,
    );
  }
}

/**
 * Throws once a re-encode of `width` x `height` pictures has made more
 * frames than MAX_ENCODE_PIXELS allows: the same limit, held while ffmpeg
 * runs, in case its demuxer finds more frames than were counted before.
 */
export function checkEncodedFrames(
  frames: number,
  width: number,
  height: number,
  limits: ProcessingLimits,
): void {
  const total = width * height * frames;
  if (total <= limits.maxEncodePixels) return;
  throw new BadRecordingError(
    `Re-encoding the recording's video passed ${total} pixels (${width}x${height}, ${frames} frames), more than the limit of ${limits.maxEncodePixels} (MAX_ENCODE_PIXELS); it was stopped.`,
  );
}

/** How long one ffmpeg run may take, and how to say it. */
export interface RunTimeout {
  ms: number;
  /** Reads after "ran longer than". */
  text: string;
}

/**
 * FFMPEG_TIMEOUT_MS plus FFMPEG_TIMEOUT_PER_SECOND_MS per second of a
 * recording lasting `durationS`.
 */
export function runTimeout(
  limits: ProcessingLimits,
  durationS: number,
): RunTimeout {
  const base = limits.ffmpegTimeoutMs;
  const perSecond = limits.ffmpegTimeoutPerSecondMs;
  const seconds = Number.isFinite(durationS) ? Math.max(0, durationS) : 0;
  const ms = base + Math.round(perSecond * seconds);
  if (ms === base) return { ms, text: `${base} ms (FFMPEG_TIMEOUT_MS)` };
  return {
    ms,
    text:
      `${base} ms plus ${perSecond} ms per second of recording (${ms} ms for ${
        seconds.toFixed(1)
      } s; FFMPEG_TIMEOUT_MS, FFMPEG_TIMEOUT_PER_SECOND_MS)`,
  };
}
