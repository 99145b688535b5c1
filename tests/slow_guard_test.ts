/**
 * Tests of lib/http/slow_guard.ts with raw TCP clients: slow request heads
 * and idle connections are closed after the head timeout, a body under the
 * minimum rate gets a 408 and its connection closed, and normal clients
 * (fetch, keep-alive, a head in a few quick pieces, a long download) are not
 * affected.
 */

import assert from "node:assert/strict";
import {
  type GuardedServer,
  serveGuarded,
  SlowBodyError,
  watchBody,
} from "../lib/http/slow_guard.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const HEAD_TIMEOUT = 1000;

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
  if (!req.body) return new Response("ok 0\n");
  let n = 0;
  try {
    const reader = watchBody(req.body, {
      minBytesPerSecond: 1000,
      windowMs: 500,
      deadlineMs: 20_000,
    }).getReader({ mode: "byob" });
    let buffer = new ArrayBuffer(64 * 1024);
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      n += value.length;
      buffer = value.buffer as ArrayBuffer;
    }
  } catch (err) {
    if (err instanceof SlowBodyError) {
      return new Response(err.message, {
        status: 408,
        headers: { Connection: "close" },
      });
    }
    throw err;
  }
  return new Response(`ok ${n}\n`);
}

async function withServer(
  fn: (server: GuardedServer) => Promise<void>,
): Promise<void> {
  const server = serveGuarded({
    hostname: "127.0.0.1",
    port: 0,
    headerTimeoutMs: HEAD_TIMEOUT,
    closeAfterMs: 500,
    onListen() {},
  }, handler);
  assert.equal(server.guarded, true, "serveHttpOnConnection is available");
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
  async send(text: string): Promise<boolean> {
    try {
      await this.conn.write(enc.encode(text));
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
  });
});

Deno.test("slow guard: slow request heads and idle connections are closed after the timeout", async () => {
  await withServer(async (server) => {
    const port = server.addr.port;
    const slow = await Promise.all(
      Array.from({ length: 20 }, () => RawClient.open(port)),
    );
    const idle = await Promise.all(
      Array.from({ length: 5 }, () => RawClient.open(port)),
    );
    // Idle after one request: the timer starts again after the response.
    const kept = await RawClient.open(port);
    await kept.send("GET /once HTTP/1.1\r\nHost: x\r\n\r\n");
    const trickling = slow.map(async (c, i) => {
      await c.send("POST /x HTTP/1.1\r\nHost: x\r\n");
      let k = 0;
      await c.trickle(() => `X-Slow-${i}-${k++}: v\r\n`, 250, 5000);
    });
    await Promise.all(trickling);
    await Promise.race([
      Promise.all([...idle, kept].map((c) => c.done)),
      new Promise((r) => setTimeout(r, 3000)),
    ]);
    const all = [...slow, ...idle, kept];
    const times = all.map((c) => c.closedAt);
    console.log(
      `closed after (ms): slow heads ${
        slow.map((c) => Math.round(c.closedAt)).join(" ")
      }; idle ${
        idle.map((c) => Math.round(c.closedAt)).join(" ")
      }; kept-alive ${
        Math.round(kept.closedAt)
      }; head timeouts counted: ${server.headTimeouts}`,
    );
    for (const t of times) {
      assert.ok(t >= HEAD_TIMEOUT - 50, `closed too early: ${t} ms`);
      assert.ok(t < HEAD_TIMEOUT + 1500, `not closed in time: ${t} ms`);
    }
    for (const c of [...slow, ...idle]) {
      // Closed without a response (Deno's server has no hook to write a 408).
      assert.deepEqual(responses(c.received), []);
    }
    assert.deepEqual(responses(kept.received), ["200"]);
    assert.ok(server.headTimeouts >= 26);
    await Promise.all(all.map((c) => c.close()));
  });
});

Deno.test("slow guard: a body under the minimum rate gets a 408 and its connection closed", async () => {
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
    assert.match(c.received, /under the minimum of 1000 bytes\/s/);
    assert.ok(c.closed && c.closedAt < 3000, `closed at ${c.closedAt}`);
    await c.close();
    // The server goes on serving.
    const res = await fetch(`http://127.0.0.1:${server.addr.port}/after`, {
      method: "POST",
      body: "fine",
    });
    assert.equal(await res.text(), "ok 4\n");
  });
});

Deno.test("watchBody: passes bytes through (BYOB and default readers) and enforces the deadline", async () => {
  const data = new Uint8Array(200_000).map((_, i) => i * 7);
  const source = () => new Response(data).body!;
  // BYOB: the bytes go straight into the reader's buffer.
  const byob = watchBody(source(), { minBytesPerSecond: 1, deadlineMs: 5000 })
    .getReader({ mode: "byob" });
  const parts: number[] = [];
  let buffer = new ArrayBuffer(10_000);
  for (;;) {
    const { done, value } = await byob.read(new Uint8Array(buffer));
    if (done) break;
    parts.push(...value);
    buffer = value.buffer as ArrayBuffer;
  }
  assert.deepEqual(new Uint8Array(parts), data);
  const all = new Uint8Array(
    await new Response(watchBody(source(), { deadlineMs: 5000 })).arrayBuffer(),
  );
  assert.deepEqual(all, data);

  let cancelled: unknown;
  const stalled = new ReadableStream<Uint8Array>({
    pull: () => new Promise(() => {}),
    cancel(reason) {
      cancelled = reason;
    },
  });
  const t0 = performance.now();
  const err = await new Response(watchBody(stalled, { deadlineMs: 300 }))
    .arrayBuffer().then(() => undefined, (e) => e);
  assert.ok(
    err instanceof SlowBodyError && err.kind === "deadline",
    String(err),
  );
  assert.ok(performance.now() - t0 < 1500);
  assert.ok(cancelled instanceof SlowBodyError, "the source was cancelled");
});
