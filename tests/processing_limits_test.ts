/**
 * Processing limits (issue 12, items 5, 6 and 10): recordings crafted to make
 * ffmpeg use unbounded memory or time, or to make ffprobe open other files,
 * fail at once with a reason that names the limit, and ffmpeg and ffprobe
 * run under a memory limit. FFMPEG_PATH and FFPROBE_PATH point at small
 * wrapper scripts that log every run (and, for the playlist test, trace the
 * files it opens with strace) before exec'ing the real binaries, so a run's
 * pid, limits and peak memory can be read from /proc while it runs.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  describeTools,
  lastLines,
  resolveTools,
  runFfmpeg,
} from "../lib/processing/ffmpeg.ts";
import {
  createSession,
  expectError,
  makeRecording,
  missingTool,
  sendChunk,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const GIB = 1024 ** 3;

function onPath(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (dir && Deno.statSync(join(dir, name)).isFile) return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

async function ffmpeg(args: string[]): Promise<void> {
  const out = await new Deno.Command("ffmpeg", {
    args: ["-v", "error", "-y", ...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`ffmpeg failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** One ffmpeg or ffprobe run a wrapper logged. */
interface Run {
  pid: number;
  tool: string;
  args: string;
}

/** Wrapper scripts for ffmpeg and ffprobe that log their runs. */
interface Spy {
  ffmpeg: string;
  ffprobe: string;
  runs(): Promise<Run[]>;
  /** Everything the traced runs opened (with `trace`). */
  opened(): Promise<string>;
}

async function writeSpy(dir: string, trace?: string): Promise<Spy> {
  const log = join(dir, "runs.log");
  const paths: Record<string, string> = {};
  for (const tool of ["ffmpeg", "ffprobe"]) {
    const real = onPath(tool)!;
    const run = trace
      ? `exec "${trace}" -f -qq -e trace=open,openat -o "${dir}/trace.$$" "${real}" "$@"`
      : `exec "${real}" "$@"`;
    paths[tool] = join(dir, `spy-${tool}`);
    await Deno.writeTextFile(
      paths[tool],
      `#!/bin/sh\necho "$$ ${tool} $*" >> "${log}"\n${run}\n`,
    );
    await Deno.chmod(paths[tool], 0o755);
  }
  return {
    ffmpeg: paths.ffmpeg,
    ffprobe: paths.ffprobe,
    async runs() {
      const text = await Deno.readTextFile(log).catch(() => "");
      return text.split("\n").filter(Boolean).map((line) => {
        const [pid, tool, ...rest] = line.split(" ");
        return { pid: Number(pid), tool, args: rest.join(" ") };
      });
    },
    async opened() {
      let all = "";
      for await (const e of Deno.readDir(dir)) {
        if (e.name.startsWith("trace.")) {
          all += await Deno.readTextFile(join(dir, e.name));
        }
      }
      return all;
    },
  };
}

/** What /proc showed of one run while it ran. */
interface Seen {
  tool: string;
  args: string;
  /** Highest VmPeak and VmHWM seen, in bytes. */
  peak: number;
  hwm: number;
  /** The soft RLIMIT_AS, in bytes (Infinity: unlimited). */
  addressLimit?: number;
}

/** Polls /proc for every run the spy logs, until stopped. */
function watchRuns(spy: Spy): { stop(): Promise<Seen[]> } {
  const seen = new Map<number, Seen>();
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const run of await spy.runs()) {
        let status: string;
        let limits: string;
        try {
          status = await Deno.readTextFile(`/proc/${run.pid}/status`);
          limits = await Deno.readTextFile(`/proc/${run.pid}/limits`);
        } catch {
          continue; // ended
        }
        const kb = (name: string) =>
          Number(
            status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"))?.[1] ??
              0,
          ) * 1024;
        const as = limits.match(/^Max address space\s+(\S+)/m)?.[1];
        const s = seen.get(run.pid) ??
          { tool: run.tool, args: run.args, peak: 0, hwm: 0 };
        s.peak = Math.max(s.peak, kb("VmPeak"));
        s.hwm = Math.max(s.hwm, kb("VmHWM"));
        s.addressLimit = as === "unlimited" ? Infinity : Number(as);
        seen.set(run.pid, s);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return [...seen.values()];
    },
  };
}

