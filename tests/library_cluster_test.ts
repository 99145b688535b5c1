/**
 * Issue 16 on the shared backends: two servers on one PostgreSQL KV and one
 * S3 bucket (a worker on one of them). A recording uploaded through both and
 * renamed on one is deleted through the other: both answer 404 for it and
 * its files, the bucket holds nothing of it, and every open dashboard socket
 * on either server sees it renamed and then gone.
 */

import assert from "node:assert/strict";
import { S3Client } from "../lib/storage/s3_client.ts";
import { openSocket, type TestSocket, wsUrl } from "./browser_helpers.ts";
import {
  makeRecording,
  missingTool,
  splitBytes,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import { changeOf } from "./stop_helpers.ts";
import { needsPostgres, startPostgres } from "./support/postgres.ts";
import { createBucket, storageEnv } from "./support/backend.ts";
import { startSwift, SWIFT_IGNORE } from "./support/swift.ts";

const ffmpegMissing = await missingTool("ffmpeg");

Deno.test({
  name:
    "library cluster: a recording uploaded through two servers on PostgreSQL + S3 is renamed on one and deleted through the other; both forget it, the bucket holds nothing of it, every dashboard sees it go",
  ignore: ffmpegMissing || needsPostgres().ignore || SWIFT_IGNORE,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const [pg, swift] = await Promise.all([
      startPostgres({ fast: true }),
      startSwift(),
    ]);
    const servers: TestServer[] = [];
    const sockets: TestSocket[] = [];
    const bucketName = "library-cluster";
    const bucket = new S3Client({
      endpoint: swift.endpoint,
      region: swift.region,
      bucket: bucketName,
      accessKeyId: swift.accessKeyId,
      secretAccessKey: swift.secretAccessKey,
    });
    try {
      await createBucket(swift, bucketName);
      const env = {
        KV_PATH: pg.url,
        ...storageEnv(swift, bucketName, "td"),
        COMPLETE_GRACE_MS: "0",
      };
      const a = await startTestServer(env);
      servers.push(a);
      const b = await startTestServer({ ...env, RUN_WORKER: "false" });
      servers.push(b);
      for (const s of [a, b]) {
        const socket = await openSocket(wsUrl(s.url, "/ws"));
        sockets.push(socket);
        assert.equal((await socket.next()).type, "snapshot");
      }

      const dir = await Deno.makeTempDir({ prefix: "tapedeck-libcl-" });
      const bytes = await makeRecording(`${dir}/in.webm`, { seconds: 2 });
      await Deno.remove(dir, { recursive: true });
      const created = await (await fetch(`${a.url}/create/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ title: "Two servers" }),
      })).json();
      const id: string = created.video_id;
      const token: string = created.upload_token;
      const pieces = splitBytes(bytes, [Math.ceil(bytes.length / 4)]);
      for (const [i, piece] of pieces.entries()) {
        const res = await fetch(`${[a, b][i % 2].url}/add_data/${id}/`, {
          method: "POST",
          body: piece,
          headers: { "x-chunk-index": String(i), "x-upload-token": token },
        });
        assert.equal(res.status, 200, await res.text());
      }
      const done = await fetch(`${b.url}/complete_job/${id}/`, {
        method: "POST",
        headers: { "x-upload-token": token },
      });
      assert.equal(done.status, 200, await done.text());
      await waitForStatus(a.url, id, ["complete"], 60_000);
      const files = (await (await fetch(`${b.url}/video/${id}/`)).json())
        .completed_videos as string[];
      assert.ok(files.length >= 1, `files: ${files}`);
      const prefix = `td/recordings/${id}/`;
      assert.ok(
        (await bucket.list(prefix)).objects.length > 0,
        "the bucket holds the recording before the delete",
      );

      const renamed = await fetch(`${a.url}/api/recordings/${id}`, {
        method: "PATCH",
        headers: {
          "content-type": "application/json",
          "x-upload-token": token,
        },
        body: JSON.stringify({ title: "Renamed on A" }),
      });
      assert.equal(renamed.status, 200, await renamed.text());
      for (const socket of sockets) {
        await socket.until(
          changeOf(id, (m) => m.recording.title === "Renamed on A"),
          10_000,
        );
      }

      const denied = await fetch(`${b.url}/api/recordings/${id}`, {
        method: "DELETE",
      });
      assert.equal(denied.status, 401, await denied.text());
      const deleted = await fetch(`${b.url}/api/recordings/${id}`, {
        method: "DELETE",
        headers: { "x-upload-token": token },
      });
      assert.equal(deleted.status, 200, await deleted.text());
      for (const socket of sockets) {
        await socket.until(changeOf(id, (m) => !!m.recording.deleted), 10_000);
      }
      for (const s of [a, b]) {
        for (
          const path of [
            `/api/recordings/${id}`,
            `/check_status/${id}/`,
            ...files.map((f) => `/media/${id}/${f}`),
            `/media/${id}/source`,
          ]
        ) {
          const res = await fetch(`${s.url}${path}`);
          await res.body?.cancel();
          assert.equal(res.status, 404, `${s.url}${path}`);
        }
        const list = await (await fetch(`${s.url}/api/recordings`)).json();
        assert.ok(
          !(list.recordings as { id: string }[]).some((r) => r.id === id),
          "not listed",
        );
      }
      assert.deepEqual(
        (await bucket.list(prefix)).objects.map((o) => o.key),
        [],
        "nothing of it is left in the bucket",
      );
    } finally {
      for (const socket of sockets) await socket.close().catch(() => {});
      for (const s of servers) await s.close().catch(() => {});
      await bucket.deletePrefix("").catch(() => {});
      bucket.close();
      await pg.stop();
      await swift.stop();
    }
  },
});
