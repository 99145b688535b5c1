/**
 * Fault: SIGTERM (a deploy, `docker stop`, systemd) while uploads and jobs
 * are in flight (GitHub issue #4, "Faults to survive").
 *
 * The server is a real `deno run main.ts` child. On SIGTERM it must stop
 * taking new connections, finish (or safely abandon) what is in flight,
 * close KV and exit 0 within a bound; after a restart on the same folder
 * the uploads continue and the job completes. "KV closed" is checked on
 * disk: SQLite removes the KV file's write-ahead log (`tapedeck.kv-wal`)
 * when the last connection closes cleanly, and leaves it when the process
 * exits without closing it.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  type ChunkEntry,
  chunkPrefix,
  type Job,
  jobKey,
} from "../lib/kv/keys.ts";
import {
  type ChildServer,
  createSession,
  makeRecording,
  mediaBytes,
  missingTool,
  pacedBody,
  probeFile,
  sendChunk,
  spawnServer,
  splitBytes,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";
import { bytesOnDisk, readChunk } from "./fault_helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const STOP_BOUND_MS = 15_000;
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether ffmpeg is writing this recording's MP4 in its scratch folder
 * (work/<id>, or work/<id>.<run> when each run gets a folder of its own).
 */
function encoding(dataDir: string, id: string): boolean {
  try {
    for (const e of Deno.readDirSync(join(dataDir, "work"))) {
      if (
        (e.name === id || e.name.startsWith(`${id}.`)) &&
        exists(join(dataDir, "work", e.name, `${id}.mp4`))
      ) return true;
    }
  } catch {
    // no scratch folder yet
  }
  return false;
}