/**
 * A VP8 WebM of 10 s of 64x64 pictures whose every keyframe claims to be
 * 16000x16000 (the header still says 64x64): a decoder believes the
 * keyframe and allocates for it.
 */
async function hugeKeyframeWebm(dir: string): Promise<Uint8Array<ArrayBuffer>> {
  const path = join(dir, "tiny.webm");
  await ffmpeg([
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=64x64:rate=30",
    "-t",
    "10",
    "-c:v",
    "libvpx",
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-g",
    "30",
    "-f",
    "webm",
    "-live",
    "1",
    path,
  ]);
  const bytes = await Deno.readFile(path);
  let patched = 0;
  for (let i = 3; i + 7 <= bytes.length; i++) {
    // The VP8 keyframe start code, after a frame tag marking a keyframe.
    if (
      bytes[i] === 0x9d && bytes[i + 1] === 0x01 && bytes[i + 2] === 0x2a &&
      (bytes[i - 3] & 1) === 0
    ) {
      bytes.set([0x80, 0x3e, 0x80, 0x3e], i + 3); // 16000 = 0x3e80, twice
      patched++;
    }
  }
  assert.ok(patched >= 5, `patched ${patched} keyframes`);
  return bytes;
}

let twoFrames: Promise<Uint8Array[]> | undefined;

/** A 4096x4096 VP8 keyframe and the (tiny) frame that repeats it. */
function bigFrames(dir: string): Promise<Uint8Array[]> {
  twoFrames ??= (async () => {
    const path = join(dir, "two.ivf");
    await ffmpeg([
      "-f",
      "lavfi",
      "-i",
      "color=c=blue:size=4096x4096:rate=60",
      "-frames:v",
      "2",
      "-c:v",
      "libvpx",
      "-deadline",
      "realtime",
      "-cpu-used",
      "16",
      "-crf",
      "63",
      "-b:v",
      "100k",
      "-f",
      "ivf",
      path,
    ]);
    const ivf = await Deno.readFile(path);
    const view = new DataView(ivf.buffer);
    const frames: Uint8Array[] = [];
    for (let pos = 32; pos + 12 <= ivf.length;) {
      const size = view.getUint32(pos, true);
      frames.push(ivf.slice(pos + 12, pos + 12 + size));
      pos += 12 + size;
    }
    assert.equal(frames.length, 2);
    return frames;
  })();
  return twoFrames;
}

/**
 * A live WebM of `count` 4096x4096 VP8 frames at `fps`: the keyframe, then
 * the second frame over and over (each a few hundred bytes), written as IVF
 * and remuxed by ffmpeg without decoding.
 */
async function longBigWebm(
  dir: string,
  count: number,
  fps: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const [key, repeat] = await bigFrames(dir);
  const size = 32 + count * 12 + key.length + (count - 1) * repeat.length;
  const ivf = new Uint8Array(size);
  const view = new DataView(ivf.buffer);
  ivf.set(new TextEncoder().encode("DKIFxxxxVP80"));
  view.setUint16(4, 0, true);
  view.setUint16(6, 32, true);
  view.setUint16(12, 4096, true);
  view.setUint16(14, 4096, true);
  view.setUint32(16, fps, true);
  view.setUint32(20, 1, true);
  view.setUint32(24, count, true);
  let pos = 32;
  for (let i = 0; i < count; i++) {
    const frame = i === 0 ? key : repeat;
    view.setUint32(pos, frame.length, true);
    view.setBigUint64(pos + 4, BigInt(i), true);
    ivf.set(frame, pos + 12);
    pos += 12 + frame.length;
  }
  const ivfPath = join(dir, `long-${fps}.ivf`);
  const webm = join(dir, `long-${fps}.webm`);
  await Deno.writeFile(ivfPath, ivf);
  await ffmpeg([
    "-f",
    "ivf",
    "-i",
    ivfPath,
    "-c",
    "copy",
    "-f",
    "webm",
    "-live",
    "1",
    webm,
  ]);
  return await Deno.readFile(webm);
}

