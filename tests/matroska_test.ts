/**
 * lib/matroska.ts against files made by the real ffmpeg, compared with what
 * the real ffprobe says about the same files.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  codecNameOf,
  type MatroskaHead,
  type MatroskaTrack,
  readMatroskaHead,
} from "../lib/processing/matroska.ts";
import { makeRecording, missingTool, probeFile } from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

async function ffmpeg(args: string[]): Promise<void> {
  const out = await new Deno.Command("ffmpeg", {
    args: ["-v", "error", "-y", ...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

/** Asserts that the parsed head says what ffprobe says about the file. */
async function assertLikeFfprobe(
  path: string,
  head: MatroskaHead | null,
): Promise<void> {
  assert.ok(head, `${path}: no head read`);
  const probed = await probeFile(path);
  const want = probed.streams.filter((s) =>
    s.codec_type === "video" || s.codec_type === "audio"
  );
  assert.deepEqual(
    head.tracks.map((t) => [t.type, t.codecName]),
    want.map((s) => [s.codec_type, s.codec_name]),
  );
  for (const [i, s] of want.entries()) {
    const t: MatroskaTrack = head.tracks[i];
    if (s.codec_type === "video") {
      assert.equal(t.width, s.width);
      assert.equal(t.height, s.height);
    } else {
      assert.equal(t.channels, s.channels);
      assert.equal(t.sampleRate, Number(s.sample_rate));
    }
  }
  if (probed.formatDuration === undefined) {
    assert.equal(head.durationS, undefined);
  } else {
    assert.ok(head.durationS !== undefined, "a duration");
    assert.ok(
      Math.abs(head.durationS - Number(probed.formatDuration)) < 1e-6,
      `duration ${head.durationS} vs ffprobe ${probed.formatDuration}`,
    );
  }
}

async function firstBytes(path: string, n: number): Promise<Uint8Array> {
  const bytes = await Deno.readFile(path);
  return bytes.subarray(0, n);
}

