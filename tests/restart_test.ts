import assert from "node:assert/strict";
import {
  createSession,
  makeRecording,
  missingTool,
  probeFile,
  sendChunk,
  spawnServer,
  splitBytes,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

Deno.test({
  name:
    "restart: a server stopped mid-upload (SIGTERM, then SIGKILL) resumes on the same data folder",
  ignore: ffmpegMissing,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-restart-" });
    try {
      const source = await makeRecording(
        `${dataDir}/../src-${crypto.randomUUID()}.webm`,
        {
          seconds: 3,
        },
      );
      const pieces = splitBytes(source, [12_000]);
      const third = Math.floor(pieces.length / 3);

      let server = await spawnServer(dataDir);
      const id = await createSession(server.url);
      for (let i = 0; i < third; i++) {
        const res = await sendChunk(server.url, id, pieces[i], i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      const term = await server.stop("SIGTERM");
      assert.equal(term.code, 0, server.output());

      server = await spawnServer(dataDir);
      let st = await (await fetch(`${server.url}/check_status/${id}/`)).json();
      assert.equal(st.status, "recording");
      assert.equal(st.chunks_received, third);
      for (let i = third; i < 2 * third; i++) {
        const res = await sendChunk(server.url, id, pieces[i], i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      await server.stop("SIGKILL");

      server = await spawnServer(dataDir);
      st = await (await fetch(`${server.url}/check_status/${id}/`)).json();
      assert.equal(st.chunks_received, 2 * third);
      for (let i = 2 * third; i < pieces.length; i++) {
        const res = await sendChunk(server.url, id, pieces[i], i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      const done = await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      });
      assert.equal(done.status, 200);
      await done.body?.cancel();
      st = await waitForStatus(server.url, id);
      assert.equal(st.status, "complete", JSON.stringify(st));
      assert.equal(st.bytes_received, source.length);
      const res = await fetch(`${server.url}/media/${id}/${id}.webm`);
      const out = `${dataDir}/check.webm`;
      await Deno.writeFile(out, new Uint8Array(await res.arrayBuffer()));
      await Deno.writeFile(`${dataDir}/src.webm`, source);
      assert.deepEqual(
        await videoPacketHashes(out),
        await videoPacketHashes(`${dataDir}/src.webm`),
      );
      await server.stop("SIGTERM");
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "restart: a server killed while a job is processing finishes the job after restart",
  ignore: ffmpegMissing,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-restart-" });
    const srcPath = await Deno.makeTempFile({ suffix: ".webm" });
    try {
      const source = await makeRecording(srcPath, {
        codec: "vp8",
        seconds: 20,
        fps: 30,
      });
      const sourceProbe = await probeFile(srcPath);
      let server = await spawnServer(dataDir);
      const id = await createSession(server.url);
      for (const [i, piece] of splitBytes(source, [200_000]).entries()) {
        const res = await sendChunk(server.url, id, piece, i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      await (await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      }))
        .body
        ?.cancel();
      const mid = await waitForStatus(server.url, id, ["processing"], 30_000);
      const deadline = Date.now() + 30_000;
      let st = mid;
      while (
        Date.now() < deadline && st.status === "processing" &&
        !(Number(st.progress) > 0.2)
      ) {
        await new Promise((r) => setTimeout(r, 50));
        st = await (await fetch(`${server.url}/check_status/${id}/`)).json();
      }
      assert.equal(
        st.status,
        "processing",
        `the job ended before the kill: ${JSON.stringify(st)}`,
      );
      await server.stop("SIGKILL");

      server = await spawnServer(dataDir);
      const listed = await (await fetch(`${server.url}/video/${id}/`)).json();
      // The WebM is listed before the MP4 is made (it may be already).
      assert.ok(
        (listed.completed_videos as string[]).every((n) => n === `${id}.webm`),
        JSON.stringify(listed),
      );
      st = await waitForStatus(server.url, id, ["complete", "failed"], 120_000);
      assert.equal(st.status, "complete", JSON.stringify(st));
      const mp4 = `${dataDir}/check.mp4`;
      const res = await fetch(`${server.url}/media/${id}/${id}.mp4`);
      assert.equal(res.status, 200);
      await Deno.writeFile(mp4, new Uint8Array(await res.arrayBuffer()));
      const probe = await probeFile(mp4);
      assert.equal(probe.video?.codec, "h264");
      assert.equal(probe.video?.packets, sourceProbe.video?.packets);
      assert.ok(
        Math.abs(probe.durationS - 20) < 0.2,
        `mp4 lasts ${probe.durationS}`,
      );
      await server.stop("SIGTERM");
    } finally {
      await Deno.remove(dataDir, { recursive: true });
      await Deno.remove(srcPath);
    }
  },
});