async function uploadAndComplete(
  server: TestServer,
  bytes: Uint8Array<ArrayBuffer>,
  firstIndex = 0,
): Promise<string> {
  const id = await createSession(server.url);
  const res = await sendChunk(server.url, id, bytes, firstIndex);
  assert.equal(res.status, 200, await res.text());
  const done = await fetch(`${server.url}/complete_job/${id}/`, {
    method: "POST",
  });
  assert.equal(done.status, 200);
  await done.body?.cancel();
  return id;
}

Deno.test({
  name:
    "processing limits: a VP8 keyframe claiming 16000x16000 fails within seconds naming MAX_VIDEO_PIXELS, and no ffmpeg run passes FFMPEG_MAX_MEMORY_BYTES",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-limits-" });
    let server: TestServer | undefined;
    try {
      const bytes = await hugeKeyframeWebm(dir);
      const spy = await writeSpy(dir);
      server = await startTestServer({
        FFMPEG_PATH: spy.ffmpeg,
        FFPROBE_PATH: spy.ffprobe,
        FFMPEG_MAX_MEMORY_BYTES: String(GIB),
      });
      const watch = watchRuns(spy);
      const t0 = Date.now();
      const id = await uploadAndComplete(server, bytes);
      const st = await waitForStatus(server.url, id, undefined, 60_000);
      const ms = Date.now() - t0;
      const seen = await watch.stop();
      assert.equal(st.status, "failed", JSON.stringify(st));
      const error = String(st.error);
      assert.match(error, /16000x16000/);
      assert.match(error, /MAX_VIDEO_PIXELS/);
      assert.doesNotMatch(error, /@ 0x/);
      assert.ok(ms < 15_000, `failed after ${ms} ms`);
      for (const s of seen) {
        assert.ok(s.peak <= GIB, `${s.tool} reached ${s.peak} bytes`);
      }
      const peak = Math.max(0, ...seen.map((s) => s.peak));
      console.log(
        `processing-limits figures: 16000x16000 keyframes (${bytes.length} B): failed after ${ms} ms, ${seen.length} ffmpeg/ffprobe runs seen, highest VmPeak ${
          (peak / 2 ** 20).toFixed(0)
        } MiB: "${error}"`,
      );
    } finally {
      await server?.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/**
 * Runs the 16000x16000 file through ffmpeg as a re-encode would, with the
 * given memory limiter in place, without and with `-max_pixels`.
 */
async function decodeUnderLimit(
  dir: string,
  input: string,
  spy: Spy,
  via: "prlimit" | "ulimit",
): Promise<string> {
  const tools = await resolveTools(spy.ffmpeg, spy.ffprobe, {
    maxMemoryBytes: GIB,
  });
  assert.equal(tools.memoryLimit?.via, via);
  assert.match(describeTools(tools), /address space is limited to 1024 MiB/);
  const reencode = (extra: string[]) => [
    "-f",
    "matroska",
    ...extra,
    "-i",
    `file:${input}`,
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-f",
    "mp4",
    `file:${join(dir, "out.mp4")}`,
  ];
  const figures: string[] = [];
  for (const extra of [[], ["-max_pixels", String(7680 * 4320)]]) {
    const watch = watchRuns(spy);
    const t0 = Date.now();
    const err = await runFfmpeg(tools, reencode(extra), { timeoutMs: 120_000 })
      .then(() => undefined, (e: Error) => e);
    const ms = Date.now() - t0;
    const seen = (await watch.stop()).filter((s) =>
      s.tool === "ffmpeg" && s.args.includes("libx264")
    );
    assert.ok(err, "ffmpeg must fail");
    assert.doesNotMatch(err.message, /@ 0x/);
    assert.ok(seen.length > 0, "the run was seen in /proc");
    for (const s of seen) {
      assert.equal(s.addressLimit, GIB, "RLIMIT_AS is the limit");
      assert.ok(s.peak <= GIB, `VmPeak ${s.peak} over the limit`);
    }
    if (extra.length) assert.ok(ms < 10_000, `-max_pixels run took ${ms} ms`);
    figures.push(
      `${
        extra.length ? "with" : "without"
      } -max_pixels: failed after ${ms} ms, VmPeak ${
        (Math.max(...seen.map((s) => s.peak)) / 2 ** 20).toFixed(0)
      } MiB, VmHWM ${
        (Math.max(...seen.map((s) => s.hwm)) / 2 ** 20).toFixed(0)
      } MiB ("${err.message.slice(0, 160)}")`,
    );
  }
  return figures.join("; ");
}

Deno.test({
  name:
    "processing limits: ffmpeg runs with RLIMIT_AS set by prlimit: a 16000x16000 re-encode stops at the limit, and -max_pixels refuses it at once",
  ignore: ffmpegMissing || !onPath("prlimit"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-rlimit-" });
    try {
      const input = join(dir, "huge.webm");
      await Deno.writeFile(input, await hugeKeyframeWebm(dir));
      const spy = await writeSpy(dir);
      const figures = await decodeUnderLimit(dir, input, spy, "prlimit");
      console.log(`processing-limits figures: prlimit, 1 GiB: ${figures}`);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "processing limits: without prlimit on PATH the limit is set by sh's ulimit -v, and holds the same way",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-ulimit-" });
    const path = Deno.env.get("PATH") ?? "";
    try {
      const input = join(dir, "huge.webm");
      await Deno.writeFile(input, await hugeKeyframeWebm(dir));
      const spy = await writeSpy(dir);
      const bin = join(dir, "bin");
      await Deno.mkdir(bin);
      Deno.env.set("PATH", bin);
      const figures = await decodeUnderLimit(dir, input, spy, "ulimit");
      console.log(`processing-limits figures: ulimit -v, 1 GiB: ${figures}`);
    } finally {
      Deno.env.set("PATH", path);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "processing limits: a 4096x4096 VP8 recording of 6000 frames at 60 fps in a small file fails within seconds naming MAX_VIDEO_PIXEL_RATE, before any re-encode",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-rate-" });
    let server: TestServer | undefined;
    try {
      const bytes = await longBigWebm(dir, 6000, 60);
      const spy = await writeSpy(dir);
      server = await startTestServer({
        FFMPEG_PATH: spy.ffmpeg,
        FFPROBE_PATH: spy.ffprobe,
      });
      const t0 = Date.now();
      const id = await uploadAndComplete(server, bytes);
      const st = await waitForStatus(server.url, id, undefined, 60_000);
      const ms = Date.now() - t0;
      assert.equal(st.status, "failed", JSON.stringify(st));
      const error = String(st.error);
      assert.match(error, /MAX_VIDEO_PIXEL_RATE/);
      assert.match(error, /4096x4096, 6000 frames/);
      assert.ok(ms < 15_000, `failed after ${ms} ms`);
      const encodes = (await spy.runs()).filter((r) => r.args.includes(".mp4"));
      assert.deepEqual(encodes, [], "no re-encode was started");
      console.log(
        `processing-limits figures: 4096x4096 x 6000 frames at 60 fps (${bytes.length} B): failed after ${ms} ms without a re-encode: "${error}"`,
      );
    } finally {
      await server?.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "processing limits: the same frames at 24 fps stay under the rate but fail within seconds on a lower MAX_ENCODE_PIXELS",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-total-" });
    let server: TestServer | undefined;
    try {
      const bytes = await longBigWebm(dir, 6000, 24);
      server = await startTestServer({ MAX_ENCODE_PIXELS: String(50e9) });
      const t0 = Date.now();
      const id = await uploadAndComplete(server, bytes);
      const st = await waitForStatus(server.url, id, undefined, 60_000);
      const ms = Date.now() - t0;
      assert.equal(st.status, "failed", JSON.stringify(st));
      assert.match(String(st.error), /MAX_ENCODE_PIXELS/);
      assert.doesNotMatch(String(st.error), /MAX_VIDEO_PIXEL_RATE/);
      assert.ok(ms < 15_000, `failed after ${ms} ms`);
      console.log(
        `processing-limits figures: 4096x4096 x 6000 frames at 24 fps, MAX_ENCODE_PIXELS=5e10: failed after ${ms} ms: "${st.error}"`,
      );
    } finally {
      await server?.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/** An HLS playlist naming `target` as its one segment. */
function playlist(target: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(
    `#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:${target}\n#EXT-X-ENDLIST\n`,
  );
}

Deno.test({
  name:
    "processing limits: an HLS playlist sent as chunk 8 onwards is refused by processing with a reason, never reaches ffprobe, and the file it names is never opened",
  ignore: ffmpegMissing,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-hls-" });
    let server: TestServer | undefined;
    try {
      const secret = join(dir, "someone-elses-recording.mkv");
      await ffmpeg([
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=10",
        "-t",
        "1",
        "-c:v",
        "libvpx",
        "-f",
        "webm",
        secret,
      ]);
      const strace = onPath("strace");
      const spy = await writeSpy(dir, strace);
      server = await startTestServer({
        FFMPEG_PATH: spy.ffmpeg,
        FFPROBE_PATH: spy.ffprobe,
      });
      if (strace) {
        assert.match(
          await spy.opened(),
          /openat\(/,
          "strace records what the runs open",
        );
      }
      // At index 0 ingest refuses it.
      const first = await createSession(server.url);
      await expectError(
        await sendChunk(server.url, first, playlist(secret), 0),
        415,
      );
      // From index 8 on, ingest does not look at the bytes.
      const id = await uploadAndComplete(server, playlist(secret), 8);
      const st = await waitForStatus(server.url, id, undefined, 60_000);
      assert.doesNotMatch(await spy.opened(), /someone-elses-recording/);
      const runs = (await spy.runs()).filter((r) => r.args.includes(id));
      assert.deepEqual(runs, [], "no ffmpeg or ffprobe run read the playlist");
      assert.equal(st.status, "failed", JSON.stringify(st));
      assert.match(
        String(st.error),
        /does not start like a WebM\/Matroska or MP4 file/,
      );
      console.log(
        `processing-limits figures: HLS playlist at chunk 8: "${st.error}"; ffmpeg/ffprobe runs on it: 0; ${
          strace ? "strace saw no open of the file it names" : "strace missing"
        }`,
      );
    } finally {
      await server?.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "processing limits: a recording ffprobe cannot read fails with ffprobe's message, without heap addresses or subfile options",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    const tmp = await Deno.makeTempFile({ suffix: ".webm" });
    try {
      // A WebM's EBML header and Segment start, then bytes that are no element.
      const start = (await makeRecording(tmp, { seconds: 1 })).subarray(0, 60);
      const bytes = new Uint8Array(50_000).fill(7);
      bytes.set(start);
      const id = await uploadAndComplete(server, bytes);
      const st = await waitForStatus(server.url, id, undefined, 60_000);
      assert.equal(st.status, "failed", JSON.stringify(st));
      const error = String(st.error);
      assert.match(error, /ffprobe could not read the recording/);
      assert.match(error, /\[matroska,webm\] Length 6/);
      assert.doesNotMatch(error, /@ 0x|0x[0-9a-f]{8}/);
      assert.doesNotMatch(error, /subfile|\/tmp\//);
      console.log(`processing-limits figures: unreadable: "${error}"`);
    } finally {
      await server.close();
      await Deno.remove(tmp).catch(() => {});
    }
  },
});

Deno.test("processing limits: ffmpeg's error lines lose their heap addresses and paths", () => {
  assert.equal(
    lastLines(
      "[matroska,webm @ 0x55f6a13221c0] EBML header parsing failed\n" +
        "[vp8 @ 0x556cff405b80] [IMGUTILS @ 0x7faf20dfcff0] Picture size 16000x16000 exceeds specified max pixel count\n" +
        "subfile,,start,0,end,512,,:file:/srv/data/recordings/x/chunks/data: Invalid data found when processing input\n",
    ),
    "[matroska,webm] EBML header parsing failed; [vp8] [IMGUTILS] Picture size 16000x16000 exceeds specified max pixel count; data: Invalid data found when processing input",
  );
});
