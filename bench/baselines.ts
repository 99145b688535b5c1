/**
 * The physical and processing limits the service is compared with: the
 * disk's flushed write rate, and ffmpeg run by hand on the same recordings.
 */

import { type LatencySummary, summarize, toMB } from "./stats.ts";
import {
  MAIN_STREAMS,
  mp4CodecArgs,
  mp4OutputArgs,
  posterOutputArgs,
} from "../lib/processing/passes.ts";

/** The outcome of a disk write test. */
export interface DiskResult {
  MBps: number;
  writes: number;
  /** Time of one write + flush, ms. */
  flushMs: LatencySummary;
  writers: number;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await file.write(bytes.subarray(offset));
  }
}

/**
 * The disk's own sequential write rate with a flush per block: one file in
 * `dir`, `blockBytes` written then `fdatasync`, in a loop for `seconds`.
 */
export async function diskFlushedWrite(
  dir: string,
  block: Uint8Array,
  seconds: number,
): Promise<DiskResult> {
  const path = `${dir}/disk-baseline.bin`;
  const file = await Deno.open(path, { write: true, create: true });
  const times: number[] = [];
  const start = performance.now();
  const deadline = start + seconds * 1000;
  try {
    while (performance.now() < deadline) {
      const t = performance.now();
      await writeAll(file, block);
      await file.syncData();
      times.push(performance.now() - t);
    }
  } finally {
    file.close();
  }
  const wallS = (performance.now() - start) / 1000;
  await Deno.remove(path);
  return {
    MBps: toMB(times.length * block.length) / wallS,
    writes: times.length,
    flushMs: summarize(times),
    writers: 1,
  };
}

/**
 * The storage pattern of tapedeck without HTTP or KV: `writers` loops that
 * each create a new file per block, write it, fsync it, close it and fsync
 * the folder.
 */
export async function diskFilePerChunk(
  dir: string,
  block: Uint8Array,
  seconds: number,
  writers: number,
): Promise<DiskResult> {
  const folder = `${dir}/disk-files`;
  await Deno.mkdir(folder, { recursive: true });
  const times: number[] = [];
  const start = performance.now();
  const deadline = start + seconds * 1000;
  await Promise.all(Array.from({ length: writers }, async () => {
    while (performance.now() < deadline) {
      const t = performance.now();
      const file = await Deno.open(`${folder}/${crypto.randomUUID()}`, {
        write: true,
        createNew: true,
      });
      await writeAll(file, block);
      await file.sync();
      file.close();
      const d = await Deno.open(folder, { read: true });
      await d.sync();
      d.close();
      times.push(performance.now() - t);
    }
  }));
  const wallS = (performance.now() - start) / 1000;
  await Deno.remove(folder, { recursive: true });
  return {
    MBps: toMB(times.length * block.length) / wallS,
    writes: times.length,
    flushMs: summarize(times),
    writers,
  };
}

/** Runs ffmpeg with `args` and returns its wall time in seconds. */
export async function timeFfmpeg(args: string[]): Promise<number> {
  const t = performance.now();
  const out = await new Deno.Command("ffmpeg", {
    args: ["-v", "error", "-y", ...args],
    stdin: "null",
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
  return (performance.now() - t) / 1000;
}

/** Seconds that ffmpeg takes by hand for one recording. */
export interface ByHandResult {
  /** One command: the recording to a faststart MP4 (copy or H.264). */
  mp4OnlyS: number;
  /**
   * The same files as the service, the same commands: the one-pass WebM +
   * MP4 command and the poster command started together, until both end
   * (no probing, no assembling, no KV).
   */
  sameFilesS: number;
}

/**
 * Flushes what earlier runs left in the page cache, so that their writeback
 * does not land inside the next timing (the service flushes its outputs
 * right after each job, before the next one starts).
 */
async function flushDisk(): Promise<void> {
  await new Deno.Command("sync", { stdout: "null", stderr: "null" }).output();
}

/** Runs ffmpeg commands at once and returns the wall time until all ended, s. */
export async function timeFfmpegTogether(
  commands: string[][],
): Promise<number> {
  const t = performance.now();
  await Promise.all(commands.map((args) => timeFfmpeg(args)));
  return (performance.now() - t) / 1000;
}

/**
 * Times ffmpeg by hand on `input` with the commands tapedeck's pipeline
 * runs (see lib/processing.ts), in `work`: `reencode` makes H.264/AAC like
 * a VP8 job.
 */
export async function ffmpegByHand(
  input: string,
  work: string,
  reencode: boolean,
): Promise<ByHandResult> {
  await Deno.mkdir(work, { recursive: true });
  const video = mp4CodecArgs(!reencode, !reencode, [
    "-fps_mode",
    "passthrough",
  ]);
  const streams = MAIN_STREAMS;
  const mp4Output = [
    ...streams,
    ...video,
    ...mp4OutputArgs(`${work}/out.mp4`),
  ];
  try {
    await flushDisk();
    const mp4OnlyS = await timeFfmpeg(["-i", input, ...mp4Output]);
    await Deno.remove(`${work}/out.mp4`);
    await flushDisk();
    const sameFilesS = await timeFfmpegTogether([
      [
        "-fflags",
        "+genpts",
        "-i",
        input,
        ...streams,
        "-c",
        "copy",
        "-f",
        "webm",
        `${work}/out.webm`,
        ...mp4Output,
      ],
      [
        "-ss",
        "1",
        "-i",
        input,
        ...posterOutputArgs(`${work}/out.jpg`),
      ],
    ]);
    return { mp4OnlyS, sameFilesS };
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
