/**
 * Tests of lib/http/slow_guard.ts (issue 12, finding 7) with raw TCP
 * clients: slow request heads and idle connections are answered 408 and
 * closed after the head timeout, a body under the minimum rate (or past
 * its deadline) gets a JSON 408 and its connection closed, and normal
 * clients (fetch, keep-alive, a head in quick pieces, a long download, a
 * slow but steady upload) are not affected; live sockets work through it
 * and are closed (1001) when it shuts down. The last test runs `main.ts`
 * itself, which serves with the guard by default.
 */

import assert from "node:assert/strict";
import { loadConfig } from "../lib/core/config.ts";
import {
  type GuardedServer,
  serveGuarded,
  upgradeWebSocket,
} from "../lib/http/slow_guard.ts";
import { startService } from "../main.ts";
import { createSession, mediaBytes, spawnServer } from "./helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const HEAD_TIMEOUT = 1000;
const GUARD = {
  hostname: "127.0.0.1",
  port: 0,
  headerTimeoutMs: HEAD_TIMEOUT,
  bodyMinBytesPerS: 1000,
  bodyRateWindowMs: 500,
  bodyTimeoutMs: 0,
  shutdownGraceMs: 2000,
};

/** A handler that reads bodies (BYOB, like the app) and serves a slow download. */
async function handler(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === "/slow-download") {
    // 6 pieces 400 ms apart: 2.4 s, longer than the head timeout.
    let k = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (k++ === 6) return c.close();
        await new Promise((r) => setTimeout(r, 400));
        c.enqueue(enc.encode(`piece ${k}\n`));
      },
    });
    return new Response(body);
  }
  if (url.pathname === "/ws") {
    const { socket, response } = upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`echo ${e.data}`);
    return response;
  }
  if (!req.body) return new Response("ok 0\n");
  let n = 0;
  try {
    let reader: ReadableStreamBYOBReader | undefined;
    try {
      reader = req.body.getReader({ mode: "byob" });
    } catch {
      // Deno.serve's small bodies are not byte streams.
      for await (const piece of req.body) n += piece.length;
    }
    let buffer = new ArrayBuffer(64 * 1024);
    while (reader) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      n += value.length;
      buffer = value.buffer as ArrayBuffer;
    }
  } catch (err) {
    const status = (err as { kind?: string }).kind === "timeout" ? 408 : 400;
    return Response.json({ error: (err as Error).message }, {
      status,
      headers: { Connection: "close" },
    });
  }
  return new Response(`ok ${n}\n`);
}

async function withServer(
  fn: (server: GuardedServer) => Promise<void>,
  options: Partial<typeof GUARD> = {},
): Promise<void> {
  const server = await serveGuarded({ ...GUARD, ...options }, handler);
  assert.equal(server.guarded, true, "the guard is on");
  try {
    await fn(server);
  } finally {
    await server.shutdown();
  }
}

/** A raw connection that records what it receives and when it is closed. */
class RawClient {
  received = "";
  closedAt = -1;
  readonly started = performance.now();
  readonly done: Promise<void>;
  constructor(readonly conn: Deno.Conn) {
    this.done = (async () => {
      const buf = new Uint8Array(16 * 1024);
      try {
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          this.received += dec.decode(buf.subarray(0, n));
        }
      } catch {
        // reset by the server: closed too
      }
      this.closedAt = performance.now() - this.started;
    })();
  }
  static async open(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  get closed(): boolean {
    return this.closedAt >= 0;
  }
  /** Writes, ignoring a connection the server already closed. */
  async send(text: string | Uint8Array): Promise<boolean> {
    try {
      await this.conn.write(typeof text === "string" ? enc.encode(text) : text);
      return true;
    } catch {
      return false;
    }
  }
  /** Sends `pieces` one after the other, `gapMs` apart, until it is closed. */
  async trickle(pieces: () => string, gapMs: number, maxMs: number) {
    while (!this.closed && performance.now() - this.started < maxMs) {
      await Promise.race([
        new Promise((r) => setTimeout(r, gapMs)),
        this.done,
      ]);
      if (this.closed) break;
      await this.send(pieces());
    }
  }
  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // closed already
    }
    await this.done;
  }
}

