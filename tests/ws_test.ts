import assert from "node:assert/strict";
import { loadConfig } from "../lib/core/config.ts";
import { closeContext, openContext } from "../lib/core/context.ts";
import { connectLive, type LiveState } from "../client/live_client.ts";
import { startLiveFeed } from "../lib/live/feed.ts";
import { changeHeadKey, changePrefix } from "../lib/kv/keys.ts";
import { createRecording } from "../lib/recordings/sessions.ts";
import type {
  ChangeMessage,
  ListSnapshotMessage,
  LiveMessage,
  RecordingSnapshotMessage,
  RecordingView,
} from "../common/recording_view.ts";
import { createApp, startService } from "../main.ts";
import {
  eventually,
  freePort,
  openSocket,
  serveOnPort,
  type TestSocket,
  wsUrl,
} from "./browser_helpers.ts";
import {
  createSession,
  makeRecording,
  missingTool,
  sendChunk,
  splitBytes,
  startTestServer,
  testConfig,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const SANITIZE = { sanitizeOps: true, sanitizeResources: true };
const STATUS_RANK = { recording: 0, processing: 1, complete: 2, failed: 2 };

async function recordingBytes(seconds = 3): Promise<Uint8Array<ArrayBuffer>> {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-ws-" });
  try {
    return await makeRecording(`${dir}/in.webm`, { seconds });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function uploadAll(
  url: string,
  id: string,
  pieces: Uint8Array<ArrayBuffer>[],
): Promise<void> {
  for (const [i, piece] of pieces.entries()) {
    const res = await sendChunk(url, id, piece, i);
    const body = await res.text();
    assert.equal(res.status, 200, body);
  }
}

async function complete(url: string, id: string): Promise<void> {
  const res = await fetch(`${url}/complete_job/${id}/`, { method: "POST" });
  assert.equal(res.status, 200);
  await res.body?.cancel();
}

function changesOf(
  socket: TestSocket,
  id: string,
): { view: RecordingView; at: number }[] {
  return socket.received
    .filter(({ message }) =>
      message.type === "change" && message.recording.id === id
    )
    .map(({ message, at }) => ({
      view: (message as ChangeMessage).recording,
      at,
    }));
}

/** Tells versions of one recording apart. */
function versionKey(rec: RecordingView): string {
  return JSON.stringify([
    rec.id,
    rec.updatedAt,
    rec.status,
    rec.chunksReceived,
    rec.progress,
    rec.stage,
  ]);
}

function isCompleteChange(id: string) {
  return (m: LiveMessage) =>
    m.type === "change" && m.recording.id === id &&
    (m.recording.status === "complete" || m.recording.status === "failed");
}

/** Asserts that one recording's changes move forward only, ending complete. */
function assertOrderedCycle(changes: RecordingView[], chunks: number): void {
  const statuses = changes.map((c) => c.status);
  assert.deepEqual(
    [...new Set(statuses)],
    ["recording", "processing", "complete"],
    `statuses: ${statuses.join(" ")}`,
  );
  for (let i = 1; i < changes.length; i++) {
    const [a, b] = [changes[i - 1], changes[i]];
    assert.ok(
      STATUS_RANK[b.status] >= STATUS_RANK[a.status],
      `status went back at ${i}`,
    );
    assert.ok(b.updatedAt >= a.updatedAt, `updatedAt went back at ${i}`);
    assert.ok(
      b.chunksReceived >= a.chunksReceived,
      `chunk count went back at ${i}`,
    );
    if (a.status === "processing" && b.status === "processing") {
      assert.ok(
        (b.progress ?? 0) >= (a.progress ?? 0),
        `progress went back at ${i}`,
      );
    }
  }
  const counts = changes.filter((c) =>
    c.status === "recording" && c.chunksReceived > 0
  )
    .map((c) => c.chunksReceived);
  assert.deepEqual(counts, Array.from({ length: chunks }, (_, i) => i + 1));
  const last = changes.at(-1)!;
  assert.equal(last.status, "complete");
  assert.equal(last.progress, 1);
  assert.equal(last.files.length, 2);
  assert.ok(
    last.media && last.media.durationS > 2,
    "complete change carries the media facts",
  );
}

Deno.test({
  name:
    "ws: /ws sends a snapshot of the newest recordings on connect, paged by cursor",
  ...SANITIZE,
  async fn() {
    const server = await startTestServer();
    try {
      const ids = [];
      for (let i = 0; i < 3; i++) {
        ids.push(await createSession(server.url));
        await new Promise((r) => setTimeout(r, 5));
      }
      const first = await openSocket(wsUrl(server.url, "/ws?limit=2"));
      const snap = await first.next() as ListSnapshotMessage;
      await first.close();
      assert.equal(snap.type, "snapshot");
      assert.deepEqual(snap.recordings.map((r) => r.id), [ids[2], ids[1]]);
      assert.equal(snap.recordings[0].status, "recording");
      assert.equal(typeof snap.now, "number");
      assert.ok(snap.cursor, "a full page has a cursor to the next");
      assert.equal(
        "tokenHash" in snap.recordings[0],
        false,
        "no secrets on the wire",
      );

      const older = await openSocket(
        wsUrl(
          server.url,
          `/ws?limit=2&cursor=${encodeURIComponent(snap.cursor)}`,
        ),
      );
      const rest = await older.next() as ListSnapshotMessage;
      await older.close();
      assert.deepEqual(rest.recordings.map((r) => r.id), [ids[0]]);
      assert.equal(rest.cursor, null);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "ws: /ws/<id> sends the recording's snapshot; bad ids are 404 and plain GETs 426 before any upgrade",
  ...SANITIZE,
  async fn() {
    const server = await startTestServer();
    try {
      const id = await createSession(server.url);
      const socket = await openSocket(wsUrl(server.url, `/ws/${id}`));
      const snap = await socket.next() as RecordingSnapshotMessage;
      await socket.close();
      assert.equal(snap.type, "snapshot");
      assert.equal(snap.recording.id, id);
      assert.equal(snap.recording.status, "recording");
      assert.equal(snap.recording.chunksReceived, 0);

      for (const path of [`/ws/${crypto.randomUUID()}`, "/ws/not-an-id"]) {
        const res = await fetch(`${server.url}${path}`, {
          headers: { upgrade: "websocket", connection: "Upgrade" },
        });
        assert.equal(res.status, 404, path);
        assert.match(
          res.headers.get("content-type") ?? "",
          /application\/json/,
        );
        assert.match((await res.json()).error, /No recording/);
      }
      const plain = await fetch(`${server.url}/ws`);
      assert.equal(plain.status, 426);
      assert.match(
        plain.headers.get("content-type") ?? "",
        /application\/json/,
      );
      assert.match((await plain.json()).error, /WebSocket/);
      const badCursor = await openSocket(
        wsUrl(server.url, "/ws?cursor=garbage"),
      );
      assert.equal(await badCursor.closed, 1008);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "ws: browser pages of origins CORS does not allow cannot open live sockets",
  ...SANITIZE,
  async fn() {
    const server = await startTestServer({
      CORS_ORIGINS: "https://app.example",
    });
    try {
      const upgrade = { upgrade: "websocket", connection: "Upgrade" };
      const foreign = await fetch(`${server.url}/ws`, {
        headers: { ...upgrade, origin: "https://evil.example" },
      });
      assert.equal(foreign.status, 403);
      assert.match(
        foreign.headers.get("content-type") ?? "",
        /application\/json/,
      );
      assert.match((await foreign.json()).error, /CORS_ORIGINS/);
      for (const origin of ["https://app.example", server.url]) {
        const socket = new WebSocket(
          wsUrl(server.url, "/ws"),
          { headers: { origin } } as unknown as string[],
        );
        const first = await new Promise<string>((resolve, reject) => {
          socket.onmessage = (e) => resolve(JSON.parse(e.data).type);
          socket.onerror = () => reject(new Error(`${origin} was refused`));
        });
        socket.close();
        await new Promise((r) => (socket.onclose = r));
        assert.equal(first, "snapshot", origin);
      }
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "ws: a full upload-and-process cycle arrives in order on /ws and /ws/<id>, each change within 250 ms",
  ...SANITIZE,
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    try {
      const bytes = await recordingBytes(3);
      const pieces = splitBytes(bytes, [40_000]);
      const committed: { key: string; id: string; at: number }[] = [];
      const unsubscribe = server.service.ctx.live.subscribe((rec) => {
        committed.push({ key: versionKey(rec), id: rec.id, at: Date.now() });
      });
      const all = await openSocket(wsUrl(server.url, "/ws"));
      assert.equal((await all.next()).type, "snapshot");
      const id = await createSession(server.url);
      const one = await openSocket(wsUrl(server.url, `/ws/${id}`));
      assert.equal((await one.next()).type, "snapshot");
      const publishedBefore = committed.length;

      await uploadAll(server.url, id, pieces);
      await complete(server.url, id);
      await one.until(isCompleteChange(id), 60_000);
      await all.until(isCompleteChange(id), 10_000);
      await one.close();
      await all.close();
      unsubscribe();

      const viaOne = changesOf(one, id);
      const viaAll = changesOf(all, id);
      assertOrderedCycle(viaOne.map((c) => c.view), pieces.length);
      assertOrderedCycle(viaAll.map((c) => c.view), pieces.length);
      assert.equal(
        viaAll[0].view.chunksReceived,
        0,
        "/ws saw the recording being created",
      );
      assert.deepEqual(
        viaOne.map((c) => versionKey(c.view)),
        committed.slice(publishedBefore).filter((c) => c.id === id).map((c) =>
          c.key
        ),
        "/ws/<id> got every committed change, in commit order",
      );
      const publishedAt = new Map(committed.map((c) => [c.key, c.at]));
      for (const { view, at } of [...viaOne, ...viaAll]) {
        const delay = at - publishedAt.get(versionKey(view))!;
        assert.ok(
          delay < 250,
          `a ${view.status} change arrived ${delay} ms after its commit`,
        );
      }
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "ws: a socket opened again catches up with a fresh snapshot of what changed while it was closed",
  ...SANITIZE,
  async fn() {
    const server = await startTestServer();
    try {
      const id = await createSession(server.url);
      const before = await openSocket(wsUrl(server.url, `/ws/${id}`));
      assert.equal(
        ((await before.next()) as RecordingSnapshotMessage).recording
          .chunksReceived,
        0,
      );
      await before.close();

      const bytes = await recordingBytes(2);
      await uploadAll(server.url, id, splitBytes(bytes, [20_000]).slice(0, 2));
      await complete(server.url, id);

      const after = await openSocket(wsUrl(server.url, `/ws/${id}`));
      const snap = (await after.next()) as RecordingSnapshotMessage;
      await after.close();
      assert.equal(snap.recording.chunksReceived, 2);
      assert.notEqual(snap.recording.status, "recording");
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "ws: the browser live client reconnects after the server drops it and catches up",
  ...SANITIZE,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-ws-" });
    const service = await startService(
      await testConfig({ DATA_DIR: dataDir }),
      { sameProcess: true },
    );
    const port = freePort();
    const url = `http://127.0.0.1:${port}`;
    let server = await serveOnPort(service, port);
    const states: LiveState[] = [];
    const views: RecordingView[] = [];
    const client = connectLive(wsUrl(url, "/ws"), {
      minDelayMs: 50,
      maxDelayMs: 200,
      onState: (s) => states.push(s),
      onMessage(m) {
        if (m.type === "snapshot" && "recordings" in m) {
          views.push(...m.recordings);
        }
        if (m.type === "change") views.push(m.recording);
      },
    });
    try {
      await eventually(() => client.snapshots === 1, 5_000, "first snapshot");
      await server.shutdown();
      await eventually(
        () => states.at(-1) === "reconnecting",
        5_000,
        "reconnecting state",
      );

      server = await serveOnPort(service, port);
      const id = await createSession(url);
      await eventually(
        () => client.snapshots >= 2,
        10_000,
        "snapshot after reconnect",
      );
      await eventually(
        () => views.some((v) => v.id === id),
        5_000,
        "the new recording",
      );
      assert.deepEqual(states.slice(0, 2), ["connecting", "live"]);
      assert.ok(states.includes("reconnecting"));
      assert.equal(states.at(-1), "live");
    } finally {
      await client.close();
      await server.shutdown();
      await service.close();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "ws: closed sockets release their subscriptions, including ones closed before the snapshot",
  ...SANITIZE,
  async fn() {
    const server = await startTestServer();
    try {
      const hub = server.service.ctx.live;
      const baseline = hub.size;
      const id = await createSession(server.url);
      const sockets: TestSocket[] = [];
      for (let i = 0; i < 10; i++) {
        sockets.push(
          await openSocket(wsUrl(server.url, i % 2 ? "/ws" : `/ws/${id}`)),
        );
      }
      for (const s of sockets) assert.equal((await s.next()).type, "snapshot");
      assert.equal(hub.size, baseline + 10);

      for (const s of sockets) await s.close();
      const hasty = new WebSocket(wsUrl(server.url, "/ws"));
      await new Promise((resolve) => {
        hasty.onopen = () => hasty.close();
        hasty.onclose = resolve;
      });
      await eventually(
        () => hub.size === baseline,
        5_000,
        "subscriptions released",
      );

      const res = await sendChunk(server.url, id, await recordingBytes(1), 0);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      assert.equal(hub.size, baseline);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "ws: changes committed by one instance reach sockets of another through the KV change feed",
  ...SANITIZE,
  ignore: ffmpegMissing,
  async fn() {
    const a = await startTestServer({ SHARED_KV: "true" });
    const ctxB = await openContext(
      await testConfig({
        DATA_DIR: a.dataDir,
        RUN_WORKER: "false",
        SHARED_KV: "true",
      }),
      { sameProcess: true },
    );
    const stopFeed = startLiveFeed(ctxB);
    const b = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      createApp(ctxB).fetch,
    );
    const bUrl = `http://127.0.0.1:${b.addr.port}`;
    try {
      const socket = await openSocket(wsUrl(bUrl, "/ws"));
      assert.equal((await socket.next()).type, "snapshot");
      const id = await createSession(a.url);
      const pieces = splitBytes(await recordingBytes(2), [30_000]);
      await uploadAll(a.url, id, pieces);
      // The feed publishes a recording as it is when read, so a state the
      // next commit replaces at once can be skipped: let the last chunk's
      // change arrive before the session moves on.
      await socket.until(
        (m) =>
          m.type === "change" && m.recording.id === id &&
          m.recording.chunksReceived === pieces.length,
        10_000,
      );
      await complete(a.url, id);
      await socket.until(isCompleteChange(id), 60_000);
      await socket.close();

      const changes = changesOf(socket, id).map((c) => c.view);
      const statuses = [...new Set(changes.map((c) => c.status))];
      assert.deepEqual(statuses, ["recording", "processing", "complete"]);
      for (let i = 1; i < changes.length; i++) {
        assert.ok(
          changes[i].updatedAt >= changes[i - 1].updatedAt,
          `went back at ${i}`,
        );
        assert.notDeepEqual(
          changes[i],
          changes[i - 1],
          `change ${i} was sent twice`,
        );
      }
      assert.equal(
        changes.filter((c) => c.status === "recording").at(-1)?.chunksReceived,
        pieces.length,
      );
    } finally {
      await b.shutdown();
      await stopFeed();
      await closeContext(ctxB);
      await a.close();
    }
  },
});

Deno.test({
  name:
    "ws: a lone instance writes no change log and starts no feed; with SHARED_KV it does both",
  ...SANITIZE,
  async fn() {
    for (const shared of [false, true]) {
      const dir = await Deno.makeTempDir({ prefix: "tapedeck-feed-" });
      const ctx = await openContext(
        loadConfig({
          DATA_DIR: dir,
          MIN_FREE_BYTES: "0",
          ...(shared ? { SHARED_KV: "true" } : {}),
        }),
        { sameProcess: true },
      );
      try {
        assert.equal(ctx.config.sharedKv, shared);
        const stop = startLiveFeed(ctx);
        assert.equal(ctx.live.size, shared ? 1 : 0);
        await stop();
        assert.equal(ctx.live.size, 0);
        const { recording } = await createRecording(ctx);
        const logged = await Array.fromAsync(
          ctx.kv.list<{ id: string }>({ prefix: changePrefix() }),
        );
        assert.deepEqual(
          logged.map((e) => e.value.id),
          shared ? [recording.id] : [],
        );
        assert.equal(
          (await ctx.kv.get(changeHeadKey())).versionstamp !== null,
          shared,
        );
      } finally {
        await closeContext(ctx);
        await Deno.remove(dir, { recursive: true });
      }
    }
  },
});
