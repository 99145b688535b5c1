/**
 * The Matroska block walk (lib/processing/matroska_blocks.ts) against
 * ffprobe's own demuxer: the same frame count and time span for live and
 * seekable files, read from a file (seeking over frames) or from a stream,
 * a recording cut off mid-block read up to its end, and anything odd given
 * up on (null, so ffprobe counts instead).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileReader, streamReader } from "../lib/processing/byte_reader.ts";
import { readMatroskaHead } from "../lib/processing/matroska.ts";
import {
  type BlockTally,
  tallyMatroskaBlocks,
} from "../lib/processing/matroska_blocks.ts";
import { makeRecording, missingTool, type TestCodec } from "./helpers.ts";
import { videoPacketTimes } from "./live_helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

/** ffprobe's packet count and time span of a file's first video stream. */
async function ffprobePackets(
  path: string,
): Promise<{ packets: number; spanS: number }> {
  const times = await videoPacketTimes(path);
  return {
    packets: times.length,
    spanS: Math.max(...times) - Math.min(...times),
  };
}

async function tallyFile(
  path: string,
  end?: number,
): Promise<BlockTally | null> {
  const bytes = await Deno.readFile(path);
  const vp8 = new Set(
    readMatroskaHead(bytes)?.tracks.filter((t) => t.codecName === "vp8").map((
      t,
    ) => t.number) ?? [],
  );
  const reader = await fileReader(path, end ?? bytes.length);
  try {
    return await tallyMatroskaBlocks(reader, vp8);
  } finally {
    await reader.close();
  }
}

function videoTrack(path: string, bytes: Uint8Array): number {
  const track = readMatroskaHead(bytes)?.tracks.find((t) => t.type === "video");
  assert.ok(track, `${path} has a video track`);
  return track.number;
}

Deno.test({
  name:
    "matroska blocks: frames and time span match ffprobe for live and seekable VP8, VP9 and H.264 recordings, from a file or a stream",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-blocks-" });
    try {
      for (const codec of ["vp8", "vp9", "h264"] as TestCodec[]) {
        const live = join(dir, `${codec}.live`);
        await makeRecording(live, { codec, seconds: 3, fps: 25 });
        const seekable = join(dir, `${codec}.mkv`);
        const remux = await new Deno.Command("ffmpeg", {
          args: ["-v", "error", "-y", "-i", live, "-c", "copy", seekable],
        }).output();
        assert.ok(remux.success);
        for (const path of [live, seekable]) {
          const bytes = await Deno.readFile(path);
          const number = videoTrack(path, bytes);
          const expected = await ffprobePackets(path);
          const fromFile = await tallyFile(path);
          const fromStream = await tallyMatroskaBlocks(
            streamReader(ReadableStream.from([bytes])),
            new Set(codec === "vp8" ? [number] : []),
          );
          assert.deepEqual(fromStream, fromFile, path);
          const v = fromFile?.get(number);
          assert.ok(v, `${path}: the video track is tallied`);
          assert.equal(v.frames, expected.packets, path);
          assert.ok(
            Math.abs(v.lastS - v.firstS - expected.spanS) < 0.002,
            `${path}: ${v.lastS - v.firstS} s, ffprobe ${expected.spanS} s`,
          );
          if (codec === "vp8") {
            assert.deepEqual(v.largestKeyframe, { width: 320, height: 240 });
          } else assert.equal(v.largestKeyframe, undefined);
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "matroska blocks: a recording cut off mid-block is read to its end; a file that is not Matroska or has damage in the middle is given up on",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-blocks-" });
    try {
      const path = join(dir, "rec.webm");
      const bytes = await makeRecording(path, { seconds: 2 });
      const number = videoTrack(path, bytes);
      const whole = (await tallyFile(path))!.get(number)!;
      const cut = (await tallyFile(path, bytes.length - 100))!.get(number)!;
      assert.ok(cut.frames <= whole.frames && cut.frames >= whole.frames - 2);

      // Junk before the second Cluster, where ffmpeg would resynchronise.
      let second = -1;
      for (let i = 0, seen = 0; i + 4 <= bytes.length; i++) {
        if (
          bytes[i] === 0x1f && bytes[i + 1] === 0x43 && bytes[i + 2] === 0xb6 &&
          bytes[i + 3] === 0x75 && ++seen === 2
        ) {
          second = i;
          break;
        }
      }
      assert.ok(second > 0);
      const damaged = new Uint8Array(bytes.length + 16);
      damaged.set(bytes.subarray(0, second));
      damaged.set(bytes.subarray(second), second + 16);
      const damagedPath = join(dir, "damaged.webm");
      await Deno.writeFile(damagedPath, damaged);
      assert.equal(await tallyFile(damagedPath), null);

      const text = join(dir, "playlist.m3u8");
      await Deno.writeTextFile(text, "#EXTM3U\n#EXTINF:1,\nfile:/etc/passwd\n");
      assert.equal(await tallyFile(text), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
