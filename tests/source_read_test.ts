/**
 * Reading a recording of many tiny chunks back (issue 12, item 9, read
 * side): `/media/<id>/source` and processing read chunks that lie one after
 * another in a stored file as one range, and open each file once per run of
 * ranges in it, so their cost follows the bytes, not the chunk count. The
 * recordings are written straight into the data folder and KV the way
 * ingest lays them out (in order in the data file, out of order in it, or
 * a file per chunk), and the test counts the storage's file opens by
 * wrapping `Deno.open`.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type ChunkEntry,
  chunkKey,
  type Recording,
  recordingKey,
} from "../lib/kv/keys.ts";
import type { AppContext } from "../lib/core/context.ts";
import { openChunkStream } from "../lib/recordings/source.ts";
import { listChunks } from "../lib/recordings/chunks.ts";
import { openLocalRanges } from "../lib/storage/local_ranges.ts";
import { S3Client } from "../lib/storage/s3_client.ts";
import { S3Storage } from "../lib/storage/s3.ts";
import { ScratchSpace } from "../lib/storage/scratch.ts";
import {
  canOpenChunks,
  type ChunkRef,
  coalesceChunks,
  type Storage,
} from "../lib/storage/storage.ts";
import {
  createSession,
  makeRecording,
  missingTool,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import { eventually } from "./browser_helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

/** How ingest may have laid the chunks out. */
type Layout = "in order" | "reversed" | "file per chunk";

/**
 * Stores `bytes` as `count` chunks of a new recording, laid out as
 * `layout`, with the chunk entries and counters in KV as ingest commits
 * them.
 */
async function writeChunked(
  server: TestServer,
  bytes: Uint8Array,
  count: number,
  layout: Layout,
): Promise<{ id: string; chunks: number }> {
  const id = await createSession(server.url);
  const dir = join(server.dataDir, "recordings", id, "chunks");
  const per = Math.max(1, Math.floor(bytes.length / count));
  const pieces: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += per) {
    pieces.push(bytes.subarray(at, at + per));
  }
  const entries: ChunkEntry[] = [];
  const at = Date.now();
  if (layout === "file per chunk") {
    for (const [index, piece] of pieces.entries()) {
      const file = `${index}.chunk`;
      await Deno.writeFile(join(dir, file), piece);
      entries.push({
        index,
        file,
        offset: 0,
        size: piece.length,
        explicit: true,
        at,
      });
    }
  } else {
    const order = pieces.map((_, i) => i);
    if (layout === "reversed") order.reverse();
    const data = new Uint8Array(bytes.length);
    const offsets: number[] = [];
    let offset = 0;
    for (const i of order) {
      data.set(pieces[i], offset);
      offsets[i] = offset;
      offset += pieces[i].length;
    }
    await Deno.writeFile(join(dir, "data"), data);
    for (const [index, piece] of pieces.entries()) {
      entries.push({
        index,
        file: "data",
        offset: offsets[index],
        size: piece.length,
        explicit: true,
        at,
      });
    }
  }
  const kv = server.service.ctx.kv;
  for (let i = 0; i < entries.length; i += 500) {
    const op = kv.atomic();
    for (const e of entries.slice(i, i + 500)) op.set(chunkKey(id, e.index), e);
    assert.ok((await op.commit()).ok);
  }
  const rec = (await kv.get<Recording>(recordingKey(id))).value!;
  await kv.set(recordingKey(id), {
    ...rec,
    bytesReceived: bytes.length,
    chunksReceived: entries.length,
    nextIndex: entries.length,
    mimeType: "video/webm",
    mediaChecked: true,
    lastChunkAt: at,
  });
  return { id, chunks: entries.length };
}

/** Runs `fn` counting the files opened under `dir`. */
async function countingOpens<T>(
  dir: string,
  fn: () => Promise<T>,
): Promise<{ result: T; opens: number }> {
  const open = Deno.open;
  let opens = 0;
  Deno.open = (path: string | URL, options?: Deno.OpenOptions) => {
    if (String(path).startsWith(dir)) opens++;
    return open(path, options);
  };
  try {
    return { result: await fn(), opens };
  } finally {
    Deno.open = open;
  }
}

