import assert from "node:assert/strict";
import {
  createSession,
  makeRecording,
  mediaBytes,
  missingTool,
  sendChunk,
  splitBytes,
  startTestServer,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";
import { seededRandom, shuffled } from "./support/random.ts";

const ffmpegMissing = await missingTool("ffmpeg");

async function downloadWebm(url: string, id: string, path: string) {
  const res = await fetch(`${url}/media/${id}/${id}.webm`);
  assert.equal(res.status, 200);
  await Deno.writeFile(path, new Uint8Array(await res.arrayBuffer()));
}

Deno.test({
  name:
    "chunks: indexed chunks sent out of order with a retried duplicate give the same video as a clean upload",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-order-" });
    try {
      const source = await makeRecording(`${tmp}/src.webm`, {
        codec: "vp9",
        seconds: 3,
      });
      const sourceHashes = await videoPacketHashes(`${tmp}/src.webm`);
      const pieces = splitBytes(source, [9_000, 15_000]);

      const clean = await createSession(server.url);
      for (const [i, piece] of pieces.entries()) {
        const res = await sendChunk(server.url, clean, piece, i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }

      const messy = await createSession(server.url);
      const order = shuffled(pieces.map((_, i) => i), seededRandom(7));
      assert.notDeepEqual(order, pieces.map((_, i) => i));
      for (const i of order) {
        const res = await sendChunk(server.url, messy, pieces[i], i);
        assert.equal(res.status, 200);
        const body = await res.json();
        assert.equal(body.duplicate, false);
      }
      const retry = await fetch(`${server.url}/add_data/${messy}/?index=3`, {
        method: "POST",
        body: pieces[3],
      });
      assert.equal(retry.status, 200);
      const retryBody = await retry.json();
      assert.equal(retryBody.duplicate, true);
      assert.equal(retryBody.chunks_received, pieces.length);
      assert.equal(retryBody.bytes_received, source.length);

      const clash = await sendChunk(server.url, messy, pieces[4], 3);
      assert.equal(clash.status, 409);
      assert.match(
        (await clash.json()).error,
        /already stored with different content/,
      );

      for (const id of [clean, messy]) {
        const res = await fetch(`${server.url}/complete_job/${id}/`, {
          method: "POST",
        });
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      for (const id of [clean, messy]) {
        const st = await waitForStatus(server.url, id);
        assert.equal(st.status, "complete", JSON.stringify(st));
        assert.equal(st.bytes_received, source.length);
      }
      await downloadWebm(server.url, clean, `${tmp}/clean.webm`);
      await downloadWebm(server.url, messy, `${tmp}/messy.webm`);
      const cleanHashes = await videoPacketHashes(`${tmp}/clean.webm`);
      const messyHashes = await videoPacketHashes(`${tmp}/messy.webm`);
      assert.equal(sourceHashes.length, 90);
      assert.deepEqual(cleanHashes, sourceHashes);
      assert.deepEqual(messyHashes, sourceHashes);
    } finally {
      await server.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "chunks: JSON and form fields carry the index (order) and last_chunk completes the session",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-order-" });
    try {
      const source = await makeRecording(`${tmp}/src.webm`, {
        codec: "vp9",
        seconds: 2,
      });
      const [a, b, c] = splitBytes(source, [Math.ceil(source.length / 3)]);
      const id = await createSession(server.url);

      const form = new FormData();
      form.append("blob_data", new Blob([c]), "blob");
      form.append("order", "2");
      const r2 = await fetch(`${server.url}/add_data/${id}/`, {
        method: "POST",
        body: form,
      });
      assert.equal(r2.status, 200);
      assert.equal((await r2.json()).index, 2);

      const r0 = await fetch(`${server.url}/add_data/${id}/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          blob_data: (a as unknown as { toBase64(): string }).toBase64(),
          order: 0,
        }),
      });
      assert.equal(r0.status, 200);
      assert.equal((await r0.json()).index, 0);

      const last = await fetch(`${server.url}/add_data/${id}/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          blob_data: `data:video/webm;base64,${
            (b as unknown as { toBase64(): string }).toBase64()
          }`,
          order: "1",
          last_chunk: true,
        }),
      });
      assert.equal(last.status, 200);
      const lastBody = await last.json();
      assert.equal(lastBody.message, "Chunk received");
      assert.equal(lastBody.status, "processing");

      const late = await sendChunk(server.url, id, a, 3);
      assert.equal(late.status, 409);
      await late.body?.cancel();

      const st = await waitForStatus(server.url, id);
      assert.equal(st.status, "complete", JSON.stringify(st));
      await downloadWebm(server.url, id, `${tmp}/out.webm`);
      assert.deepEqual(
        await videoPacketHashes(`${tmp}/out.webm`),
        await videoPacketHashes(`${tmp}/src.webm`),
      );
    } finally {
      await server.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test("chunks: chunks without an index are kept in arrival order", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const id = await createSession(server.url);
    for (let i = 0; i < 5; i++) {
      const res = await sendChunk(server.url, id, mediaBytes(10 + i, i));
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.equal(body.index, i);
    }
    const st = await (await fetch(`${server.url}/check_status/${id}/`)).json();
    assert.equal(st.chunks_received, 5);
    assert.equal(st.bytes_received, 10 + 11 + 12 + 13 + 14);
  } finally {
    await server.close();
  }
});

Deno.test("chunks: an empty body is refused at once, not after waiting for an earlier request still sending", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  let release = () => {};
  try {
    const id = await createSession(server.url);
    // An earlier chunk whose body is still arriving.
    const slow = fetch(`${server.url}/add_data/${id}/`, {
      method: "POST",
      body: new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(mediaBytes(300, 0));
          release = () => {
            release = () => {};
            controller.close();
          };
        },
      }),
    });
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const empty = await fetch(`${server.url}/add_data/${id}/`, {
      method: "POST",
      // Chunked, with no bytes: no Content-Length says it is empty.
      body: new ReadableStream<Uint8Array>({ start: (c) => c.close() }),
    });
    const waited = Date.now() - started;
    assert.equal(empty.status, 400);
    assert.match((await empty.json()).error, /empty/);
    // Waiting for the earlier request would take ARRIVAL_ORDER_WAIT_MS (10 s).
    assert.ok(waited < 5_000, `answered after ${waited} ms`);
    release();
    const first = await slow;
    assert.equal(first.status, 200);
    assert.equal((await first.json()).index, 0);
  } finally {
    release();
    await server.close();
  }
});
