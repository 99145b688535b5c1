// Over 400 lines: each issue 15 live-encode scenario needs real servers and real-time uploads; the shared pieces are in live_helpers.ts.
/**
 * Live encodes (lib/live_encode/) and progressive files
 * (lib/processing/progressive.ts): VP8 recordings like tab captures, sent
 * at real-time pace to real servers with LIVE_ENCODE_SLOTS set.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createSession,
  missingTool,
  spawnServer,
  startTestServer,
  waitForStatus,
} from "./helpers.ts";
import {
  assertSameFrames,
  chunkCount,
  download,
  makeTabCapture,
  packetCount,
  sendAtPace,
} from "./live_helpers.ts";
import {
  type LiveEncodeClaim,
  liveEncodeKey,
  type Recording,
  recordingKey,
} from "../lib/kv/keys.ts";
import { runSweep } from "../lib/recordings/maintenance.ts";

const ffmpegMissing = await missingTool("ffmpeg");

/** Seconds of each test recording. */
const SECONDS = 6;

/** A scratch folder holding a tab capture of {@link SECONDS}, `source`. */
async function tabCaptureDir(): Promise<
  { dir: string; source: string; bytes: Uint8Array<ArrayBuffer> }
> {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-live-" });
  const source = join(dir, "source.webm");
  return { dir, source, bytes: await makeTabCapture(source, SECONDS) };
}

/** Asks for a recording's processing (`complete_job`). */
async function completeJob(url: string, id: string): Promise<void> {
  await (await fetch(`${url}/complete_job/${id}/`, { method: "POST" })).body
    ?.cancel();
}

/** Whether `path` is a file that holds bytes. */
async function hasBytes(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).size > 0;
  } catch {
    return false;
  }
}

/** What `GET /video/` and HEAD of each file said, polled until complete. */
interface Listing {
  /** Each distinct `completed_videos` seen, in order. */
  seen: string[][];
  /** Size and ETag of each file when it was first listed. */
  first: Map<string, string>;
  /** `ready_files` of check_status while processing. */
  ready: string[][];
}

/** Polls `/video/` and `/check_status/` every 40 ms until `stop()`. */
function watchListing(url: string, id: string) {
  const listing: Listing = { seen: [], first: new Map(), ready: [] };
  let stopped = false;
  let failure: unknown;
  const loop = (async () => {
    while (!stopped) {
      const video = await (await fetch(`${url}/video/${id}/`)).json();
      const names = video.completed_videos as string[];
      if (JSON.stringify(listing.seen.at(-1)) !== JSON.stringify(names)) {
        listing.seen.push(names);
      }
      for (const name of names) {
        if (listing.first.has(name)) continue;
        const res = await fetch(`${url}/media/${id}/${name}`, {
          method: "HEAD",
        });
        assert.equal(res.status, 200, `${name} is served once listed`);
        listing.first.set(
          name,
          `${res.headers.get("content-length")} ${res.headers.get("etag")}`,
        );
      }
      const status = await (await fetch(`${url}/check_status/${id}/`)).json();
      if (status.status === "processing") {
        listing.ready.push(status.ready_files);
      }
      if (status.status === "complete" || status.status === "failed") return;
      await new Promise((r) => setTimeout(r, 40));
    }
  })().catch((err) => failure = err);
  return {
    listing,
    /** Stops polling (a failure is dropped: the test failed already). */
    async stop() {
      stopped = true;
      await loop;
    },
    /** Resolves once the recording is complete or failed. */
    async done() {
      await loop;
      if (failure) throw failure;
    },
  };
}

