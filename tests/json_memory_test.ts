/**
 * Issue 12, finding 2: base64 JSON chunks used to be held and copied whole
 * several times (8 bodies of 85 MB at once took a server to 2.25 GiB).
 * They are decoded as they arrive now: a burst of the largest JSON bodies
 * moves the server's memory by a bounded amount, and it returns near its
 * baseline afterwards.
 */

import assert from "node:assert/strict";
import { toBase64 } from "../lib/core/base64.ts";
import { spawnServer } from "./helpers.ts";

/** Bytes of one repeated block of the chunk (a multiple of 3, so base64 pieces join). */
const BLOCK = 48 * 1024;
const MIB = 1024 * 1024;

function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = (name: string) =>
    Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"))?.[1] ?? 0);
  return { rss: kib("VmRSS") * 1024, hwm: kib("VmHWM") * 1024 };
}

/**
 * Base64 bytes sent per second per body. Deno's HTTP server reads a body
 * off the socket ahead of a handler that is slower than the client (a
 * bare Deno server writing bodies to files grew by about 390 MiB under 8
 * unpaced 64 MiB loopback uploads, and 10 MiB when paced like this), so
 * the clients are paced like fast real uplinks to measure what tapedeck
 * itself holds.
 */
const PACE_BYTES_PER_S = 8 * MIB;

/** A JSON body `{"blob_data": "<base64 of size bytes>", "order": index}`, generated as it is sent. */
function jsonBody(size: number, index: number): ReadableStream<Uint8Array> {
  const block = new Uint8Array(BLOCK).fill(7);
  block.set([0x1a, 0x45, 0xdf, 0xa3]);
  const first = new TextEncoder().encode(toBase64(block));
  block.set([7, 7, 7, 7]);
  const rest = new TextEncoder().encode(toBase64(block));
  const blocks = Math.ceil(size / BLOCK);
  let sent = -1;
  const started = Date.now();
  let bytes = 0;
  return new ReadableStream({
    async pull(controller) {
      const due = started + (bytes / PACE_BYTES_PER_S) * 1000 - Date.now();
      if (due > 0) await new Promise((r) => setTimeout(r, due));
      bytes += rest.length;
      if (sent === -1) {
        controller.enqueue(new TextEncoder().encode('{"blob_data": "'));
      } else if (sent < blocks) {
        controller.enqueue(sent === 0 && index === 0 ? first : rest);
      } else {
        controller.enqueue(new TextEncoder().encode(`", "order": ${index}}`));
        controller.close();
      }
      sent++;
    },
  });
}

Deno.test({
  name:
    "json memory: a burst of 8 maximum JSON chunk bodies (85 MB each) moves the server's RSS by under 64 MiB, and it returns near its baseline",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-json-mem-" });
    const chunkBytes = Math.floor((64 * MIB) / BLOCK) * BLOCK;
    const server = await spawnServer(dataDir, {
      RUN_WORKER: "false",
      MAX_CHUNK_BYTES: String(64 * MIB),
      // As the `serve` task runs it.
      MALLOC_MMAP_THRESHOLD_: "131072",
      DENO_V8_FLAGS: "--max-semi-space-size=1",
    });
    try {
      const pid = server.child.pid;
      const create = await fetch(`${server.url}/create/`, { method: "POST" });
      const id = (await create.json()).video_id;
      const send = async (index: number) => {
        const res = await fetch(`${server.url}/add_data/${id}/`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: jsonBody(chunkBytes, index),
        });
        const text = await res.text();
        assert.equal(res.status, 200, text);
        return JSON.parse(text);
      };
      // Warm up: one body of each kind of work first.
      await send(0);
      await new Promise((r) => setTimeout(r, 1000));
      const before = memoryOf(pid);
      const answers = await Promise.all(
        Array.from({ length: 8 }, (_, i) => send(i + 1)),
      );
      const peak = memoryOf(pid).hwm;
      await new Promise((r) => setTimeout(r, 3000));
      const after = memoryOf(pid).rss;
      const ledger = await (await fetch(`${server.url}/chunks/${id}/`)).json();
      assert.equal(ledger.chunks_received, 9);
      assert.equal(ledger.bytes_received, 9 * chunkBytes);
      assert.ok(answers.every((a) => a.duplicate === false));
      console.log(
        `json memory figures: baseline RSS ${
          (before.rss / MIB).toFixed(1)
        } MiB, peak ${(peak / MIB).toFixed(1)} MiB (+${
          ((peak - before.rss) / MIB).toFixed(1)
        }), 3 s after the burst ${(after / MIB).toFixed(1)} MiB (+${
          ((after - before.rss) / MIB).toFixed(1)
        }) for 8 x ${(chunkBytes / MIB).toFixed(1)} MiB decoded at once`,
      );
      assert.ok(
        peak - before.rss < 64 * MIB,
        `peak RSS grew by ${((peak - before.rss) / MIB).toFixed(1)} MiB`,
      );
      assert.ok(
        after - before.rss < 32 * MIB,
        `RSS stayed ${((after - before.rss) / MIB).toFixed(1)} MiB above`,
      );
    } finally {
      await server.stop();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