Deno.test({
  name:
    "matroska: a live WebM (MediaRecorder-like: no duration, unknown sizes) reads like ffprobe from its first 64 KiB",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-mkv-" });
    try {
      const path = join(dir, "live.webm");
      const bytes = await makeRecording(path, { codec: "vp9", seconds: 2 });
      const head = readMatroskaHead(bytes.subarray(0, 65536));
      await assertLikeFfprobe(path, head);
      assert.equal(head?.docType, "webm");
      assert.equal(head?.tracks[0].codecId, "V_VP9");
      assert.equal(head?.durationS, undefined);
      // The whole file reads the same: the parser stops at the first Cluster.
      assert.deepEqual(readMatroskaHead(bytes), head);

      // Clusters of unknown size, as Chrome's MediaRecorder writes them.
      const unknown = bytes.slice();
      let clusters = 0;
      for (let i = 0; i + 12 < unknown.length; i++) {
        if (
          unknown[i] !== 0x1f || unknown[i + 1] !== 0x43 ||
          unknown[i + 2] !== 0xb6 || unknown[i + 3] !== 0x75
        ) continue;
        const lead = unknown[i + 4];
        const n = Math.clz32(lead) - 23;
        unknown[i + 4] = 0xff >> n;
        unknown.fill(0xff, i + 5, i + 4 + n);
        clusters++;
      }
      assert.ok(clusters > 0);
      const unknownPath = join(dir, "unknown-clusters.webm");
      await Deno.writeFile(unknownPath, unknown);
      assert.deepEqual(readMatroskaHead(unknown), head);
      await assertLikeFfprobe(unknownPath, readMatroskaHead(unknown));

      const vp8 = join(dir, "vp8.webm");
      await makeRecording(vp8, { codec: "vp8", seconds: 1 });
      await assertLikeFfprobe(vp8, readMatroskaHead(await Deno.readFile(vp8)));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "matroska: a seekable WebM (remuxed by ffmpeg) gives ffprobe's duration from its first 64 KiB",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-mkv-" });
    try {
      const live = join(dir, "live.webm");
      await makeRecording(live, { codec: "vp9", seconds: 3 });
      const seekable = join(dir, "seekable.webm");
      await ffmpeg(["-i", live, "-c", "copy", "-f", "webm", seekable]);
      const head = readMatroskaHead(await firstBytes(seekable, 65536));
      await assertLikeFfprobe(seekable, head);
      assert.ok(Math.abs(head!.durationS! - 3) < 0.1, `${head!.durationS} s`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "matroska: an MKV with H.264 and AAC (stereo, 44.1 kHz) reads like ffprobe",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-mkv-" });
    try {
      const path = join(dir, "h264.mkv");
      await ffmpeg([
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=352x288:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-f",
        "matroska",
        path,
      ]);
      const head = readMatroskaHead(await firstBytes(path, 65536));
      await assertLikeFfprobe(path, head);
      assert.equal(head?.docType, "matroska");
      assert.deepEqual(head?.tracks.map((t) => t.codecId), [
        "V_MPEG4/ISO/AVC",
        "A_AAC",
      ]);

      // The same streams live (unknown-size Segment and Clusters), H.264 in WebM
      // as a browser records it.
      const live = join(dir, "h264-live.mkv");
      await makeRecording(live, { codec: "h264", seconds: 1 });
      await assertLikeFfprobe(
        live,
        readMatroskaHead(await Deno.readFile(live)),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "matroska: bytes that are not Matroska, or cut off before the Tracks end, give null",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-mkv-" });
    try {
      const mp4 = join(dir, "rec.mp4");
      const mp4Bytes = await makeRecording(mp4, {
        codec: "vp9-mp4",
        seconds: 1,
      });
      assert.equal(readMatroskaHead(mp4Bytes), null);
      assert.equal(readMatroskaHead(new Uint8Array(0)), null);

      const live = join(dir, "live.webm");
      const bytes = await makeRecording(live, { seconds: 1 });
      assert.equal(readMatroskaHead(bytes.subarray(0, 4)), null);
      // The Tracks element is whole at some length, not one byte before.
      let shortest = 0;
      for (let n = 16; n <= 4096 && !shortest; n++) {
        if (readMatroskaHead(bytes.subarray(0, n))) shortest = n;
      }
      assert.ok(shortest > 0, "read from the first 4 KiB");
      assert.equal(readMatroskaHead(bytes.subarray(0, shortest - 1)), null);

      // Noise behind the EBML magic (like the corrupt recording of jobs_test).
      for (let i = 0; i < 200; i++) {
        const noise = crypto.getRandomValues(new Uint8Array(4096));
        noise.set([0x1a, 0x45, 0xdf, 0xa3]);
        assert.equal(readMatroskaHead(noise), null);
      }
      // Another EBML document type is not Matroska.
      const other = bytes.slice(0, shortest);
      const at = other.findIndex((_, i) =>
        other[i] === 0x77 && other[i + 1] === 0x65 && other[i + 2] === 0x62 &&
        other[i + 3] === 0x6d
      );
      assert.ok(at > 0, "the DocType says webm");
      other.set(new TextEncoder().encode("wxyz"), at);
      assert.equal(readMatroskaHead(other), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("matroska: CodecIDs map to ffprobe's codec names", () => {
  assert.equal(codecNameOf("V_VP8"), "vp8");
  assert.equal(codecNameOf("V_VP9"), "vp9");
  assert.equal(codecNameOf("V_AV1"), "av1");
  assert.equal(codecNameOf("V_MPEG4/ISO/AVC"), "h264");
  assert.equal(codecNameOf("V_MPEGH/ISO/HEVC"), "hevc");
  assert.equal(codecNameOf("A_OPUS"), "opus");
  assert.equal(codecNameOf("A_VORBIS"), "vorbis");
  assert.equal(codecNameOf("A_AAC"), "aac");
  assert.equal(codecNameOf("A_AAC/MPEG4/LC"), "aac");
  assert.equal(codecNameOf("V_PRORES"), "v_prores");
});
