/**
 * The recordings the bench sends, made once with the real ffmpeg and cached
 * in bench/.cache (git-ignored):
 *
 * - `source`: a MediaRecorder-like live WebM (no duration, no cues), VP9
 *   1280x720 30 fps with noise (about 6 Mbit/s, so 512 KiB is under a
 *   second) and Opus. A 20 s clip is encoded once and repeated with the
 *   concat demuxer and `-c copy` into one 5-minute `-live 1` WebM. Each
 *   simulated recording sends a prefix of it, so its first chunk starts
 *   with the EBML header and the recording processes like a real one.
 * - `vp8`: VP8 1280x720 + Opus, live WebM, for the H.264 re-encode.
 * - `hour`: a 1-hour VP9 160x120 30 fps + Opus live WebM, a 60 s clip
 *   repeated 60 times with `-c copy` (every frame and packet of an hour, at
 *   a tiny bitrate).
 * - `big`: the source clip repeated to 2 GiB (full mode only).
 */

import { BENCH } from "./servers.ts";

/** Where generated media is cached. */
export const CACHE_DIR = `${BENCH}.cache`;

/** A generated recording on disk. */
export interface MediaFile {
  path: string;
  bytes: number;
  durationS: number;
  codec: string;
}

async function ffmpeg(args: string[]): Promise<void> {
  const out = await new Deno.Command("ffmpeg", {
    args: ["-v", "error", "-y", ...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `ffmpeg ${args.join(" ")} failed: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).size > 0;
  } catch {
    return false;
  }
}

/** Encodes a clip once (with a duration, so it concatenates cleanly). */
async function clip(
  name: string,
  lavfi: string,
  seconds: number,
  video: string[],
  audioKbps: number,
): Promise<string> {
  const path = `${CACHE_DIR}/${name}`;
  if (await exists(path)) return path;
  const live = `${path}.live.webm`;
  await ffmpeg([
    "-f",
    "lavfi",
    "-i",
    lavfi,
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:sample_rate=48000",
    "-t",
    String(seconds),
    ...video,
    "-c:a",
    "libopus",
    "-b:a",
    `${audioKbps}k`,
    "-f",
    "webm",
    "-live",
    "1",
    live,
  ]);
  // Remuxed once so the clip has a duration and the concat demuxer can
  // chain it; the repeated output is written live again below.
  await ffmpeg(["-i", live, "-c", "copy", "-f", "webm", `${path}.tmp`]);
  await Deno.rename(`${path}.tmp`, path);
  await Deno.remove(live);
  return path;
}

/** Repeats `clipPath` `times` times into one live WebM with `-c copy`. */
async function repeat(
  clipPath: string,
  times: number,
  name: string,
  clipS: number,
  codec: string,
): Promise<MediaFile> {
  const path = `${CACHE_DIR}/${name}`;
  if (!await exists(path)) {
    const list = `${path}.txt`;
    await Deno.writeTextFile(
      list,
      Array.from({ length: times }, () => `file '${clipPath}'\n`).join(""),
    );
    await ffmpeg([
      "-f",
      "concat",
      "-safe",
      "0",
      "-i",
      list,
      "-c",
      "copy",
      "-f",
      "webm",
      "-live",
      "1",
      `${path}.tmp`,
    ]);
    await Deno.rename(`${path}.tmp`, path);
    await Deno.remove(list);
  }
  return {
    path,
    bytes: (await Deno.stat(path)).size,
    durationS: clipS * times,
    codec,
  };
}

const VP9_720 = [
  "-c:v",
  "libvpx-vp9",
  "-deadline",
  "realtime",
  "-cpu-used",
  "8",
  "-row-mt",
  "1",
  "-b:v",
  "4M",
  "-minrate",
  "3M",
  "-maxrate",
  "5M",
  "-g",
  "60",
];

function sourceClip(): Promise<string> {
  return clip(
    "vp9-720p-20s.webm",
    "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t",
    20,
    VP9_720,
    96,
  );
}

/** The 5-minute VP9 live WebM that every simulated recording sends. */
export async function sourceRecording(): Promise<MediaFile> {
  await Deno.mkdir(CACHE_DIR, { recursive: true });
  return repeat(await sourceClip(), 15, "source-vp9-5min.webm", 20, "vp9");
}

/** A VP8 live WebM of `seconds` (a multiple of 20) for the re-encode. */
export async function vp8Recording(seconds: number): Promise<MediaFile> {
  await Deno.mkdir(CACHE_DIR, { recursive: true });
  const c = await clip(
    "vp8-720p-20s.webm",
    "testsrc2=size=1280x720:rate=30",
    20,
    [
      "-c:v",
      "libvpx",
      "-deadline",
      "realtime",
      "-cpu-used",
      "8",
      "-b:v",
      "2M",
      "-g",
      "60",
    ],
    96,
  );
  const times = Math.max(1, Math.round(seconds / 20));
  return repeat(c, times, `vp8-720p-${times * 20}s.webm`, 20, "vp8");
}

/** The 1-hour VP9 recording (tiny picture, every frame of an hour). */
export async function hourRecording(): Promise<MediaFile> {
  await Deno.mkdir(CACHE_DIR, { recursive: true });
  const c = await clip(
    "vp9-120p-60s.webm",
    "testsrc2=size=160x120:rate=30",
    60,
    [
      "-c:v",
      "libvpx-vp9",
      "-deadline",
      "realtime",
      "-cpu-used",
      "8",
      "-b:v",
      "100k",
      "-g",
      "60",
    ],
    24,
  );
  return repeat(c, 60, "hour-vp9-120p.webm", 60, "vp9");
}

/** The source clip repeated to at least 2 GiB (a 45-minute recording). */
export async function bigRecording(): Promise<MediaFile> {
  await Deno.mkdir(CACHE_DIR, { recursive: true });
  const c = await sourceClip();
  const clipBytes = (await Deno.stat(c)).size;
  const times = Math.ceil((2 * 1024 ** 3) / clipBytes);
  return repeat(c, times, "big-vp9-2gib.webm", 20, "vp9");
}

/** ffmpeg's version line, e.g. "ffmpeg version 5.1.9-0+deb12u1". */
export async function ffmpegVersion(): Promise<string> {
  const out = await new Deno.Command("ffmpeg", {
    args: ["-hide_banner", "-version"],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n")[0].replace(
    / Copyright.*/,
    "",
  );
}