function responses(text: string): string[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
}

function jsonError(text: string): string {
  const body = text.slice(text.indexOf("\r\n\r\n") + 4);
  return JSON.parse(body).error;
}

Deno.test("slow guard: normal clients are not affected", async () => {
  await withServer(async (server) => {
    const url = `http://127.0.0.1:${server.addr.port}`;
    // fetch, with its keep-alive pool, a few times with pauses under the timeout.
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${url}/up`, {
        method: "POST",
        body: new Uint8Array(300_000),
      });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "ok 300000\n");
      await new Promise((r) => setTimeout(r, HEAD_TIMEOUT / 3));
    }
    // A raw client: a head sent in quick pieces, two requests on one connection.
    const c = await RawClient.open(server.addr.port);
    for (
      const line of ["GET /a HTTP/1.1\r\n", "Host: x\r\n", "X-A: 1\r\n", "\r\n"]
    ) {
      await c.send(line);
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, HEAD_TIMEOUT / 2));
    await c.send(
      "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(responses(c.received), ["200", "200"]);
    assert.match(c.received, /ok 5\n/);
    assert.equal(c.closed, false);
    await c.close();
    // A download that takes longer than the head timeout is not cut.
    const res = await fetch(`${url}/slow-download`);
    const text = await res.text();
    assert.equal(text.split("\n").filter(Boolean).length, 6, text);
    // Many uploads at once, bigger than the stream's queue.
    const big = await Promise.all(
      Array.from({ length: 20 }, () =>
        fetch(`${url}/up`, {
          method: "POST",
          body: new Uint8Array(3_000_000),
        }).then((r) => r.text())),
    );
    assert.deepEqual(big, Array(20).fill("ok 3000000\n"));
  });
});

Deno.test("slow guard: slow request heads and idle connections get a JSON 408 and are closed after the timeout", async () => {
  await withServer(async (server) => {
    const port = server.addr.port;
    const slow = await Promise.all(
      Array.from({ length: 20 }, () => RawClient.open(port)),
    );
    const idle = await Promise.all(
      Array.from({ length: 5 }, () => RawClient.open(port)),
    );
    // Idle after one request: kept alive for about the same time.
    const kept = await RawClient.open(port);
    await kept.send("GET /once HTTP/1.1\r\nHost: x\r\n\r\n");
    const trickling = slow.map(async (c, i) => {
      await c.send("POST /x HTTP/1.1\r\nHost: x\r\n");
      let k = 0;
      await c.trickle(() => `X-Slow-${i}-${k++}: v\r\n`, 250, 6000);
    });
    await Promise.all(trickling);
    await Promise.race([
      Promise.all([...idle, kept].map((c) => c.done)),
      new Promise((r) => setTimeout(r, 4000)),
    ]);
    const all = [...slow, ...idle, kept];
    console.log(
      `closed after (ms): slow heads ${
        slow.map((c) => Math.round(c.closedAt)).join(" ")
      }; idle ${
        idle.map((c) => Math.round(c.closedAt)).join(" ")
      }; kept-alive ${
        Math.round(kept.closedAt)
      }; head timeouts counted: ${server.headTimeouts}`,
    );
    for (const c of all) {
      assert.ok(c.closedAt >= HEAD_TIMEOUT - 50, `closed early: ${c.closedAt}`);
      assert.ok(
        c.closedAt < 2 * HEAD_TIMEOUT + 1500,
        `not closed in time: ${c.closedAt} ms`,
      );
    }
    for (const c of [...slow, ...idle]) {
      assert.deepEqual(responses(c.received), ["408"]);
      assert.match(c.received, /content-type: application\/json/i);
      assert.match(jsonError(c.received), /HEADER_TIMEOUT_MS/);
    }
    assert.deepEqual(responses(kept.received), ["200"]);
    assert.ok(server.headTimeouts >= 25);
    await Promise.all(all.map((c) => c.close()));
  });
});

Deno.test("slow guard: a body under the minimum rate gets a JSON 408 and its connection closed", async () => {
  await withServer(async (server) => {
    const c = await RawClient.open(server.addr.port);
    await c.send(
      "POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n",
    );
    let k = 0;
    await c.trickle(() => (k++, "a"), 100, 6000);
    console.log(
      `slow body: closed after ${
        Math.round(c.closedAt)
      } ms, ${k} bytes sent, got ${
        JSON.stringify(c.received.split("\r\n")[0])
      }`,
    );
    assert.deepEqual(responses(c.received), ["408"]);
    assert.match(
      jsonError(c.received),
      /under the minimum of 1000 bytes\/s.*BODY_MIN_BYTES_PER_S/,
    );
    assert.ok(c.closed && c.closedAt < 3000, `closed at ${c.closedAt}`);
    assert.equal(server.slowBodies, 1);
    await c.close();
    // The server goes on serving.
    const res = await fetch(`http://127.0.0.1:${server.addr.port}/after`, {
      method: "POST",
      body: "fine",
    });
    assert.equal(await res.text(), "ok 4\n");
  });
});