/** Asserts the progressive listing rules on what was seen, then on what is served now. */
async function assertListing(
  url: string,
  id: string,
  listing: Listing,
): Promise<void> {
  const webm = `${id}.webm`;
  const mp4 = `${id}.mp4`;
  const firstWith = (name: string) =>
    listing.seen.findIndex((l) => l.includes(name));
  assert.ok(
    firstWith(webm) >= 0 && firstWith(mp4) >= 0,
    JSON.stringify(listing.seen),
  );
  assert.ok(
    firstWith(webm) < firstWith(mp4),
    `the WebM is listed before the MP4: ${JSON.stringify(listing.seen)}`,
  );
  for (const [i, names] of listing.seen.entries()) {
    assert.equal(new Set(names).size, names.length, "nothing listed twice");
    for (const name of listing.seen[i - 1] ?? []) {
      assert.ok(names.includes(name), "a listed file stays listed");
    }
  }
  assert.deepEqual(listing.seen.at(-1), [mp4, webm]);
  assert.ok(
    listing.ready.some((r) => r.length === 1 && r[0] === webm),
    "check_status said the WebM was ready while processing",
  );
  for (const [name, first] of listing.first) {
    const res = await fetch(`${url}/media/${id}/${name}`, { method: "HEAD" });
    assert.equal(
      `${res.headers.get("content-length")} ${res.headers.get("etag")}`,
      first,
      `${name} did not change after it was listed`,
    );
  }
}

