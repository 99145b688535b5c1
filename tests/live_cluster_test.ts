/**
 * Issue 15 on a cluster: two servers on one PostgreSQL KV and one S3 bucket,
 * the worker (with a live encode slot) on one of them. While a recording is
 * sent to both, the other server serves its live playlist, its segments and
 * its stored chunks (the MSE source) the same as the worker's server; at the
 * stop the MP4 from the live encode is listed and served by both.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Recording, recordingKey } from "../lib/kv/keys.ts";
import {
  createSession,
  missingTool,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import { chunkCount, makeTabCapture, sendAtPace } from "./live_helpers.ts";
import { createBucket, storageEnv } from "./support/backend.ts";
import { needsPostgres, startPostgres } from "./support/postgres.ts";
import { startSwift, SWIFT_IGNORE } from "./support/swift.ts";

const ffmpegMissing = await missingTool("ffmpeg");
const SECONDS = 12;

async function bytesOf(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  const body = new Uint8Array(await res.arrayBuffer());
  return { res, body };
}

/** The init segment and media segment URIs of an HLS playlist. */
function playlistUris(text: string): string[] {
  const uris: string[] = [];
  for (const line of text.split("\n")) {
    const map = /^#EXT-X-MAP:.*URI="([^"]+)"/.exec(line);
    if (map) uris.push(map[1]);
    else if (line && !line.startsWith("#")) uris.push(line.trim());
  }
  return uris;
}

Deno.test({
  name:
    "live cluster: while a recording is sent to two servers on PostgreSQL + S3, the one without the worker serves the same live playlist, segments and source; at the stop both serve the live encode's MP4",
  ignore: ffmpegMissing || needsPostgres().ignore || SWIFT_IGNORE,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const [pg, swift] = await Promise.all([
      startPostgres({ fast: true }),
      startSwift(),
    ]);
    const servers: TestServer[] = [];
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-livecl-" });
    try {
      await createBucket(swift, "live-cluster");
      const env = {
        KV_PATH: pg.url,
        ...storageEnv(swift, "live-cluster", "td"),
        COMPLETE_GRACE_MS: "0",
      };
      const a = await startTestServer({ ...env, LIVE_ENCODE_SLOTS: "1" });
      servers.push(a);
      const b = await startTestServer({ ...env, RUN_WORKER: "false" });
      servers.push(b);
      const bytes = await makeTabCapture(join(dir, "src.webm"), SECONDS);
      const n = chunkCount(bytes);
      const half = Math.floor(n / 2);
      const id = await createSession(b.url);
      const t0 = performance.now();
      await sendAtPace(b.url, id, bytes, SECONDS, { to: half, t0 });

      // Half way: B (no worker) serves what A's live encode made.
      const kv = a.service.ctx.kv;
      let playlist = "";
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline) {
        const res = await fetch(`${b.url}/media/${id}/live.m3u8`);
        playlist = res.ok ? await res.text() : (await res.body?.cancel(), "");
        if (playlistUris(playlist).length >= 2) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      const uris = playlistUris(playlist);
      assert.ok(uris.length >= 2, `B's playlist: ${playlist}`);
      for (const uri of uris) {
        const url = new URL(uri, `${b.url}/media/${id}/live.m3u8`);
        const path = url.pathname + url.search;
        const [fromA, fromB] = await Promise.all([
          bytesOf(`${a.url}${path}`),
          bytesOf(`${b.url}${path}`),
        ]);
        assert.equal(fromB.res.status, 200, `B ${path}`);
        assert.equal(fromA.res.status, 200, `A ${path}`);
        assert.ok(fromB.body.length > 0, `${path} is empty`);
        assert.deepEqual(fromB.body, fromA.body, `${path} differs`);
      }
      const sent = (await kv.get<Recording>(recordingKey(id))).value!
        .bytesReceived;
      const source = await bytesOf(`${b.url}/media/${id}/source`, {
        range: `bytes=0-${sent - 1}`,
      });
      assert.equal(source.res.status, 206);
      assert.deepEqual(source.body, bytes.subarray(0, sent));

      await sendAtPace(a.url, id, bytes, SECONDS, { from: half, t0 });
      const done = await fetch(`${a.url}/complete_job/${id}/`, {
        method: "POST",
      });
      assert.equal(done.status, 200, await done.text());
      const status = await waitForStatus(b.url, id, ["complete", "failed"]);
      assert.equal(status.status, "complete", JSON.stringify(status));
      const rec = (await kv.get<Recording>(recordingKey(id))).value!;
      assert.equal(
        rec.media?.mp4Live,
        true,
        "the MP4 came from the live encode",
      );
      const [mp4A, mp4B] = await Promise.all([
        bytesOf(`${a.url}/media/${id}/${id}.mp4`),
        bytesOf(`${b.url}/media/${id}/${id}.mp4`),
      ]);
      assert.equal(mp4B.res.status, 200);
      assert.ok(mp4B.body.length > 10_000);
      assert.deepEqual(mp4B.body, mp4A.body);
    } finally {
      for (const s of servers) await s.close().catch(() => {});
      await pg.stop();
      await swift.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