Deno.test({
  name:
    "source read: 10,000 tiny chunks are served and processed with a few file opens when they share a file, in order or not, and the bytes are the recording's",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "0" });
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-tiny-" });
    try {
      const source = await makeRecording(join(tmp, "src.webm"), {
        codec: "vp9",
        seconds: 3,
      });
      const count = 10_000;
      const figures: string[] = [];
      for (
        const layout of ["in order", "reversed", "file per chunk"] as Layout[]
      ) {
        const { id, chunks } = await writeChunked(
          server,
          source,
          count,
          layout,
        );
        const chunkDir = join(server.dataDir, "recordings", id, "chunks");
        let t0 = performance.now();
        const served = await countingOpens(chunkDir, async () => {
          const res = await fetch(`${server.url}/media/${id}/source`);
          assert.equal(res.status, 200);
          return new Uint8Array(await res.arrayBuffer());
        });
        const serveMs = performance.now() - t0;
        assert.deepEqual(served.result, source, `${layout}: the same bytes`);

        t0 = performance.now();
        const processed = await countingOpens(chunkDir, async () => {
          const done = await fetch(`${server.url}/complete_job/${id}/`, {
            method: "POST",
          });
          assert.equal(done.status, 200);
          await done.body?.cancel();
          return await waitForStatus(server.url, id, undefined, 300_000);
        });
        const processMs = performance.now() - t0;
        assert.equal(
          processed.result.status,
          "complete",
          JSON.stringify(processed.result),
        );
        if (layout !== "file per chunk") {
          assert.ok(served.opens <= 2, `${layout}: ${served.opens} opens`);
          assert.ok(
            processed.opens <= 6,
            `${layout}: ${processed.opens} opens`,
          );
        }
        figures.push(
          `${layout} (${chunks} chunks): source ${
            serveMs.toFixed(0)
          } ms with ${served.opens} opens, processing ${
            processMs.toFixed(0)
          } ms with ${processed.opens} opens`,
        );
      }
      console.log(
        `source-read figures: ${count} chunks, ${source.length} B: ${
          figures.join("; ")
        }`,
      );
    } finally {
      await server.close();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("source read: without the range capability the chunks are read one by one, with the same bytes", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const bytes = new Uint8Array(30_000).map((_, i) => (i * 7) % 251);
    bytes.set([0x1a, 0x45, 0xdf, 0xa3]);
    const { id } = await writeChunked(server, bytes, 300, "reversed");
    const ctx = server.service.ctx;
    const chunks = await listChunks(ctx, id);
    let opened = 0;
    const plain = {
      openChunk(videoId: string, chunk: ChunkRef) {
        opened++;
        return ctx.storage.openChunk(videoId, chunk);
      },
    } as unknown as Storage;
    assert.equal(canOpenChunks(plain), false);
    assert.equal(canOpenChunks(ctx.storage), true);
    const read = new Uint8Array(
      await new Response(
        openChunkStream({ ...ctx, storage: plain }, id, chunks),
      )
        .arrayBuffer(),
    );
    assert.deepEqual(read, bytes);
    assert.equal(opened, chunks.length);
    const ranged = new Uint8Array(
      await new Response(openChunkStream(ctx, id, chunks)).arrayBuffer(),
    );
    assert.deepEqual(ranged, bytes);
  } finally {
    await server.close();
  }
});

Deno.test("source read: adjacent chunks of one file merge into one range, others stay apart", () => {
  assert.deepEqual(
    coalesceChunks([
      { file: "data", offset: 0, size: 3 },
      { file: "data", offset: 3, size: 2 },
      { file: "a.chunk", size: 4 },
      { file: "data", offset: 5, size: 1 },
      { file: "data", offset: 10, size: 1 },
      { file: "data", offset: 9, size: 1 },
    ]),
    [
      { file: "data", offset: 0, size: 5 },
      { file: "a.chunk", offset: 0, size: 4 },
      { file: "data", offset: 5, size: 1 },
      { file: "data", offset: 10, size: 1 },
      { file: "data", offset: 9, size: 1 },
    ],
  );
  assert.deepEqual(coalesceChunks([]), []);
});

Deno.test("source read: ranges read in any order give their bytes, and a file shorter than its range is an error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-ranges-" });
  try {
    const a = join(dir, "a");
    const b = join(dir, "b");
    const big = new Uint8Array(300_000).map((_, i) => i % 253);
    await Deno.writeFile(a, big);
    await Deno.writeFile(b, new Uint8Array([1, 2, 3]));
    const ranges = [
      { path: a, offset: 200_000, size: 1 },
      { path: a, offset: 10, size: 5 },
      { path: a, offset: 150_000, size: 100_000 },
      { path: b, offset: 1, size: 2 },
      { path: a, offset: 299_999, size: 1 },
      { path: a, offset: 0, size: 0 },
      { path: a, offset: 120_000, size: 3000 },
    ];
    const expected: number[] = [];
    for (const r of ranges) {
      const source = r.path === a ? big : new Uint8Array([1, 2, 3]);
      expected.push(...source.subarray(r.offset, r.offset + r.size));
    }
    const read = new Uint8Array(
      await new Response(openLocalRanges(ranges)).arrayBuffer(),
    );
    assert.deepEqual(read, new Uint8Array(expected));
    assert.deepEqual(
      new Uint8Array(await new Response(openLocalRanges([])).arrayBuffer()),
      new Uint8Array(0),
    );
    await assert.rejects(
      new Response(openLocalRanges([{ path: b, offset: 2, size: 5 }]))
        .arrayBuffer(),
      /ended 4 bytes before the end/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "source read: cancelling a stream of S3 chunks stops the chunk reads still under way (none is left waiting for the store)",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    // A store that answers no read until the end of the test, as a slow
    // one does while a job is stopped: what it was asked, what was dropped.
    const release = Promise.withResolvers<void>();
    let asked = 0;
    let dropped = 0;
    const store = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      async (req) => {
        asked++;
        const gone = new Promise<void>((r) =>
          req.signal.addEventListener("abort", () => {
            dropped++;
            r();
          })
        );
        await Promise.race([release.promise, gone]);
        return new Response("x");
      },
    );
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-cancel-" });
    const storage = new S3Storage({
      client: new S3Client({
        endpoint: `http://127.0.0.1:${store.addr.port}`,
        region: "local-1",
        bucket: "slow-store",
        accessKeyId: "a",
        secretAccessKey: "s",
        retries: 0,
      }),
      prefix: "",
      scratch: new ScratchSpace(dir),
    });
    try {
      const chunks: ChunkRef[] = ["a", "b", "c"].map((file) => ({
        file,
        size: 1,
      }));
      const reader = openChunkStream(
        { storage } as unknown as AppContext,
        "rec",
        chunks,
      ).getReader();
      const first = reader.read().catch(() => null);
      await eventually(
        () => asked === chunks.length,
        5_000,
        "every chunk is opened ahead",
      );
      await reader.cancel();
      await first;
      await eventually(
        () => dropped === asked,
        2_000,
        "once the stream is cancelled, no read waits for the store",
      );
    } finally {
      release.resolve();
      await store.shutdown();
      storage.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
