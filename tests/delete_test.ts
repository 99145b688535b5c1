/**
 * Issue 12, finding 3: deleting a recording while it is processing used to
 * leave its finished files on disk, and chunks racing the delete got 500s
 * and kept a handle on the deleted data file. Deleting now stops the job,
 * nothing is published for the gone recording, no byte stays on disk, the
 * racing chunks get clean 404/409 answers, and the periodic sweep removes
 * stored recordings without a record, with a shared KV too.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { runSweep } from "../lib/recordings/maintenance.ts";
import {
  makeRecording,
  mediaBytes,
  missingTool,
  splitBytes,
  startTestServer,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

async function create(url: string): Promise<{ id: string; token: string }> {
  const res = await fetch(`${url}/create/`, { method: "POST" });
  const body = await res.json();
  return { id: body.video_id, token: body.upload_token };
}

function terminate(url: string, id: string, token: string) {
  return fetch(`${url}/files/${id}`, {
    method: "DELETE",
    headers: { "Tus-Resumable": "1.0.0", "X-Upload-Token": token },
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Files this process holds open that were deleted and belong to `id`. */
async function deletedHandles(id: string): Promise<string[]> {
  const held: string[] = [];
  for await (const fd of Deno.readDir("/proc/self/fd")) {
    const target = await Deno.readLink(`/proc/self/fd/${fd.name}`).catch(
      () => "",
    );
    if (target.includes(id) && target.endsWith("(deleted)")) held.push(target);
  }
  return held;
}

Deno.test({
  name:
    "delete: a recording deleted while it is processing leaves no byte on disk and nothing is published for it afterwards",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    try {
      const tmp = await Deno.makeTempFile({ suffix: ".webm" });
      // VP8 is re-encoded: processing takes long enough to delete midway.
      const bytes = await makeRecording(tmp, { codec: "vp8", seconds: 20 });
      await Deno.remove(tmp);
      for (let run = 0; run < 3; run++) {
        const { id, token } = await create(server.url);
        for (const [i, piece] of splitBytes(bytes, [400_000]).entries()) {
          const res = await fetch(`${server.url}/add_data/${id}/`, {
            method: "POST",
            body: piece,
            headers: { "x-chunk-index": String(i) },
          });
          assert.equal(res.status, 200, await res.text());
        }
        const changes: unknown[] = [];
        const ws = new WebSocket(`${server.url.replace("http", "ws")}/ws`);
        await new Promise((r) => ws.onopen = r);
        ws.onmessage = (e) => {
          const m = JSON.parse(e.data);
          if (m.type === "change" && m.recording.id === id) {
            changes.push(m.recording);
          }
        };
        const done = await fetch(
          `${server.url}/complete_job/${id}/?last_chunk=${
            Math.ceil(bytes.length / 400_000) - 1
          }`,
          { method: "POST" },
        );
        assert.equal(done.status, 200, await done.text());
        await waitForStatus(server.url, id, ["processing"]);
        // Wait until the encode runs.
        const deadline = Date.now() + 20_000;
        while (Date.now() < deadline) {
          const st = await (await fetch(`${server.url}/check_status/${id}/`))
            .json();
          if (st.stage === "encoding mp4" && st.progress > 0.06) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        const del = await terminate(server.url, id, token);
        assert.equal(del.status, 204, await del.text());
        const seenAtDelete = changes.length;
        await new Promise((r) => setTimeout(r, 2000));
        ws.close();
        const dir = join(server.dataDir, "recordings", id);
        assert.equal(await exists(dir), false, `${dir} is still there`);
        const work = [...Deno.readDirSync(server.dataDir)].some((e) =>
            e.name === "work"
          )
          ? [...Deno.readDirSync(join(server.dataDir, "work"))]
            .filter((e) => e.name.startsWith(id))
          : [];
        assert.deepEqual(work, [], "no scratch folder of the recording");
        const after = changes.slice(seenAtDelete);
        assert.ok(
          after.every((r) => (r as { deleted?: boolean }).deleted),
          `published after the delete: ${JSON.stringify(after).slice(0, 300)}`,
        );
        const gone = await fetch(`${server.url}/check_status/${id}/`);
        assert.equal(gone.status, 404);
        await gone.body?.cancel();
      }
    } finally {
      await server.close();
    }
  },
});

Deno.test("delete: chunks racing a delete get 200, 404 or 409, never a 500, and no file of the gone recording stays open", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const statuses: Record<string, number> = {};
    for (let run = 0; run < 5; run++) {
      const { id, token } = await create(server.url);
      const first = await fetch(`${server.url}/add_data/${id}/`, {
        method: "POST",
        body: mediaBytes(50_000, 1),
      });
      assert.equal(first.status, 200);
      await first.body?.cancel();
      const chunks = Array.from({ length: 33 }, async (_, i) => {
        await new Promise((r) => setTimeout(r, i % 11));
        const res = await fetch(`${server.url}/add_data/${id}/`, {
          method: "POST",
          body: mediaBytes(20_000 + i, 2),
        });
        const text = await res.text();
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status >= 500) throw new Error(`${res.status}: ${text}`);
        assert.match(res.headers.get("content-type") ?? "", /json/);
      });
      const del = (async () => {
        await new Promise((r) => setTimeout(r, 4));
        const res = await terminate(server.url, id, token);
        assert.equal(res.status, 204, await res.text());
      })();
      await Promise.all([...chunks, del]);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(
        await exists(join(server.dataDir, "recordings", id)),
        false,
      );
      assert.deepEqual(await deletedHandles(id), []);
    }
    console.log(`delete race figures: answers ${JSON.stringify(statuses)}`);
    assert.ok(
      Object.keys(statuses).every((s) => ["200", "404", "409"].includes(s)),
    );
  } finally {
    await server.close();
  }
});

Deno.test("delete: with a shared KV the periodic sweep removes a stored recording that has no record after two sweeps", async () => {
  const server = await startTestServer({
    RUN_WORKER: "false",
    SHARED_KV: "true",
  });
  try {
    const ctx = server.service.ctx;
    const orphan = crypto.randomUUID();
    const dir = join(server.dataDir, "recordings", orphan, "files");
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(join(dir, `${orphan}.mp4`), new Uint8Array(1000));
    const { id } = await create(server.url);
    const first = await runSweep(ctx);
    assert.equal(first.orphanRecordings, 0, "not on the first sight");
    assert.ok(await exists(dir));
    const second = await runSweep(ctx);
    assert.equal(second.orphanRecordings, 1);
    assert.equal(
      await exists(join(server.dataDir, "recordings", orphan)),
      false,
    );
    assert.ok(
      await exists(join(server.dataDir, "recordings", id)),
      "a recording with a record stays",
    );
  } finally {
    await server.close();
  }
});
