/**
 * A cluster as it is deployed: two servers (`deno run main.ts`,
 * RUN_WORKER=false) and two workers (`deno run worker.ts`) as separate
 * processes on one PostgreSQL KV and one S3 bucket (Swift). 22 recordings
 * upload at once, their chunks sent round-robin to both servers (every
 * fourth over tus, the rest with `add_data` and an index); one server is
 * killed with SIGKILL mid-upload (its clients retry on the other, and it
 * is started again), one worker is killed with SIGKILL mid-job (the other
 * takes the job over once its lease lapses). Every recording ends
 * complete, byte-exact against its source, processed to completion once,
 * and every server's live socket saw its changes: both servers' until the
 * kill, the surviving one's to the end, and the restarted one's from its
 * start.
 */

import assert from "node:assert/strict";
import type { LiveMessage, RecordingView } from "../common/recording_view.ts";
import { type Job, jobKey } from "../lib/kv/keys.ts";
import { openPostgresKv } from "../lib/kv/postgres.ts";
import { openSocket, type TestSocket, wsUrl } from "./browser_helpers.ts";
import {
  type ChildServer,
  type ChildWorker,
  makeRecording,
  missingTool,
  spawnServer,
  spawnWorker,
  splitBytes,
} from "./helpers.ts";
import { createBucket } from "./support/backend.ts";
import {
  needsPostgres,
  startPostgres,
  type TestPostgres,
} from "./support/postgres.ts";
import { startSwift, SWIFT_IGNORE, type SwiftS3 } from "./support/swift.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const RECORDINGS = 22;
const LEASE_MS = 3_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The servers clients may use now (the killed one leaves, its restart joins). */
class Pool {
  urls: string[] = [];
  pick(k: number): string {
    return this.urls[k % this.urls.length];
  }
}

/** Sends until a server answers other than with a 5xx or a broken connection. */
async function retrying(
  pool: Pool,
  k: number,
  what: string,
  send: (url: string) => Promise<Response>,
  ok: (res: Response) => boolean = (res) => res.status === 200,
): Promise<Response> {
  let last = "";
  for (let attempt = 0; attempt < 100; attempt++) {
    const url = pool.pick(k + attempt);
    try {
      const res = await send(url);
      if (ok(res)) return res;
      last = `${res.status} ${await res.text()}`;
      if (res.status < 500) throw new Error(`${what} via ${url}: ${last}`);
    } catch (err) {
      if (String(err).includes(`${what} via`)) throw err;
      last = String(err); // the server died under the request
    }
    await sleep(100 + attempt * 20);
  }
  throw new Error(`${what}: no server took it: ${last}`);
}

async function uploadIndexed(
  pool: Pool,
  k: number,
  id: string,
  pieces: Uint8Array<ArrayBuffer>[],
  onAck: () => void,
): Promise<void> {
  for (const [index, piece] of pieces.entries()) {
    const res = await retrying(
      pool,
      k + index,
      `chunk ${index} of ${id}`,
      (url) =>
        fetch(`${url}/add_data/${id}/`, {
          method: "POST",
          body: piece,
          headers: {
            "content-type": "video/webm",
            "x-chunk-index": String(index),
          },
          signal: AbortSignal.timeout(30_000),
        }),
    );
    await res.body?.cancel();
    onAck();
    await sleep(30);
  }
  const done = await retrying(
    pool,
    k,
    `complete_job ${id}`,
    (url) =>
      fetch(`${url}/complete_job/${id}/`, {
        method: "POST",
        signal: AbortSignal.timeout(30_000),
      }),
  );
  await done.body?.cancel();
}

const TUS = { "tus-resumable": "1.0.0" };

