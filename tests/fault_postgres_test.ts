/**
 * PostgreSQL restarted under load (tests/support/postgres.ts `restart()`):
 * two instances on one PostgreSQL KV (A serves the uploads and a live
 * socket, B runs the job worker), six recordings uploading when the
 * database goes away for a while. Requests during the outage get a clean
 * 503 JSON with Retry-After (never a 500, never a hang), every chunk
 * acknowledged before it is kept, and the service recovers by itself: the
 * uploads resume, B's worker picks up jobs queued after the restart (its
 * `watch` survived the reconnect), and A's socket sees B's changes through
 * the change feed.
 */

import assert from "node:assert/strict";
import { openSocket, wsUrl } from "./browser_helpers.ts";
import type { LiveMessage } from "../common/recording_view.ts";
import {
  createSession,
  makeRecording,
  missingTool,
  splitBytes,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import { needsPostgres, startPostgres } from "./support/postgres.ts";

const ffmpegMissing = await missingTool("ffmpeg");

/** Longest any request may take, outage or not. */
const REQUEST_LIMIT_MS = 15_000;

interface Reply {
  at: number;
  status: number;
  ms: number;
  body: string;
  retryAfter: string | null;
  contentType: string;
}

/** A request with a deadline, its reply read whole. */
async function call(url: string, init: RequestInit = {}): Promise<Reply> {
  const t0 = performance.now();
  const res = await fetch(url, {
    ...init,
    signal: AbortSignal.timeout(REQUEST_LIMIT_MS + 5_000),
  });
  const body = await res.text();
  return {
    at: Date.now() - (performance.now() - t0),
    status: res.status,
    ms: performance.now() - t0,
    body,
    retryAfter: res.headers.get("retry-after"),
    contentType: res.headers.get("content-type") ?? "",
  };
}

/** What every reply during the test is checked against. */
class Replies {
  all: { what: string; reply: Reply }[] = [];
  unavailable = 0;

  note(what: string, reply: Reply): Reply {
    this.all.push({ what, reply });
    if (reply.status === 503) this.unavailable++;
    return reply;
  }

  assertClean(): void {
    for (const { what, reply } of this.all) {
      assert.ok(
        reply.ms < REQUEST_LIMIT_MS,
        `${what} took ${reply.ms.toFixed(0)} ms`,
      );
      if (reply.status === 200) continue;
      assert.equal(reply.status, 503, `${what}: ${reply.status} ${reply.body}`);
      assert.match(reply.contentType, /^application\/json/, what);
      const error = JSON.parse(reply.body).error as string;
      assert.ok(error.length > 10, what);
      assert.doesNotMatch(error, /\s+at\s+\S+:\d+:\d+/, "no stack traces");
      assert.ok(
        Number(reply.retryAfter) >= 1,
        `${what}: Retry-After ${reply.retryAfter}`,
      );
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Repeats a request on 503 (after Retry-After, at most 2 s) until it is answered. */
async function untilAnswered(
  replies: Replies,
  what: string,
  send: () => Promise<Reply>,
): Promise<Reply> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const reply = replies.note(what, await send());
    if (reply.status !== 503) return reply;
    await sleep(Math.min(2_000, Number(reply.retryAfter ?? 1) * 1000));
  }
  throw new Error(`${what}: still 503 after 200 attempts`);
}

Deno.test({
  name:
    "fault: PostgreSQL restarted under load: 503 with Retry-After meanwhile, acknowledged chunks kept, uploads, jobs and the live feed resume without a restart",
  ignore: ffmpegMissing || needsPostgres().ignore,
  async fn() {
    const pg = await startPostgres();
    let a: TestServer | undefined;
    let b: TestServer | undefined;
    try {
      const env = {
        KV_PATH: pg.url,
        COMPLETE_GRACE_MS: "300",
        JOB_LEASE_MS: "4000",
      };
      a = await startTestServer({ ...env, RUN_WORKER: "false" });
      b = await startTestServer({ ...env, DATA_DIR: a.dataDir });
      const dir = await Deno.makeTempDir({ prefix: "tapedeck-pgfault-" });
      const sources: Uint8Array<ArrayBuffer>[] = [];
      try {
        for (let i = 0; i < 3; i++) {
          sources.push(
            await makeRecording(`${dir}/in${i}.webm`, {
              seconds: 3,
              codec: i === 2 ? "vp8" : "vp9",
            }),
          );
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      const socket = await openSocket(wsUrl(a.url, "/ws"));
      assert.equal((await socket.next()).type, "snapshot");

      const replies = new Replies();
      const ids: string[] = [];
      const bytesOf = new Map<string, Uint8Array<ArrayBuffer>>();
      const piecesOf = new Map<string, Uint8Array<ArrayBuffer>[]>();
      for (let i = 0; i < 6; i++) {
        const id = await createSession(i % 2 ? b.url : a.url);
        ids.push(id);
        const bytes = sources[i % sources.length];
        bytesOf.set(id, bytes);
        piecesOf.set(id, splitBytes(bytes, [9_000, 14_000, 11_000]));
      }
      const total = [...piecesOf.values()].reduce((n, p) => n + p.length, 0);
      let acked = 0;
      const ackedBeforeRestart = new Map<string, number[]>();
      let restarting = false;
      let restarted!: Promise<void>;
      const restartAt = Math.floor(total * 0.3);

      const upload = async (id: string, k: number) => {
        const pieces = piecesOf.get(id)!;
        for (const [index, piece] of pieces.entries()) {
          const url = (index + k) % 2 ? b!.url : a!.url;
          const reply = await untilAnswered(
            replies,
            `chunk ${index} of ${id}`,
            () =>
              call(`${url}/add_data/${id}/`, {
                method: "POST",
                body: piece,
                headers: {
                  "content-type": "video/webm",
                  "x-chunk-index": String(index),
                },
              }),
          );
          assert.equal(reply.status, 200, reply.body);
          if (!restarting) {
            const list = ackedBeforeRestart.get(id) ?? [];
            list.push(index);
            ackedBeforeRestart.set(id, list);
          }
          if (++acked === restartAt) {
            restarting = true;
            const t0 = Date.now();
            restarted = pg.restart({ downMs: 2_000 }).then(() =>
              console.log(
                `restart: ${new Date(t0).toISOString()} to ${
                  new Date().toISOString()
                }`,
              )
            );
          }
          await sleep(60);
        }
        // Recordings 0 and 1 are completed at once, the rest after the
        // database is back: their jobs are queued after the restart.
        if (k >= 2) await restarted;
        const done = await untilAnswered(
          replies,
          `complete_job ${id}`,
          () => call(`${a!.url}/complete_job/${id}/`, { method: "POST" }),
        );
        assert.equal(done.status, 200, done.body);
      };

      // Status reads keep coming from a third client during the outage.
      let polling = true;
      const poll = (async () => {
        while (polling) {
          const id = ids[Math.floor(Math.random() * ids.length)];
          replies.note(
            `check_status ${id}`,
            await call(`${a!.url}/check_status/${id}/`),
          );
          await sleep(100);
        }
      })();
      try {
        await Promise.all(ids.map((id, k) => upload(id, k)));
        await restarted;
      } finally {
        polling = false;
        await poll.catch(() => {});
      }
      for (const { what, reply } of replies.all) {
        if (reply.ms > 3000) {
          console.log(
            `slow: ${what} ${reply.status} ${reply.ms.toFixed(0)} ms at ${
              new Date(reply.at).toISOString()
            }`,
          );
        }
      }

      assert.ok(
        replies.unavailable > 0,
        "the outage was seen by some request (a 503)",
      );
      replies.assertClean();

      for (const id of ids) {
        const st = await waitForStatus(
          a.url,
          id,
          ["complete", "failed"],
          90_000,
        );
        assert.equal(st.status, "complete", JSON.stringify(st));
        const res: Response = await fetch(`${b.url}/media/${id}/source`);
        assert.equal(res.status, 200);
        const got = new Uint8Array(await res.arrayBuffer());
        assert.deepEqual(got, bytesOf.get(id), `source of ${id} is byte-exact`);
        const ledger = await (await fetch(`${a.url}/chunks/${id}/`)).json();
        for (const index of ackedBeforeRestart.get(id) ?? []) {
          assert.ok(
            ledger.received.some(([lo, hi]: number[]) =>
              index >= lo && index <= hi
            ),
            `chunk ${index} of ${id}, acknowledged before the restart, is kept`,
          );
        }
      }
      // A's socket saw B's worker finish every recording: the change feed
      // (A runs no worker) came back after the restart.
      const completeSeen = new Set(
        socket.received
          .map(({ message }) => message as LiveMessage)
          .filter((m) =>
            m.type === "change" && m.recording.status === "complete"
          )
          .map((m) =>
            (m as Extract<LiveMessage, { type: "change" }>).recording.id
          ),
      );
      for (const id of ids) {
        if (!completeSeen.has(id)) {
          await socket.until(
            (m) =>
              m.type === "change" && m.recording.id === id &&
              m.recording.status === "complete",
            10_000,
          );
        }
      }
      await socket.close();
      console.log(
        `figures: ${replies.all.length} requests, ${replies.unavailable} got 503 during the outage, slowest ${
          Math.max(...replies.all.map((r) => r.reply.ms)).toFixed(0)
        } ms`,
      );
    } finally {
      await b?.close();
      await a?.close();
      await pg.stop();
    }
  },
});
