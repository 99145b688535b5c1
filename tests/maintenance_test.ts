import assert from "node:assert/strict";
import {
  applyRetention,
  expireIdleRecordings,
  sweepOrphans,
} from "../lib/recordings/maintenance.ts";
import {
  createSession,
  makeRecording,
  mediaBytes,
  missingTool,
  sendChunk,
  startTestServer,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "maintenance: idle recordings with data are finalized and empty ones removed with their folders",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer({ RECORDING_IDLE_TIMEOUT_S: "1" });
    try {
      const tmp = await Deno.makeTempFile({ suffix: ".webm" });
      const bytes = await makeRecording(tmp, { seconds: 1 });
      await Deno.remove(tmp);
      const withData = await createSession(server.url);
      const res = await sendChunk(server.url, withData, bytes);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      const empty = await createSession(server.url);
      const fresh = await createSession(server.url);
      assert.ok(await exists(`${server.dataDir}/recordings/${empty}`));

      const ctx = server.service.ctx;
      const early = await expireIdleRecordings(ctx, Date.now());
      assert.deepEqual(early, { finalized: [], removed: [] });

      const later = await expireIdleRecordings(ctx, Date.now() + 1500);
      assert.deepEqual(later.finalized, [withData]);
      assert.ok(later.removed.includes(empty));
      assert.ok(later.removed.includes(fresh));

      const gone = await fetch(`${server.url}/check_status/${empty}/`);
      assert.equal(gone.status, 404);
      await gone.body?.cancel();
      assert.equal(
        await exists(`${server.dataDir}/recordings/${empty}`),
        false,
      );

      const st = await waitForStatus(server.url, withData);
      assert.equal(st.status, "complete");
      const late = await sendChunk(server.url, withData, bytes);
      assert.equal(late.status, 409);
      await late.body?.cancel();
    } finally {
      await server.close();
    }
  },
});

Deno.test("maintenance: start-up sweeps uncommitted chunk files, unknown recording folders and scratch space", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-sweep-" });
  try {
    let id = "";
    let server = await startTestServer({
      DATA_DIR: dataDir,
      RUN_WORKER: "false",
    });
    try {
      id = await createSession(server.url);
      const res = await sendChunk(server.url, id, mediaBytes(500, 3));
      assert.equal(res.status, 200);
      await res.body?.cancel();
    } finally {
      await server.close();
    }
    const chunkDir = `${dataDir}/recordings/${id}/chunks`;
    const committed = [...Deno.readDirSync(chunkDir)].map((e) => e.name);
    assert.equal(committed.length, 1);
    await Deno.writeFile(
      `${chunkDir}/${crypto.randomUUID()}.chunk`,
      mediaBytes(77),
    );
    await Deno.writeFile(`${chunkDir}/${committed[0]}`, mediaBytes(300), {
      append: true,
    });
    assert.equal(Deno.statSync(`${chunkDir}/${committed[0]}`).size, 800);
    const strayId = crypto.randomUUID();
    await Deno.mkdir(`${dataDir}/recordings/${strayId}/chunks`, {
      recursive: true,
    });
    await Deno.writeFile(
      `${dataDir}/recordings/${strayId}/chunks/x.chunk`,
      mediaBytes(9),
    );
    await Deno.mkdir(`${dataDir}/work/${id}`, { recursive: true });
    await Deno.writeFile(`${dataDir}/work/${id}/source.webm`, mediaBytes(9));

    server = await startTestServer({ DATA_DIR: dataDir, RUN_WORKER: "false" });
    try {
      assert.deepEqual(
        [...Deno.readDirSync(chunkDir)].map((e) => e.name),
        committed,
      );
      assert.equal(Deno.statSync(`${chunkDir}/${committed[0]}`).size, 500);
      assert.equal(await exists(`${dataDir}/recordings/${strayId}`), false);
      assert.equal(await exists(`${dataDir}/work/${id}`), false);
      const st = await (await fetch(`${server.url}/check_status/${id}/`))
        .json();
      assert.equal(st.chunks_received, 1);
      assert.equal(st.bytes_received, 500);
      assert.deepEqual(await sweepOrphans(server.service.ctx), {
        files: 0,
        recordings: 0,
      });
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test({
  name:
    "maintenance: RETENTION_DAYS deletes finished recordings and their files once they are old enough",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer({ RETENTION_DAYS: "2" });
    try {
      const tmp = await Deno.makeTempFile({ suffix: ".webm" });
      const bytes = await makeRecording(tmp, { seconds: 1 });
      await Deno.remove(tmp);
      const id = await createSession(server.url);
      await (await sendChunk(server.url, id, bytes)).body?.cancel();
      await (await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      }))
        .body?.cancel();
      assert.equal((await waitForStatus(server.url, id)).status, "complete");
      const ctx = server.service.ctx;
      assert.deepEqual(await applyRetention(ctx, Date.now() + 86_400_000), []);
      assert.deepEqual(await applyRetention(ctx, Date.now() + 3 * 86_400_000), [
        id,
      ]);
      const gone = await fetch(`${server.url}/video/${id}/`);
      assert.equal(gone.status, 404);
      await gone.body?.cancel();
      assert.equal(await exists(`${server.dataDir}/recordings/${id}`), false);
    } finally {
      await server.close();
    }
  },
});