/** A tus upload with deferred length, each PATCH to the next server; resumes from HEAD. */
async function uploadTus(
  pool: Pool,
  k: number,
  pieces: Uint8Array<ArrayBuffer>[],
  onAck: () => void,
): Promise<string> {
  const created = await retrying(
    pool,
    k,
    "tus creation",
    (url) =>
      fetch(`${url}/files/`, {
        method: "POST",
        headers: { ...TUS, "upload-defer-length": "1" },
        signal: AbortSignal.timeout(30_000),
      }),
    (res) => res.status === 201,
  );
  await created.body?.cancel();
  const id = created.headers.get("x-video-id")!;
  const total = pieces.reduce((n, p) => n + p.length, 0);
  let offset = 0;
  for (const [index, piece] of pieces.entries()) {
    const start = offset;
    const last = index === pieces.length - 1;
    for (let attempt = 0;; attempt++) {
      assert.ok(attempt < 100, `tus PATCH ${index} of ${id} never taken`);
      const url = pool.pick(k + index + attempt);
      try {
        const res = await fetch(`${url}/files/${id}`, {
          method: "PATCH",
          body: piece,
          headers: {
            ...TUS,
            "content-type": "application/offset+octet-stream",
            "upload-offset": String(start),
            ...(last ? { "upload-length": String(total) } : {}),
          },
          signal: AbortSignal.timeout(30_000),
        });
        await res.body?.cancel();
        if (res.status === 204) break;
        assert.ok(
          res.status >= 500 || res.status === 409,
          `tus PATCH ${index} of ${id}: ${res.status}`,
        );
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err;
      }
      // Where does the server stand? A PATCH whose reply was lost may
      // have been stored whole (never in part).
      await sleep(100);
      const head = await fetch(`${pool.pick(k + attempt + 1)}/files/${id}`, {
        method: "HEAD",
        headers: TUS,
        signal: AbortSignal.timeout(30_000),
      }).catch(() => null);
      await head?.body?.cancel();
      const at = Number(head?.headers.get("upload-offset") ?? NaN);
      if (at === start + piece.length) break;
    }
    offset = start + piece.length;
    onAck();
    await sleep(30);
  }
  return id;
}

/** The latest view of each recording a socket was told about, snapshot included. */
function latestViews(socket: TestSocket): Map<string, RecordingView> {
  const views = new Map<string, RecordingView>();
  for (const { message } of socket.received) {
    const m = message as LiveMessage;
    if (m.type === "snapshot" && "recordings" in m) {
      for (const r of m.recordings) views.set(r.id, r);
    } else if (m.type === "change") {
      const known = views.get(m.recording.id);
      if (!known || m.recording.updatedAt >= known.updatedAt) {
        views.set(m.recording.id, m.recording);
      }
    }
  }
  return views;
}

/** The ids a socket saw in a change, with the statuses it saw. */
function changesSeen(socket: TestSocket): Map<string, Set<string>> {
  const seen = new Map<string, Set<string>>();
  for (const { message } of socket.received) {
    const m = message as LiveMessage;
    if (m.type !== "change") continue;
    const set = seen.get(m.recording.id) ?? new Set<string>();
    set.add(m.recording.status);
    seen.set(m.recording.id, set);
  }
  return seen;
}

/** `recording.complete` log lines per recording in a JSON log. */
function completeLines(output: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of output.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line);
      if (entry.msg !== "recording.complete") continue;
      counts.set(entry.recording, (counts.get(entry.recording) ?? 0) + 1);
    } catch {
      // not a log line
    }
  }
  return counts;
}