/** ffmpeg processes whose command line names this data folder. */
function ffmpegProcessesOf(dataDir: string): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`);
      if (cmd.includes("ffmpeg") && cmd.includes(dataDir)) {
        pids.push(Number(e.name));
      }
    } catch {
      // gone
    }
  }
  return pids;
}

/** Sends SIGTERM and measures how the server ends. */
async function terminate(
  server: ChildServer,
  dataDir: string,
): Promise<{ code: number; ms: number; kvClosed: boolean }> {
  const t0 = Date.now();
  const status = await server.stop("SIGTERM");
  const ms = Date.now() - t0;
  return {
    code: status.code,
    ms,
    kvClosed: !exists(join(dataDir, "tapedeck.kv-wal")),
  };
}

/** The committed chunks of a recording, read from the KV file (server stopped). */
async function committedChunks(
  dataDir: string,
  id: string,
): Promise<ChunkEntry[]> {
  const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
  try {
    const out: ChunkEntry[] = [];
    for await (const e of kv.list<ChunkEntry>({ prefix: chunkPrefix(id) })) {
      out.push(e.value);
    }
    return out;
  } finally {
    kv.close();
  }
}

/** The recording as the committed chunk files hold it, in index order. */
async function assembledSha(dataDir: string, id: string): Promise<string> {
  const hash = createHash("sha256");
  for (const c of await committedChunks(dataDir, id)) {
    hash.update(await readChunk(dataDir, id, c));
  }
  return hash.digest("hex");
}

async function readJob(dataDir: string, id: string): Promise<Job> {
  const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
  try {
    return (await kv.get<Job>(jobKey(id))).value!;
  } finally {
    kv.close();
  }
}

async function upload(
  url: string,
  id: string,
  pieces: Uint8Array<ArrayBuffer>[],
  from: number,
): Promise<void> {
  for (let i = from; i < pieces.length; i++) {
    const res = await sendChunk(url, id, pieces[i], i);
    assert.equal(res.status, 200, await res.text());
  }
}

async function complete(url: string, id: string): Promise<void> {
  const res = await fetch(`${url}/complete_job/${id}/`, { method: "POST" });
  assert.equal(res.status, 200);
  await res.body?.cancel();
}

async function waitFor(check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await delay(2);
  }
}

Deno.test({
  name:
    "sigterm: during uploads the server refuses new connections, finishes the chunks in flight, closes KV, exits 0, and the uploads resume",
  ignore: ffmpegMissing,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-term-up-" });
    const srcDir = await Deno.makeTempDir({ prefix: "tapedeck-term-src-" });
    let server: ChildServer | undefined;
    try {
      const clients = await Promise.all([4, 5, 6].map(async (seconds) => {
        const path = join(srcDir, `src-${seconds}.webm`);
        const source = await makeRecording(path, { seconds });
        const pieces = splitBytes(source, [Math.ceil(source.length / 5)]);
        return { path, source, pieces, id: "", state: { phase: "idle" } };
      }));
      server = await spawnServer(dataDir);
      const url = server.url;
      const port = Number(new URL(url).port);
      for (const c of clients) {
        c.id = await createSession(url);
        const res = await sendChunk(url, c.id, c.pieces[0], 0);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      // Chunk 1 of each client is streamed over about two seconds.
      const http = Deno.createHttpClient({});
      const inFlight = clients.map((c) =>
        fetch(`${url}/add_data/${c.id}/`, {
          method: "POST",
          headers: { "content-type": "video/webm", "x-chunk-index": "1" },
          body: pacedBody(c.pieces[1], 20, 100, c.state),
          duplex: "half",
          client: http,
        } as RequestInit).then(
          async (res) => ({ status: res.status, body: await res.json() }),
          (err) => ({ status: 0, body: String(err) }),
        )
      );
      await waitFor(() => clients.every((c) => c.state.phase === "body"), 5000);
      await delay(300);
      const t0 = Date.now();
      const stopped = terminate(server, dataDir);
      server = undefined;

      // New connections are refused while the chunks in flight are still coming.
      await delay(200);
      assert.ok(
        clients.some((c) => c.state.phase === "body"),
        "chunks are still in flight",
      );
      await assert.rejects(
        () => Deno.connect({ hostname: "127.0.0.1", port }),
        Deno.errors.ConnectionRefused,
      );
      const replies = await Promise.all(inFlight);
      http.close();
      const end = await stopped;
      const elapsed = Date.now() - t0;
      console.log(
        `sigterm figures: uploads in flight: ${replies.length}, answered ${
          replies.map((r) => r.status).join("/")
        }; exit ${end.code} after ${end.ms} ms; KV closed: ${end.kvClosed}`,
      );
      assert.equal(end.code, 0);
      assert.ok(elapsed < STOP_BOUND_MS, `stopped after ${elapsed} ms`);
      assert.ok(end.kvClosed, "KV was closed (no write-ahead log left)");
      for (const [i, r] of replies.entries()) {
        // Each chunk in flight was finished (200) or abandoned whole.
        const kept = await committedChunks(dataDir, clients[i].id);
        if (r.status === 200) {
          assert.equal(r.body.chunks_received, 2);
          assert.equal(kept.length, 2);
        } else {
          assert.deepEqual(kept.map((e) => e.index), [0]);
        }
        for (const e of kept) {
          assert.equal(
            sha256(await readChunk(dataDir, clients[i].id, e)),
            sha256(clients[i].pieces[e.index]),
          );
        }
      }

      const restarted = await spawnServer(dataDir);
      server = restarted;
      for (const c of clients) {
        const res = await fetch(`${restarted.url}/check_status/${c.id}/`);
        assert.equal(res.status, 200);
        assert.equal((await res.json()).status, "recording");
        await upload(restarted.url, c.id, c.pieces, 1);
        await complete(restarted.url, c.id);
      }
      for (const c of clients) {
        const st = await waitForStatus(restarted.url, c.id);
        assert.equal(st.status, "complete", JSON.stringify(st));
        assert.equal(st.bytes_received, c.source.length);
        const res = await fetch(`${restarted.url}/media/${c.id}/${c.id}.webm`);
        assert.equal(res.status, 200);
        const out = join(srcDir, `${c.id}.webm`);
        await Deno.writeFile(out, new Uint8Array(await res.arrayBuffer()));
        assert.deepEqual(
          await videoPacketHashes(out),
          await videoPacketHashes(c.path),
        );
      }
      const again = await terminate(server, dataDir);
      server = undefined;
      assert.equal(again.code, 0);
      for (const c of clients) {
        assert.equal(await assembledSha(dataDir, c.id), sha256(c.source));
      }
      // An upload cut by the shutdown is not the client's fault: it must be told
      // to send it again (5xx) or see the connection drop, never get a 4xx.
      for (const r of replies) {
        assert.ok(
          r.status === 200 || r.status === 0 || r.status >= 500,
          `a chunk in flight at SIGTERM was answered ${r.status} ${
            JSON.stringify(r.body)
          }`,
        );
      }
    } finally {
      await server?.stop("SIGKILL");
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(srcDir, { recursive: true }).catch(() => {});
    }
  },
});

/** Uploads a 30 s VP8 recording (re-encoded, so its job takes seconds) and completes it. */
async function startLongJob(
  url: string,
  srcDir: string,
): Promise<{ id: string; path: string; source: Uint8Array }> {
  const path = join(srcDir, "vp8.webm");
  const source = await makeRecording(path, { codec: "vp8", seconds: 30 });
  const id = await createSession(url);
  await upload(url, id, splitBytes(source, [200_000]), 0);
  await complete(url, id);
  return { id, path, source };
}

async function assertWholeFiles(
  url: string,
  id: string,
  srcPath: string,
  dir: string,
): Promise<void> {
  const source = await probeFile(srcPath);
  const res = await fetch(`${url}/media/${id}/${id}.mp4`);
  assert.equal(res.status, 200);
  const out = join(dir, `${id}.mp4`);
  await Deno.writeFile(out, new Uint8Array(await res.arrayBuffer()));
  const mp4 = await probeFile(out);
  assert.equal(mp4.video?.packets, source.video?.packets);
  assert.ok(Math.abs(mp4.durationS - 30) < 0.2, `mp4 lasts ${mp4.durationS}`);
}

Deno.test({
  name:
    "sigterm: during processing the server stops ffmpeg, closes KV and exits 0, and the job completes after restart",
  ignore: ffmpegMissing,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-term-job-" });
    const srcDir = await Deno.makeTempDir({ prefix: "tapedeck-term-src-" });
    let server: ChildServer | undefined;
    try {
      server = await spawnServer(dataDir);
      const { id, path } = await startLongJob(server.url, srcDir);
      await waitFor(
        () => encoding(dataDir, id),
        30_000,
      );
      await delay(100);
      const end = await terminate(server, dataDir);
      server = undefined;
      const leftovers = ffmpegProcessesOf(dataDir);
      console.log(
        `sigterm figures: during encoding: exit ${end.code} after ${end.ms} ms; KV closed: ${end.kvClosed}; ffmpeg left running: ${leftovers.length}`,
      );
      assert.equal(end.code, 0);
      assert.ok(end.ms < STOP_BOUND_MS, `stopped after ${end.ms} ms`);
      assert.ok(end.kvClosed, "KV was closed");
      assert.deepEqual(leftovers, [], "no ffmpeg outlives the server");
      const job = await readJob(dataDir, id);
      assert.notEqual(job.state, "done");

      server = await spawnServer(dataDir);
      const listed = await (await fetch(`${server.url}/video/${id}/`)).json();
      // The WebM is listed before the MP4 is made (it may be already).
      assert.ok(
        (listed.completed_videos as string[]).every((n) => n === `${id}.webm`),
        JSON.stringify(listed),
      );
      const st = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        60_000,
      );
      assert.equal(st.status, "complete", JSON.stringify(st));
      await assertWholeFiles(server.url, id, path, srcDir);
      const again = await terminate(server, dataDir);
      server = undefined;
      assert.equal(again.code, 0);
      const done = await readJob(dataDir, id);
      assert.equal(done.state, "done");
    } finally {
      await server?.stop("SIGKILL");
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(srcDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "sigterm: a job stopped by more SIGTERMs than JOB_MAX_ATTEMPTS (rolling restarts) still completes",
  ignore: ffmpegMissing,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-term-roll-" });
    const srcDir = await Deno.makeTempDir({ prefix: "tapedeck-term-src-" });
    const env = { JOB_MAX_ATTEMPTS: "2" };
    let server: ChildServer | undefined;
    try {
      server = await spawnServer(dataDir, env);
      const { id, path } = await startLongJob(server.url, srcDir);
      for (let restart = 0; restart < 2; restart++) {
        // Fresh work folder each run: wait for this run's encode to start.
        await waitFor(
          () => encoding(dataDir, id),
          30_000,
        );
        await delay(100);
        const end = await terminate(server, dataDir);
        server = undefined;
        assert.equal(end.code, 0);
        server = await spawnServer(dataDir, env);
      }
      const st = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        60_000,
      );
      const job = await (async () => {
        const end = await terminate(server!, dataDir);
        assert.equal(end.code, 0);
        server = undefined;
        return await readJob(dataDir, id);
      })();
      console.log(
        `sigterm figures: 2 graceful stops during one job with JOB_MAX_ATTEMPTS=2: ${st.status}, attempts ${job.attempts}${
          st.error ? `, error "${st.error}"` : ""
        }`,
      );
      assert.equal(
        st.status,
        "complete",
        `a graceful stop used up an attempt: ${JSON.stringify(st)}`,
      );
      server = await spawnServer(dataDir, env);
      await assertWholeFiles(server.url, id, path, srcDir);
    } finally {
      await server?.stop("SIGKILL");
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(srcDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("sigterm: a client stalled mid-body does not keep the server from closing KV and exiting 0 within the bound", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-term-stall-" });
  let server: ChildServer | undefined;
  let conn: Deno.Conn | undefined;
  try {
    server = await spawnServer(dataDir);
    const id = await createSession(server.url);
    const first = mediaBytes(50_000, 1);
    const res = await sendChunk(server.url, id, first, 0);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    // Chunk 1: headers and half the body, then nothing more.
    conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: Number(new URL(server.url).port),
    });
    const second = mediaBytes(50_000, 2);
    await conn.write(new TextEncoder().encode(
      `POST /add_data/${id}/ HTTP/1.1\r\nHost: x\r\nContent-Type: video/webm\r\n` +
        `X-Chunk-Index: 1\r\nContent-Length: ${second.length}\r\n\r\n`,
    ));
    await conn.write(second.subarray(0, 25_000));
    await delay(300);
    const end = await terminate(server, dataDir);
    server = undefined;
    console.log(
      `sigterm figures: with a stalled upload: exit ${end.code} after ${end.ms} ms; KV closed: ${end.kvClosed}`,
    );
    conn.close();
    conn = undefined;
    assert.equal(end.code, 0);
    assert.ok(end.ms < STOP_BOUND_MS, `stopped after ${end.ms} ms`);
    const kept = await committedChunks(dataDir, id);
    assert.deepEqual(
      kept.map((c) => c.index),
      [0],
      "the stalled chunk was abandoned",
    );

    server = await spawnServer(dataDir);
    const retry = await sendChunk(server.url, id, second, 1);
    assert.equal(retry.status, 200);
    const body = await retry.json();
    assert.equal(body.chunks_received, 2);
    assert.equal(
      bytesOnDisk(dataDir, id),
      first.length + second.length,
      "the abandoned partial chunk was swept",
    );
    await terminate(server, dataDir);
    server = undefined;
    assert.ok(
      end.kvClosed,
      "KV was closed before exiting (no write-ahead log left)",
    );
  } finally {
    conn?.close();
    await server?.stop("SIGKILL");
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