Deno.test("slow guard: a slow but steady upload (3 KB/s, with a pause) is not dropped", async () => {
  await withServer(async (server) => {
    const c = await RawClient.open(server.addr.port);
    const total = 9000;
    await c.send(
      `POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: ${total}\r\n\r\n`,
    );
    // 300 bytes every 100 ms (3000 B/s, the minimum is 1000 B/s over 500 ms),
    // with one 300 ms pause in the middle.
    for (let sent = 0; sent < total; sent += 300) {
      await new Promise((r) => setTimeout(r, sent === 4500 ? 300 : 100));
      await c.send("b".repeat(300));
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(responses(c.received), ["200"]);
    assert.match(c.received, /ok 9000\n/);
    assert.equal(c.closed, false, "kept alive");
    assert.equal(server.slowBodies, 0);
    await c.close();
  });
});

Deno.test("slow guard: a body past BODY_TIMEOUT_MS gets a 408 even at a good rate", async () => {
  await withServer(async (server) => {
    const c = await RawClient.open(server.addr.port);
    await c.send(
      "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
    );
    await c.trickle(() => "c".repeat(2000), 100, 5000);
    assert.deepEqual(responses(c.received), ["408"]);
    assert.match(jsonError(c.received), /BODY_TIMEOUT_MS/);
    assert.ok(c.closedAt < 2500, `closed at ${c.closedAt}`);
    await c.close();
  }, { bodyTimeoutMs: 1200 });
});

Deno.test("slow guard: live sockets work through it and get 1001 when it shuts down", async () => {
  const server = await serveGuarded(GUARD, handler);
  const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/ws`);
  const closed = new Promise<number>((r) => ws.onclose = (e) => r(e.code));
  await new Promise((r, j) => {
    ws.onopen = r;
    ws.onerror = () => j(new Error("the socket did not open"));
  });
  const echoes: string[] = [];
  ws.onmessage = (e) => echoes.push(e.data);
  // Longer than the head timeout: an upgraded socket has no such limit.
  for (let i = 0; i < 3; i++) {
    ws.send(`m${i}`);
    await new Promise((r) => setTimeout(r, HEAD_TIMEOUT * 0.7));
  }
  assert.deepEqual(echoes, ["echo m0", "echo m1", "echo m2"]);
  assert.equal(server.webSockets, 1);
  await server.shutdown();
  assert.equal(await closed, 1001);
});

Deno.test("slow guard: HEADER_TIMEOUT_MS=0 serves with plain Deno.serve and says so", async () => {
  const server = await serveGuarded({ ...GUARD, headerTimeoutMs: 0 }, handler);
  try {
    assert.equal(server.guarded, false);
    assert.match(server.description, /NOT dropped/);
    const res = await fetch(`http://127.0.0.1:${server.addr.port}/x`, {
      method: "POST",
      body: "abc",
    });
    assert.equal(await res.text(), "ok 3\n");
  } finally {
    await server.shutdown();
  }
});

