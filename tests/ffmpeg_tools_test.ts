import assert from "node:assert/strict";
import { resolveTools, runFfmpeg } from "../lib/processing/ffmpeg.ts";
import {
  createSession,
  makeRecording,
  missingTool,
  probeFile,
  sendChunk,
  spawnServer,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

Deno.test({
  name: "ffmpeg tools: binaries named by env win, then PATH",
  ignore: ffmpegMissing,
  async fn() {
    const fromPath = await resolveTools();
    assert.equal(fromPath.ffmpegSource, "PATH");
    assert.equal(fromPath.ffprobeSource, "PATH");
    assert.ok(fromPath.version[0] >= 4, `version ${fromPath.version}`);
    assert.equal(fromPath.missing, undefined);
    const fromEnv = await resolveTools(fromPath.ffmpeg, fromPath.ffprobe, {
      nice: 5,
    });
    assert.equal(fromEnv.ffmpegSource, "env");
    assert.equal(fromEnv.nice?.level, 5);
  },
});

Deno.test("ffmpeg tools: a missing binary is reported, and every run fails with that reason", async () => {
  const tools = await resolveTools(
    "/nonexistent/ffmpeg",
    "/nonexistent/ffprobe",
  );
  assert.match(tools.missing ?? "", /could not be run/);
  await assert.rejects(runFfmpeg(tools, ["-version"]), /could not be run/);
});

Deno.test({
  name:
    "ffmpeg tools: a hung ffmpeg is killed by the timeout and by the abort signal",
  ignore: ffmpegMissing,
  async fn() {
    const tools = await resolveTools();
    const args = [
      "-f",
      "lavfi",
      "-re",
      "-i",
      "testsrc2=size=64x64:rate=10",
      "-f",
      "null",
      "-",
    ];
    const t0 = Date.now();
    await assert.rejects(
      runFfmpeg(tools, args, { timeoutMs: 800 }),
      /longer than 800 ms/,
    );
    assert.ok(Date.now() - t0 < 5000);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(
      runFfmpeg(tools, args, { signal: ac.signal }),
      /cancelled/,
    );
  },
});

Deno.test({
  name:
    "ffmpeg tools: without ffmpeg on PATH the server falls back to the npm binaries, says so, and processes",
  ignore: ffmpegMissing,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-npmff-" });
    const emptyBin = await Deno.makeTempDir({ prefix: "tapedeck-nobin-" });
    try {
      const bytes = await makeRecording(
        `${dataDir}/../src-npm-${crypto.randomUUID()}.webm`,
        {
          codec: "vp9",
          seconds: 2,
        },
      );
      const server = await spawnServer(dataDir, { PATH: emptyBin });
      try {
        assert.match(server.output(), /ffmpeg \S+ from npm \(/);
        assert.match(server.output(), /ffprobe from npm \(/);
        const id = await createSession(server.url);
        const res = await sendChunk(server.url, id, bytes);
        assert.equal(res.status, 200);
        await res.body?.cancel();
        await (await fetch(`${server.url}/complete_job/${id}/`, {
          method: "POST",
        })).body
          ?.cancel();
        const st = await waitForStatus(
          server.url,
          id,
          ["complete", "failed"],
          120_000,
        );
        assert.equal(st.status, "complete", JSON.stringify(st));
        const mp4 = await fetch(`${server.url}/media/${id}/${id}.mp4`);
        assert.equal(mp4.status, 200);
        await Deno.writeFile(
          `${dataDir}/out.mp4`,
          new Uint8Array(await mp4.arrayBuffer()),
        );
        const probe = await probeFile(`${dataDir}/out.mp4`);
        assert.equal(probe.video?.codec, "vp9");
        assert.equal(probe.audio?.codec, "opus");
        assert.ok(
          Math.abs(probe.durationS - 2) < 0.15,
          `lasts ${probe.durationS}`,
        );
      } finally {
        await server.stop("SIGTERM");
      }
    } finally {
      await Deno.remove(dataDir, { recursive: true });
      await Deno.remove(emptyBin, { recursive: true });
    }
  },
});
