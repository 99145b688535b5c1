/**
 * The path to "complete" without the fsync of the outputs, and what keeps it
 * durable: the job commits `complete` with an ["outputs_unflushed", id]
 * entry, flushes the files, then deletes the entry; the sweep flushes
 * entries left from this boot and processes the recording again when the
 * entry comes from another boot (the machine went down before the flush) or
 * the flush fails. Also: the main pass reads the stored data file in place
 * (never past the committed chunks) or, when the chunks are not laid out in
 * order in it, from stdin, with the same result.
 *
 * Real servers, real KV, real ffmpeg; the "other boot" is an entry written
 * with another boot id, as a machine that went down would have left it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type ChunkEntry,
  chunkPrefix,
  finishedRecordingPrefix,
  type Job,
  jobKey,
  type UnflushedOutputs,
  unflushedOutputsKey,
} from "../lib/kv/keys.ts";
import { bootId, runSweep } from "../lib/recordings/maintenance.ts";
import { hasLocalPaths } from "../lib/storage/storage.ts";
import {
  createSession,
  makeRecording,
  missingTool,
  probeFile,
  sendChunk,
  splitBytes,
  startTestServer,
  type TestServer,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function upload(
  server: TestServer,
  pieces: Uint8Array<ArrayBuffer>[],
  order: number[],
): Promise<string> {
  const id = await createSession(server.url);
  for (const i of order) {
    const res = await sendChunk(server.url, id, pieces[i], i);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal((await res.json()).message, "Chunk received");
  }
  return id;
}

async function complete(server: TestServer, id: string): Promise<void> {
  const res = await fetch(`${server.url}/complete_job/${id}/`, {
    method: "POST",
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  await res.json();
}

async function chunksOf(server: TestServer, id: string): Promise<ChunkEntry[]> {
  const out: ChunkEntry[] = [];
  const kv = server.service.ctx.kv;
  for await (const e of kv.list<ChunkEntry>({ prefix: chunkPrefix(id) })) {
    out.push(e.value);
  }
  return out;
}

async function unflushed(
  server: TestServer,
  id: string,
): Promise<UnflushedOutputs | null> {
  return (await server.service.ctx.kv.get<UnflushedOutputs>(
    unflushedOutputsKey(id),
  )).value;
}

async function waitNoEntry(server: TestServer, id: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (await unflushed(server, id)) {
    if (Date.now() > deadline) throw new Error("the entry was never deleted");
    await delay(20);
  }
}

async function job(server: TestServer, id: string): Promise<Job> {
  return (await server.service.ctx.kv.get<Job>(jobKey(id))).value!;
}

/** Downloads the finished files and checks them against the source. */
async function assertWhole(
  server: TestServer,
  id: string,
  sourcePath: string,
  tmp: string,
): Promise<void> {
  const source = await probeFile(sourcePath);
  const listing = await fetch(`${server.url}/video/${id}/`);
  assert.equal(listing.status, 200);
  assert.equal(listing.headers.get("content-type"), "application/json");
  const body = await listing.json();
  assert.deepEqual(body.completed_videos, [`${id}.mp4`, `${id}.webm`]);
  assert.equal(body.poster, `/media/${id}/${id}.jpg`);
  for (const [name, type] of [["mp4", "video/mp4"], ["webm", "video/webm"]]) {
    const res = await fetch(`${server.url}/media/${id}/${id}.${name}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), type);
    const path = join(tmp, `${id}.${name}`);
    await Deno.writeFile(path, new Uint8Array(await res.arrayBuffer()));
    const probed = await probeFile(path);
    assert.equal(probed.video?.packets, source.video?.packets, name);
    assert.equal(probed.audio?.packets, source.audio?.packets, name);
    assert.ok(Math.abs(probed.durationS - 3) < 0.15, `${name} lasts 3 s`);
    if (name === "webm") {
      assert.deepEqual(
        await videoPacketHashes(path),
        await videoPacketHashes(sourcePath),
      );
    }
  }
  const poster = await fetch(`${server.url}/media/${id}/${id}.jpg`);
  assert.equal(poster.status, 200);
  assert.equal(poster.headers.get("content-type"), "image/jpeg");
  const jpg = new Uint8Array(await poster.arrayBuffer());
  assert.deepEqual([...jpg.subarray(0, 2)], [0xff, 0xd8]);
  assert.deepEqual([...jpg.subarray(-2)], [0xff, 0xd9]);
}

async function status(
  server: TestServer,
  id: string,
): Promise<Record<string, unknown>> {
  const res = await fetch(`${server.url}/check_status/${id}/`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  return await res.json();
}

Deno.test({
  name:
    "processing sync: after complete the unflushed entry is gone and the files are whole, read in place (never past the last chunk) or from stdin",
  ignore: ffmpegMissing,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-sync-" });
    const server = await startTestServer();
    try {
      const sourcePath = join(tmp, "source.webm");
      const source = await makeRecording(sourcePath, { seconds: 3 });
      const pieces = splitBytes(source, [40_000, 9_000, 25_000]);
      const inOrder = pieces.map((_, i) => i);
      const storage = server.service.ctx.storage;
      assert.ok(hasLocalPaths(storage), "local storage names paths");

      // In order, one at a time: the chunks lie in one data file from 0.
      const direct = await upload(server, pieces, inOrder);
      const place = await storage.localPathOf(
        direct,
        await chunksOf(server, direct),
      );
      assert.ok(place, "read in place");
      assert.equal(place.end, source.length);
      // Dead bytes past the last chunk (a crash mid-append leaves them until
      // the next start-up): ffmpeg must never read them.
      await Deno.writeFile(place.path, new Uint8Array(70_000).fill(0x1f), {
        append: true,
      });
      await complete(server, direct);
      const st = await waitForStatus(server.url, direct);
      assert.equal(st.status, "complete", JSON.stringify(st));
      assert.ok(Math.abs(Number(st.duration_s) - 3) < 0.15);
      await waitNoEntry(server, direct);
      await assertWhole(server, direct, sourcePath, tmp);

      // Out of order: the stdin route, same result.
      const swapped = [1, 0, ...inOrder.slice(2)];
      const piped = await upload(server, pieces, swapped);
      assert.equal(
        await storage.localPathOf(piped, await chunksOf(server, piped)),
        null,
      );
      await complete(server, piped);
      assert.equal((await waitForStatus(server.url, piped)).status, "complete");
      await waitNoEntry(server, piped);
      await assertWhole(server, piped, sourcePath, tmp);

      // The job's facts are the same either way.
      const facts = async (id: string) => {
        const res = await fetch(`${server.url}/check_status/${id}/`);
        assert.equal(res.status, 200);
        return (await res.json()).duration_s;
      };
      assert.equal(await facts(direct), await facts(piped));
    } finally {
      await server.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "processing sync: an entry from another boot is processed again by the sweep; one from this boot is only flushed; a failed flush is processed again",
  ignore: ffmpegMissing,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-sync-" });
    const server = await startTestServer();
    try {
      const sourcePath = join(tmp, "source.webm");
      const source = await makeRecording(sourcePath, { seconds: 3 });
      const ctx = server.service.ctx;
      const id = await upload(server, [source], [0]);
      await complete(server, id);
      assert.equal((await waitForStatus(server.url, id)).status, "complete");
      await waitNoEntry(server, id);
      const done = await job(server, id);
      assert.equal(done.state, "done");
      const filesDir = join(server.dataDir, "recordings", id, "files");

      // This boot, older than the grace period: flushed, nothing else.
      const boot = await bootId();
      await ctx.kv.set(unflushedOutputsKey(id), {
        bootId: boot,
        at: Date.now() - 60_000,
      });
      const young = { bootId: "another-boot", at: Date.now() };
      const flushedReport = await runSweep(ctx);
      assert.deepEqual(flushedReport.flushed, [id]);
      assert.deepEqual(flushedReport.reprocessed, []);
      assert.equal(await unflushed(server, id), null);
      assert.equal((await status(server, id)).status, "complete");
      assert.deepEqual(await job(server, id), done, "the job was not touched");

      // Another boot, but younger than the grace period: left to its job.
      await ctx.kv.set(unflushedOutputsKey(id), young);
      const left = await runSweep(ctx);
      assert.deepEqual([left.flushed, left.reprocessed], [[], []]);
      assert.deepEqual(await unflushed(server, id), young);

      // Another boot, old: the files may be torn (here: the MP4 is), so the
      // recording goes back to processing and its job runs again.
      await ctx.kv.set(unflushedOutputsKey(id), {
        bootId: "another-boot",
        at: Date.now() - 60_000,
      });
      const mp4 = join(filesDir, `${id}.mp4`);
      await Deno.truncate(mp4, Math.floor((await Deno.stat(mp4)).size / 2));
      const again = await runSweep(ctx);
      assert.deepEqual(again.reprocessed, [id]);
      const right = await status(server, id);
      assert.ok(
        ["processing", "complete"].includes(String(right.status)),
        JSON.stringify(right),
      );
      const list = await fetch(`${server.url}/video/${id}/`);
      assert.equal(list.status, 200);
      assert.equal(list.headers.get("content-type"), "application/json");
      if (right.status === "processing") {
        assert.deepEqual((await list.json()).completed_videos, []);
      } else await list.body?.cancel();
      assert.equal((await waitForStatus(server.url, id)).status, "complete");
      await waitNoEntry(server, id);
      const redone = await job(server, id);
      assert.equal(redone.state, "done");
      assert.equal(redone.attempts, 1, "a fresh job");
      assert.ok(redone.createdAt > done.createdAt);
      await assertWhole(server, id, sourcePath, tmp);
      let finished = 0;
      for await (
        const e of ctx.kv.list({ prefix: finishedRecordingPrefix() })
      ) {
        if (e.key.at(-1) === id) finished++;
      }
      assert.equal(finished, 1, "one entry in the finished index");

      // This boot, but the flush fails (a file is gone): processed again.
      await ctx.kv.set(unflushedOutputsKey(id), {
        bootId: boot,
        at: Date.now() - 60_000,
      });
      await Deno.remove(join(filesDir, `${id}.jpg`));
      const failed = await runSweep(ctx);
      assert.deepEqual(failed.flushed, []);
      assert.deepEqual(failed.reprocessed, [id]);
      assert.equal((await waitForStatus(server.url, id)).status, "complete");
      await waitNoEntry(server, id);
      await assertWhole(server, id, sourcePath, tmp);
    } finally {
      await server.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "processing sync: at start-up every entry is settled: this boot's flushed at any age, another boot's processed again",
  ignore: ffmpegMissing,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-sync-" });
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-sync-data-" });
    let server: TestServer | undefined;
    try {
      const sourcePath = join(tmp, "source.webm");
      const source = await makeRecording(sourcePath, { seconds: 3 });
      server = await startTestServer({ DATA_DIR: dataDir });
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) {
        const id = await upload(server, [source], [0]);
        await complete(server, id);
        assert.equal((await waitForStatus(server.url, id)).status, "complete");
        await waitNoEntry(server, id);
        ids.push(id);
      }
      const [same, other] = ids;
      const sameJob = await job(server, same);
      // What a server killed between its commit and its flush leaves behind,
      // written just now (a start-up sweep does not wait for the grace period).
      await server.service.ctx.kv.set(unflushedOutputsKey(same), {
        bootId: await bootId(),
        at: Date.now(),
      });
      await server.service.ctx.kv.set(unflushedOutputsKey(other), {
        bootId: "another-boot",
        at: Date.now(),
      });
      await server.close();
      server = undefined;

      server = await startTestServer({ DATA_DIR: dataDir });
      assert.equal(await unflushed(server, same), null);
      assert.equal((await status(server, same)).status, "complete");
      assert.deepEqual(await job(server, same), sameJob);
      assert.equal(await unflushed(server, other), null);
      assert.equal((await waitForStatus(server.url, other)).status, "complete");
      assert.equal((await job(server, other)).attempts, 1);
      await waitNoEntry(server, other);
      await assertWhole(server, other, sourcePath, tmp);
    } finally {
      await server?.close();
      await Deno.remove(tmp, { recursive: true });
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