Deno.test({
  name:
    "live encode: a VP8 recording sent in real time gets its MP4 from the live encode, every frame at its time; the WebM is listed first and no listed file changes",
  ignore: ffmpegMissing,
  async fn() {
    const { dir, source, bytes } = await tabCaptureDir();
    const server = await startTestServer({ LIVE_ENCODE_SLOTS: "1" });
    let watch: ReturnType<typeof watchListing> | undefined;
    try {
      const id = await createSession(server.url);
      watch = watchListing(server.url, id);
      await sendAtPace(server.url, id, bytes, SECONDS);
      const kv = server.service.ctx.kv;
      const during = (await kv.get<Recording>(recordingKey(id))).value!;
      assert.equal(during.live?.state, "running");
      assert.ok((during.live?.segments ?? 0) >= 1, "segments while recording");
      const stopAt = performance.now();
      await completeJob(server.url, id);
      await watch.done();
      const tookS = (performance.now() - stopAt) / 1000;
      const status = await waitForStatus(server.url, id);
      assert.equal(status.status, "complete", JSON.stringify(status));
      await assertListing(server.url, id, watch.listing);

      const rec = (await kv.get<Recording>(recordingKey(id))).value!;
      assert.equal(
        rec.media?.mp4Live,
        true,
        "the MP4 came from the live encode",
      );
      assert.equal(rec.live?.state, "done");
      assert.ok(tookS < 10, `MP4 ${tookS.toFixed(1)} s after complete_job`);
      const claim = (await kv.get<LiveEncodeClaim>(liveEncodeKey(id))).value!;
      assert.deepEqual(claim.input, {
        bytes: bytes.length,
        chunks: rec.chunksReceived,
      });

      const mp4 = await assertMp4(server.url, id, source, dir);
      assert.equal(
        await packetCount(mp4, "a:0"),
        await packetCount(source, "a:0"),
        "every audio packet, copied",
      );
    } finally {
      await watch?.stop();
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Completes a recording and waits until it is complete. */
async function completeAndWait(url: string, id: string): Promise<void> {
  await completeJob(url, id);
  const status = await waitForStatus(url, id, ["complete", "failed"], 120_000);
  assert.equal(status.status, "complete", JSON.stringify(status));
}

/**
 * Downloads the MP4 into `dir`, checks its frames against the source and
 * returns its path.
 */
async function assertMp4(
  url: string,
  id: string,
  source: string,
  dir: string,
): Promise<string> {
  const mp4 = join(dir, `${id}.mp4`);
  await download(`${url}/media/${id}/${id}.mp4`, mp4);
  await assertSameFrames(source, mp4);
  return mp4;
}

Deno.test({
  name:
    "live encode: a recording that gets no slot (the slot is taken, or LIVE_ENCODE_SLOTS=0) is finished by the job",
  ignore: ffmpegMissing,
  async fn() {
    const { dir, source, bytes } = await tabCaptureDir();
    const server = await startTestServer({ LIVE_ENCODE_SLOTS: "1" });
    const off = await startTestServer({ LIVE_ENCODE_SLOTS: "0" });
    try {
      const kv = server.service.ctx.kv;
      // The first takes the slot; the second, started a second later, ends
      // while the first still runs.
      const first = await createSession(server.url);
      const t0 = performance.now();
      const firstSent = sendAtPace(server.url, first, bytes, SECONDS + 3, {
        t0,
      });
      await new Promise((r) => setTimeout(r, 1000));
      const second = await createSession(server.url);
      const elsewhere = await createSession(off.url);
      await Promise.all([
        sendAtPace(server.url, second, bytes, SECONDS - 1),
        sendAtPace(off.url, elsewhere, bytes, SECONDS - 1),
      ]);
      await completeAndWait(server.url, second);
      await completeAndWait(off.url, elsewhere);
      await firstSent;
      await completeAndWait(server.url, first);

      const rec = async (id: string) =>
        (await kv.get<Recording>(recordingKey(id))).value!;
      assert.equal((await rec(first)).media?.mp4Live, true);
      assert.equal((await rec(second)).live, undefined, "no live encode");
      assert.equal((await rec(second)).media?.mp4Live, undefined);
      const offRec = (await off.service.ctx.kv.get<Recording>(
        recordingKey(elsewhere),
      )).value!;
      assert.equal(offRec.live, undefined);
      assert.equal(offRec.media?.mp4Live, undefined);
      await assertMp4(server.url, second, source, dir);
      await assertMp4(off.url, elsewhere, source, dir);
      await assertMp4(server.url, first, source, dir);
    } finally {
      await server.close();
      await off.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** The pid of the live encode's ffmpeg among the children of `parent`, if any. */
async function liveFfmpegPid(parent: number): Promise<number | undefined> {
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
      if (ppid === parent && cmd.includes("frag_keyframe")) {
        return Number(e.name);
      }
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

/** Waits until `check` holds (polling every 100 ms), or fails after `ms`. */
async function until(
  what: string,
  check: () => Promise<boolean>,
  ms = 20_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test({
  name:
    "live encode: its ffmpeg killed mid-recording, the live encode is abandoned and the job makes the MP4",
  ignore: ffmpegMissing,
  async fn() {
    const { dir, source, bytes } = await tabCaptureDir();
    const server = await startTestServer({ LIVE_ENCODE_SLOTS: "1" });
    try {
      const kv = server.service.ctx.kv;
      const id = await createSession(server.url);
      const t0 = performance.now();
      const half = Math.floor(chunkCount(bytes) / 2);
      await sendAtPace(server.url, id, bytes, SECONDS, { t0, to: half });
      let pid: number | undefined;
      await until("the live encode's ffmpeg", async () => {
        pid = await liveFfmpegPid(Deno.pid);
        return pid !== undefined;
      });
      Deno.kill(pid!, "SIGKILL");
      await until(
        "the live encode abandoned",
        async () =>
          (await kv.get<Recording>(recordingKey(id))).value?.live?.state ===
            "abandoned",
      );
      await sendAtPace(server.url, id, bytes, SECONDS, { t0, from: half });
      await completeAndWait(server.url, id);
      const rec = (await kv.get<Recording>(recordingKey(id))).value!;
      assert.equal(rec.live?.state, "abandoned");
      assert.match(rec.live?.reason ?? "", /ffmpeg/);
      assert.equal(rec.media?.mp4Live, undefined, "the job encoded the MP4");
      await assertMp4(server.url, id, source, dir);
    } finally {
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "live encode: the server killed with SIGKILL mid-recording, the restarted one abandons the live encode and the job makes the MP4",
  ignore: ffmpegMissing,
  async fn() {
    const { dir, source, bytes } = await tabCaptureDir();
    const dataDir = join(dir, "data");
    const env = { LIVE_ENCODE_SLOTS: "1" };
    let server = await spawnServer(dataDir, env);
    try {
      const id = await createSession(server.url);
      const t0 = performance.now();
      const half = Math.floor(chunkCount(bytes) / 2);
      await sendAtPace(server.url, id, bytes, SECONDS, { t0, to: half });
      const segment = join(
        dataDir,
        "recordings",
        id,
        "files",
        "live-00001.m4s",
      );
      await until("a live segment", () => hasBytes(segment));
      await server.stop("SIGKILL");
      server = await spawnServer(dataDir, env);
      await sendAtPace(server.url, id, bytes, SECONDS, { t0, from: half });
      await completeAndWait(server.url, id);
      await assertMp4(server.url, id, source, dir);
      await server.stop("SIGTERM");
      const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
      try {
        const rec = (await kv.get<Recording>(recordingKey(id))).value!;
        assert.equal(rec.live?.state, "abandoned");
        assert.match(rec.live?.reason ?? "", /restarted/);
        assert.equal(rec.media?.mp4Live, undefined, "the job encoded the MP4");
      } finally {
        kv.close();
      }
    } finally {
      await server.stop("SIGKILL").catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "live files: deleted with a recording while it is encoded; after completion, removed by the sweep LIVE_FILES_KEEP_S later",
  ignore: ffmpegMissing,
  async fn() {
    const { dir, bytes } = await tabCaptureDir();
    const server = await startTestServer({
      LIVE_ENCODE_SLOTS: "1",
      LIVE_FILES_KEEP_S: "0",
    });
    try {
      const { ctx, worker } = server.service;
      const filesOf = (id: string) =>
        join(server.dataDir, "recordings", id, "files");
      const created = await (await fetch(`${server.url}/create/`, {
        method: "POST",
      })).json();
      const gone = created.video_id as string;
      await sendAtPace(server.url, gone, bytes, SECONDS, {
        to: Math.floor(chunkCount(bytes) / 2),
      });
      await until(
        "a live segment",
        () => hasBytes(join(filesOf(gone), "live-00001.m4s")),
      );
      const del = await fetch(`${server.url}/api/recordings/${gone}`, {
        method: "DELETE",
        headers: { "x-upload-token": created.upload_token },
      });
      assert.equal(del.status, 200, await del.text());
      assert.equal(worker?.liveEncodes, 0, "the live encode stopped");
      await new Promise((r) => setTimeout(r, 1500));
      await assert.rejects(
        () => Deno.stat(join(server.dataDir, "recordings", gone)),
        Deno.errors.NotFound,
        "nothing of a deleted recording is stored",
      );
      assert.equal(
        (await ctx.kv.get(liveEncodeKey(gone))).versionstamp,
        null,
      );

      const id = await createSession(server.url);
      await sendAtPace(server.url, id, bytes, SECONDS);
      await completeAndWait(server.url, id);
      const rec = (await ctx.kv.get<Recording>(recordingKey(id))).value!;
      const segments = rec.live?.segments ?? 0;
      assert.ok(segments >= 2);
      for (const name of ["live.m3u8", "live-init.mp4", "live-00001.m4s"]) {
        assert.ok(await ctx.storage.statFile(id, name), `${name} kept a while`);
      }
      const report = await runSweep(ctx);
      assert.deepEqual(report.liveFilesRemoved, [id]);
      const names = (await Array.fromAsync(Deno.readDir(filesOf(id))))
        .map((e) => e.name).sort();
      assert.deepEqual(names, [`${id}.jpg`, `${id}.mp4`, `${id}.webm`]);
      const after = (await ctx.kv.get<Recording>(recordingKey(id))).value!;
      assert.equal(after.live?.removed, true);
      assert.deepEqual(after.files, rec.files);
      assert.equal((await ctx.kv.get(liveEncodeKey(id))).versionstamp, null);
    } finally {
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
