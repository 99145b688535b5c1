/**
 * Helpers of the live-encode tests: a VP8 recording like a tab capture
 * (one keyframe at 0, variable frame rate), sent at real-time pace, and the
 * video packet times of a file read back with ffprobe.
 */

import assert from "node:assert/strict";
import {
  ffmpegFile,
  ffprobeEntries,
  lavfiInputs,
  sendChunk,
  vpxArgs,
} from "./helpers.ts";

/**
 * A live VP8 + Opus WebM of `seconds` at 320x240 like a tab capture: one
 * keyframe at the start, frames at irregular times (some dropped from a
 * 30 fps source, and a stretch with none).
 */
export async function makeTabCapture(
  path: string,
  seconds: number,
): Promise<Uint8Array<ArrayBuffer>> {
  return await ffmpegFile(path, [
    ...lavfiInputs(
      "testsrc2=size=320x240:rate=30",
      "sine=frequency=440:sample_rate=48000",
      seconds,
    ),
    // Frames dropped irregularly, and none from 3 s to 3.7 s.
    "-vf",
    "select='not(eq(mod(n\\,7)\\,3))*not(eq(mod(n\\,11)\\,5))*not(between(t\\,3\\,3.7))'",
    "-fps_mode",
    "vfr",
    ...vpxArgs("libvpx", "400k"),
    "-g",
    "100000",
    "-c:a",
    "libopus",
    "-f",
    "webm",
    "-live",
    "1",
  ]);
}

/** The chunk size {@link sendAtPace} sends by default. */
const CHUNK_BYTES = 24 * 1024;

/** How many chunks of `chunkBytes` {@link sendAtPace} cuts `bytes` into. */
export function chunkCount(
  bytes: Uint8Array,
  chunkBytes = CHUNK_BYTES,
): number {
  return Math.ceil(bytes.length / chunkBytes);
}

/**
 * Sends `bytes` as chunks of about `chunkBytes`, each when the media it
 * ends with would have been recorded (`seconds` for the whole), from chunk
 * `from` to before chunk `to`. Resolves when the last one was answered.
 */
export async function sendAtPace(
  url: string,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  seconds: number,
  options: { chunkBytes?: number; from?: number; to?: number; t0?: number } =
    {},
): Promise<number> {
  const size = options.chunkBytes ?? CHUNK_BYTES;
  const count = chunkCount(bytes, size);
  const t0 = options.t0 ?? performance.now();
  for (let i = options.from ?? 0; i < (options.to ?? count); i++) {
    const end = Math.min(bytes.length, (i + 1) * size);
    const due = t0 + seconds * 1000 * end / bytes.length;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const res = await sendChunk(url, id, bytes.slice(i * size, end), i);
    assert.equal(res.status, 200, await res.text());
  }
  return count;
}

/** The times (s) of a file's video packets, sorted. */
export async function videoPacketTimes(path: string): Promise<number[]> {
  const out = await ffprobeEntries(path, "packet=pts_time", { stream: "v:0" });
  return out.split("\n")
    .map((l) => l.trim().replace(/,$/, "")).filter(Boolean).map(Number)
    .sort((a, b) => a - b);
}

/** How many packets of `stream` ("a:0") a file holds. */
export async function packetCount(
  path: string,
  stream: string,
): Promise<number> {
  const out = await ffprobeEntries(path, "stream=nb_read_packets", {
    stream,
    countPackets: true,
  });
  return Number(out.trim().replace(/,$/, ""));
}

/**
 * Asserts that `mp4` holds every video frame of `source` at the same
 * times (relative to the first; to the millisecond): the frame count and
 * the variable frame timing kept.
 */
export async function assertSameFrames(
  source: string,
  mp4: string,
): Promise<void> {
  const want = await videoPacketTimes(source);
  const got = await videoPacketTimes(mp4);
  assert.equal(got.length, want.length, "every frame of the source");
  for (let i = 0; i < want.length; i++) {
    const a = want[i] - want[0];
    const b = got[i] - got[0];
    assert.ok(
      Math.abs(a - b) <= 0.0015,
      `frame ${i} at ${b.toFixed(4)} s, the source's at ${a.toFixed(4)} s`,
    );
  }
}

/** Downloads a recording's file to `path`. */
export async function download(url: string, path: string): Promise<void> {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  await Deno.writeFile(path, new Uint8Array(await res.arrayBuffer()));
}
