/**
 * Issue 12, finding 9: 74,785 one-byte chunks in 90 s grew KV by 18 MB and
 * made serving and processing slow. A recording now holds at most
 * MAX_CHUNKS_PER_RECORDING chunks, and only a few under MIN_CHUNK_BYTES
 * (a browser's first blob can be one byte, the last of a stop tiny).
 */

import assert from "node:assert/strict";
import { SMALL_CHUNKS_ALLOWED } from "../lib/core/config.ts";
import { createSession, mediaBytes, startTestServer } from "./helpers.ts";

async function sendMany(
  url: string,
  id: string,
  count: number,
  body: (i: number) => Uint8Array<ArrayBuffer>,
  headers: (i: number) => Record<string, string> = () => ({}),
): Promise<{ statuses: Record<number, number>; errors: Set<string> }> {
  const statuses: Record<number, number> = {};
  const errors = new Set<string>();
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < count) {
      const i = next++;
      const res = await fetch(`${url}/add_data/${id}/`, {
        method: "POST",
        body: body(i),
        headers: headers(i),
      });
      const text = await res.text();
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status !== 200) errors.add(JSON.parse(text).error);
    }
  }));
  return { statuses, errors };
}

Deno.test("caps: 10,000 one-byte chunks are refused once the recording holds its few small chunks", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const id = await createSession(server.url);
    const first = await fetch(`${server.url}/add_data/${id}/`, {
      method: "POST",
      body: mediaBytes(4),
    });
    assert.equal(first.status, 200);
    await first.body?.cancel();
    const started = Date.now();
    const { statuses, errors } = await sendMany(
      server.url,
      id,
      10_000,
      () => new Uint8Array([7]),
    );
    console.log(
      `caps figures: 10,000 one-byte chunks in ${Date.now() - started} ms: ${
        JSON.stringify(statuses)
      }`,
    );
    assert.equal(statuses[200], SMALL_CHUNKS_ALLOWED - 1);
    assert.equal(statuses[400], 10_000 - (SMALL_CHUNKS_ALLOWED - 1));
    assert.equal(errors.size, 1);
    assert.match([...errors][0], /MIN_CHUNK_BYTES/);
    const ledger = await (await fetch(`${server.url}/chunks/${id}/`)).json();
    assert.equal(ledger.chunks_received, SMALL_CHUNKS_ALLOWED);
    // Chunks of a fair size still go in.
    const fair = await fetch(`${server.url}/add_data/${id}/`, {
      method: "POST",
      body: mediaBytes(1000, 3),
    });
    assert.equal(fair.status, 200, await fair.text());
  } finally {
    await server.close();
  }
});

Deno.test("caps: past MAX_CHUNKS_PER_RECORDING a chunk gets 413 naming the setting, and a retried chunk is still a duplicate", async () => {
  const server = await startTestServer({
    RUN_WORKER: "false",
    MAX_CHUNKS_PER_RECORDING: "300",
  });
  try {
    const id = await createSession(server.url);
    const { statuses, errors } = await sendMany(
      server.url,
      id,
      400,
      (i) => mediaBytes(300, i % 250),
      (i) => ({ "x-chunk-index": String(i) }),
    );
    assert.equal(statuses[200], 300);
    assert.equal(statuses[413], 100);
    assert.match([...errors][0], /MAX_CHUNKS_PER_RECORDING/);
    const retry = await fetch(`${server.url}/add_data/${id}/`, {
      method: "POST",
      body: mediaBytes(300, 7),
      headers: { "x-chunk-index": "7" },
    });
    assert.equal(retry.status, 200);
    assert.equal((await retry.json()).duplicate, true);
  } finally {
    await server.close();
  }
});