Deno.test("slow guard: the app served by it keeps /ws, answers chunks, and refuses slow bodies with its own 408", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-guard-" });
  const service = await startService(loadConfig({
    DATA_DIR: dataDir,
    MIN_FREE_BYTES: "0",
    RUN_WORKER: "false",
    LOG_LEVEL: "error",
  }));
  const server = await serveGuarded(GUARD, service.app.fetch);
  const url = `http://127.0.0.1:${server.addr.port}`;
  try {
    const id = await createSession(url);
    const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/ws/${id}`);
    const types: string[] = [];
    ws.onmessage = (e) => types.push(JSON.parse(e.data).type);
    await new Promise((r) => ws.onopen = r);
    const res = await fetch(`${url}/add_data/${id}/`, {
      method: "POST",
      body: mediaBytes(300_000),
      headers: { "content-type": "video/webm", "x-chunk-index": "0" },
    });
    assert.equal(res.status, 200, await res.text());
    const deadline = Date.now() + 3000;
    while (types.length < 2 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(types.slice(0, 2), ["snapshot", "change"]);
    ws.close();
    // Pages, HEAD and streamed files come through whole.
    const page = await fetch(`${url}/videos/${id}`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<!DOCTYPE html>/);
    const head = await fetch(`${url}/media/${id}/source`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), "300000");
    await head.body?.cancel();
    const source = await fetch(`${url}/media/${id}/source`);
    assert.deepEqual(
      new Uint8Array(await source.arrayBuffer()),
      mediaBytes(300_000),
    );
    // A chunk trickled in: the app's JSON 408, and the connection closed.
    const c = await RawClient.open(server.addr.port);
    await c.send(
      `POST /add_data/${id}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/webm\r\nX-Chunk-Index: 1\r\nContent-Length: 100000\r\n\r\n`,
    );
    await c.trickle(() => "a", 100, 6000);
    assert.deepEqual(responses(c.received), ["408"]);
    assert.match(c.received, /content-type: application\/json/i);
    assert.match(jsonError(c.received), /BODY_MIN_BYTES_PER_S/);
    assert.ok(c.closedAt < 3000);
    await c.close();
    const st = await (await fetch(`${url}/check_status/${id}/`)).json();
    assert.equal(st.chunks_received, 1, "the slow chunk stored nothing");
  } finally {
    await server.shutdown();
    await service.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("slow guard: main.ts serves with it by default: slow heads and bodies are dropped, uploads and /ws work", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-guard-main-" });
  const server = await spawnServer(dataDir, {
    RUN_WORKER: "false",
    HEADER_TIMEOUT_MS: "1000",
    BODY_RATE_WINDOW_MS: "1000",
  });
  try {
    assert.match(
      server.output(),
      /request heads must be complete within 1000 ms/,
    );
    const port = Number(new URL(server.url).port);
    const id = await createSession(server.url);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/${id}`);
    const first = new Promise<string>((r, j) => {
      ws.onmessage = (e) => r(JSON.parse(e.data).type);
      ws.onerror = () => j(new Error("/ws did not open"));
    });
    assert.equal(await first, "snapshot");
    ws.close();
    const ok = await fetch(`${server.url}/add_data/${id}/`, {
      method: "POST",
      body: mediaBytes(200_000),
      headers: { "content-type": "video/webm" },
    });
    assert.equal(ok.status, 200, await ok.text());
    const head = await RawClient.open(port);
    await head.send(`GET /check_status/${id}/ HTTP/1.1\r\n`);
    let k = 0;
    await head.trickle(() => `X-${k++}: v\r\n`, 300, 6000);
    assert.deepEqual(responses(head.received), ["408"]);
    assert.ok(head.closedAt < 3500, `head closed at ${head.closedAt}`);
    const body = await RawClient.open(port);
    await body.send(
      `POST /add_data/${id}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/webm\r\nContent-Length: 50000\r\n\r\n`,
    );
    await body.trickle(() => "z", 200, 8000);
    assert.deepEqual(responses(body.received), ["408"]);
    assert.ok(body.closedAt < 4000, `body closed at ${body.closedAt}`);
    await Promise.all([head.close(), body.close()]);
  } finally {
    await server.stop("SIGTERM");
    await Deno.remove(dataDir, { recursive: true });
  }
});