Deno.test({
  name:
    "cluster: 2 servers and 2 workers as processes on one PostgreSQL and one S3; a server and a worker killed with SIGKILL mid-way; every recording complete, byte-exact, processed once, seen live on every server",
  ignore: ffmpegMissing || needsPostgres().ignore || SWIFT_IGNORE,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const t0 = performance.now();
    const mark = (what: string) =>
      console.log(
        `${((performance.now() - t0) / 1000).toFixed(1)} s: ${what}`,
      );
    let pg: TestPostgres | undefined;
    let swift: SwiftS3 | undefined;
    const servers: ChildServer[] = [];
    const workers: ChildWorker[] = [];
    const sockets: TestSocket[] = [];
    const dirs: string[] = [];
    let kv: Deno.Kv | undefined;
    const dir = () =>
      Deno.makeTempDir({ prefix: "tapedeck-cluster-" }).then((d) => {
        dirs.push(d);
        return d;
      });
    try {
      [pg, swift] = await Promise.all([
        startPostgres({ fast: true }),
        startSwift(),
      ]);
      await createBucket(swift, "cluster");
      mark("PostgreSQL and Swift up");
      const env = {
        KV_PATH: pg.url,
        STORAGE_URL: "s3://cluster/recordings",
        S3_ENDPOINT: swift.endpoint,
        AWS_REGION: swift.region,
        AWS_ACCESS_KEY_ID: swift.accessKeyId,
        AWS_SECRET_ACCESS_KEY: swift.secretAccessKey,
        LOG_FORMAT: "json",
        LOG_LEVEL: "info",
        JOB_LEASE_MS: String(LEASE_MS),
        JOB_BACKOFF_MS: "200",
        COMPLETE_GRACE_MS: "500",
        CREATE_RATE_PER_MINUTE: "0",
        JOB_CONCURRENCY: "2",
      };
      const serverEnv = { ...env, RUN_WORKER: "false" };
      const [a, b] = await Promise.all([
        dir().then((d) => spawnServer(d, serverEnv)),
        dir().then((d) => spawnServer(d, serverEnv)),
      ]);
      servers.push(a, b);
      const [w1, w2] = await Promise.all([
        dir().then((d) => spawnWorker(d, env)),
        dir().then((d) => spawnWorker(d, env)),
      ]);
      workers.push(w1, w2);
      mark("2 servers and 2 workers up");
      kv = await openPostgresKv(pg.url);

      const work = await dir();
      const sources: Uint8Array<ArrayBuffer>[] = [];
      for (
        const [i, codec] of (["vp9", "vp8", "vp9", "vp8"] as const)
          .entries()
      ) {
        sources.push(
          await makeRecording(`${work}/in${i}.webm`, {
            codec,
            seconds: i < 2 ? 3 : 2,
          }),
        );
      }
      const socketA = await openSocket(wsUrl(a.url, "/ws"));
      const socketB = await openSocket(wsUrl(b.url, "/ws"));
      sockets.push(socketA, socketB);
      assert.equal((await socketA.next()).type, "snapshot");
      assert.equal((await socketB.next()).type, "snapshot");

      const pool = new Pool();
      pool.urls = [a.url, b.url];
      const plans = Array.from({ length: RECORDINGS }, (_, k) => {
        const bytes = sources[k % sources.length];
        return {
          k,
          bytes,
          tus: k % 4 === 3,
          pieces: splitBytes(bytes, [16_000, 9_000, 23_000]),
        };
      });
      const totalPieces = plans.reduce((n, p) => n + p.pieces.length, 0);
      let acked = 0;
      let b2: ChildServer | undefined;
      let socketB2: TestSocket | undefined;
      let bKilledAt = 0;
      const killServer = (async () => {
        while (acked < totalPieces * 0.35) await sleep(20);
        pool.urls = [a.url];
        bKilledAt = Date.now();
        await b.stop("SIGKILL");
        mark(`server B killed after ${acked} of ${totalPieces} chunks`);
        await sleep(1_500);
        b2 = await spawnServer(await dir(), serverEnv);
        servers.push(b2);
        socketB2 = await openSocket(wsUrl(b2.url, "/ws"));
        sockets.push(socketB2);
        pool.urls = [a.url, b2.url];
        mark("server B started again; clients use it");
      })();

      // Kill worker 1 while it runs a job (ffmpeg under way).
      let victim: string | undefined;
      let w1KilledAt = 0;
      let tookOverMs = 0;
      const killWorker = (async () => {
        const deadline = Date.now() + 300_000;
        while (!victim && Date.now() < deadline) {
          for await (const e of kv!.list<string>({ prefix: ["job_active"] })) {
            const job = (await kv!.get<Job>(jobKey(e.value))).value;
            if (
              job?.state === "running" && job.workerId === w1.id &&
              Date.now() - job.updatedAt > 100
            ) {
              victim = e.value;
              break;
            }
          }
          if (!victim) await sleep(25);
        }
        assert.ok(victim, "worker 1 ran a job");
        w1KilledAt = Date.now();
        await w1.stop("SIGKILL");
        mark(`worker 1 killed while running the job of ${victim}`);
        // Worker 2 claims it once the lease lapses.
        for (;;) {
          const job = (await kv!.get<Job>(jobKey(victim))).value;
          if (job?.workerId === w2.id) break;
          assert.ok(Date.now() < deadline, "the job was taken over");
          await sleep(25);
        }
        tookOverMs = Date.now() - w1KilledAt;
        mark(`worker 2 took the job over after ${tookOverMs} ms`);
      })();

      const ids = await Promise.all(plans.map(async (plan) => {
        await sleep(plan.k * 40);
        if (plan.tus) {
          return await uploadTus(pool, plan.k, plan.pieces, () => acked++);
        }
        const created = await retrying(
          pool,
          plan.k,
          "create",
          (url) =>
            fetch(`${url}/create/`, {
              method: "POST",
              signal: AbortSignal.timeout(30_000),
            }),
        );
        const id = (await created.json()).video_id as string;
        await uploadIndexed(pool, plan.k, id, plan.pieces, () => acked++);
        return id;
      }));
      await killServer;
      mark(`all ${ids.length} recordings uploaded and completed`);

      const deadline = Date.now() + 240_000;
      for (const id of ids) {
        for (;;) {
          const st = await (await fetch(`${a.url}/check_status/${id}/`))
            .json();
          if (st.status === "complete") break;
          assert.notEqual(st.status, "failed", JSON.stringify(st));
          assert.ok(Date.now() < deadline, `${id}: ${JSON.stringify(st)}`);
          await sleep(200);
        }
      }
      await killWorker;
      mark("every recording complete");

      // Byte-exact sources, from either live server, and the finished files.
      for (const [i, id] of ids.entries()) {
        const url = i % 2 ? a.url : b2!.url;
        const source = await fetch(`${url}/media/${id}/source`);
        assert.equal(source.status, 200);
        assert.deepEqual(
          new Uint8Array(await source.arrayBuffer()),
          plans[i].bytes,
          `the source of ${id} is byte-exact`,
        );
        const video = await (await fetch(`${url}/video/${id}/`)).json();
        assert.equal(video.completed_videos.length, 2, JSON.stringify(video));
        const mp4 = await fetch(`${url}/media/${id}/${id}.mp4`, {
          method: "HEAD",
        });
        assert.equal(mp4.status, 200);
        await mp4.body?.cancel();
      }

      // Processed to completion once: one `recording.complete` line per
      // recording across every process, every job done, and the killed
      // worker's job run again by the other.
      await sleep(500);
      const counts = new Map<string, number>();
      for (const p of [...servers, ...workers]) {
        for (const [id, n] of completeLines(p.output())) {
          counts.set(id, (counts.get(id) ?? 0) + n);
        }
      }
      for (const id of ids) {
        assert.equal(counts.get(id), 1, `${id} completed once`);
        const job: Job = (await kv.get<Job>(jobKey(id))).value!;
        assert.equal(job.state, "done", `${id}: ${JSON.stringify(job)}`);
      }
      assert.equal(counts.size, ids.length);
      const taken: Job = (await kv.get<Job>(jobKey(victim!))).value!;
      assert.equal(taken.workerId, w2.id, "worker 2 took the job over");
      assert.ok(taken.attempts >= 2, `attempts ${taken.attempts}`);
      // Not before the lease lapsed (it was renewed every third of it);
      // how much later depends on the jobs queued before it.
      assert.ok(
        tookOverMs >= LEASE_MS / 2,
        `taken over ${tookOverMs} ms after the kill (lease ${LEASE_MS} ms)`,
      );
      assert.ok(
        !completeLines(w1.output()).has(victim!),
        "worker 1 never completed it",
      );

      // Live sockets: A to the end, B until its death, B's restart from
      // its start, each converging on every recording complete.
      await sleep(500);
      const viewsA = latestViews(socketA);
      const seenA = changesSeen(socketA);
      for (const id of ids) {
        assert.equal(viewsA.get(id)?.status, "complete", `A saw ${id} end`);
        assert.ok(seenA.get(id)?.has("recording"), `A saw ${id} record`);
        assert.equal(viewsA.get(id)?.files.length, 2);
      }
      const seenB = changesSeen(socketB);
      const closedWith = await Promise.race([
        socketB.closed,
        sleep(5_000).then(() => "open"),
      ]);
      assert.notEqual(closedWith, "open", "B's socket ended with B");
      const created = ids.map((id) => viewsA.get(id)!.createdAt);
      ids.forEach((id, i) => {
        if (created[i] < bKilledAt - 1_000) {
          assert.ok(seenB.has(id), `B saw ${id}, made before B's death`);
        }
      });
      const viewsB2 = latestViews(socketB2!);
      for (const id of ids) {
        assert.equal(
          viewsB2.get(id)?.status,
          "complete",
          `B's restart shows ${id} complete`,
        );
      }
      console.log(
        `figures: ${ids.length} recordings, ${totalPieces} chunks (${
          plans.filter((p) => p.tus).length
        } over tus); the killed worker's job was taken over ${tookOverMs} ms after its death (lease ${LEASE_MS} ms); ${seenB.size} recordings seen on B before its death; ${
          ((performance.now() - t0) / 1000).toFixed(0)
        } s in all`,
      );
    } finally {
      for (const s of sockets) await s.close().catch(() => {});
      await (kv?.close() as unknown as Promise<void> | undefined);
      await Promise.all(
        [...servers, ...workers].map((p) => p.stop("SIGTERM")),
      );
      await Promise.all([pg?.stop(), swift?.stop()]);
      for (const d of dirs) {
        await Deno.remove(d, { recursive: true }).catch(() => {});
      }
    }
  },
});
