/**
 * Fault: two clients writing the same session at once (GitHub issue #4,
 * "Faults to survive"): a recorder and its retry logic, two tabs, a replayed
 * queue. Every request of a round is fired at the same moment
 * (Promise.all), from two separate connection pools. Stored chunks are read
 * back from the real KV and disk: each index holds exactly one contender's
 * bytes, whole.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { type ChunkEntry, chunkPrefix } from "../lib/kv/keys.ts";
import {
  createSession,
  makeRecording,
  mediaBytes,
  missingTool,
  splitBytes,
  startTestServer,
  type TestServer,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";
import { bytesOnDisk, readChunk } from "./fault_helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

interface Reply {
  index?: number;
  sha: string;
  status: number;
  contentType: string | null;
  body: Record<string, unknown>;
}

async function post(
  client: Deno.HttpClient,
  url: string,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  index?: number,
): Promise<Reply> {
  const headers: Record<string, string> = { "content-type": "video/webm" };
  if (index !== undefined) headers["x-chunk-index"] = String(index);
  const res = await fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    headers,
    body: bytes,
    client,
  } as RequestInit);
  return {
    index,
    sha: sha256(bytes),
    status: res.status,
    contentType: res.headers.get("content-type"),
    body: await res.json(),
  };
}

async function stored(server: TestServer, id: string) {
  const out: { entry: ChunkEntry; sha: string }[] = [];
  for await (
    const e of server.service.ctx.kv.list<ChunkEntry>({
      prefix: chunkPrefix(id),
    })
  ) {
    const bytes = await readChunk(server.dataDir, id, e.value);
    assert.equal(bytes.length, e.value.size);
    out.push({ entry: e.value, sha: sha256(bytes) });
  }
  return out;
}

async function status(server: TestServer, id: string) {
  const res = await fetch(`${server.url}/check_status/${id}/`);
  assert.equal(res.status, 200);
  return await res.json();
}

function describe(replies: Reply[]): string {
  const counts: Record<string, number> = {};
  for (const r of replies) {
    const key = r.status === 200
      ? `200 duplicate:${r.body.duplicate}`
      : `${r.status} ${
        String(r.body.error).replace(/[0-9a-f-]{36}/g, "<id>")
          .replace(/\d+/g, "N")
      }`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return JSON.stringify(counts);
}

Deno.test({
  name:
    "concurrency: two clients racing exact copies of the same chunks store each index once and the video equals the source",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-race-" });
    const a = Deno.createHttpClient({});
    const b = Deno.createHttpClient({});
    try {
      const srcPath = join(tmp, "src.webm");
      const source = await makeRecording(srcPath, { seconds: 6 });
      const pieces = splitBytes(source, [Math.ceil(source.length / 12)]);
      const id = await createSession(server.url);
      // Each client sends every chunk three times; all 6 copies race.
      const replies = await Promise.all(
        pieces.flatMap((p, i) =>
          [a, a, a, b, b, b].map((client) => post(client, server.url, id, p, i))
        ),
      );
      for (const r of replies) {
        assert.equal(r.contentType, "application/json");
        if (r.status === 200) assert.equal(r.body.index, r.index);
        else assert.equal(typeof r.body.error, "string");
      }
      // A refused copy is sent again, one at a time, as a client would.
      const resent: Reply[] = [];
      for (const r of replies.filter((r) => r.status !== 200)) {
        resent.push(await post(a, server.url, id, pieces[r.index!], r.index));
      }
      for (const r of resent) assert.equal(r.status, 200);
      // Each index was stored once, with the bytes sent.
      const kept = await stored(server, id);
      assert.deepEqual(kept.map((k) => k.entry.index), pieces.map((_, i) => i));
      for (const k of kept) assert.equal(k.sha, sha256(pieces[k.entry.index]));
      for (const [i] of pieces.entries()) {
        const fresh = [...replies, ...resent].filter((r) =>
          r.index === i && r.status === 200 && r.body.duplicate === false
        );
        assert.equal(fresh.length, 1, `index ${i} was stored by one request`);
      }
      const st = await status(server, id);
      assert.equal(st.chunks_received, pieces.length);
      assert.equal(st.bytes_received, source.length);
      const leftover = bytesOnDisk(server.dataDir, id) - source.length;

      const done = await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      });
      assert.equal(done.status, 200);
      await done.body?.cancel();
      const fin = await waitForStatus(server.url, id);
      assert.equal(fin.status, "complete", JSON.stringify(fin));
      const media = await fetch(`${server.url}/media/${id}/${id}.webm`);
      assert.equal(media.status, 200);
      const out = join(tmp, "out.webm");
      await Deno.writeFile(out, new Uint8Array(await media.arrayBuffer()));
      assert.deepEqual(
        await videoPacketHashes(out),
        await videoPacketHashes(srcPath),
      );
      console.log(
        `concurrency figures: ${replies.length} exact copies of ${pieces.length} chunks at once: ${
          describe(replies)
        }; bytes of refused or duplicate copies left on disk: ${leftover}`,
      );
      // An exact retry is never refused.
      assert.deepEqual(
        replies.filter((r) => r.status !== 200).map((r) => r.body.error),
        [],
        "exact copies raced were refused",
      );
      assert.equal(leftover, 0, "the copies left no bytes behind on disk");
    } finally {
      a.close();
      b.close();
      await server.close();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("concurrency: clashing chunks for the same indexes keep exactly one contender's bytes per index and refuse the other with 409", async () => {
  const server = await startTestServer();
  const a = Deno.createHttpClient({});
  const b = Deno.createHttpClient({});
  try {
    const id = await createSession(server.url);
    const n = 16;
    const mine = Array.from(
      { length: n },
      (_, i) => mediaBytes(30_000 + i * 100, 1),
    );
    const theirs = Array.from(
      { length: n },
      (_, i) => mediaBytes(20_000 + i * 300, 2),
    );
    // Both contents, twice each, for every index: 4 requests per index at once.
    const replies = await Promise.all(
      Array.from({ length: n }, (_, i) => [
        post(a, server.url, id, mine[i], i),
        post(b, server.url, id, theirs[i], i),
        post(a, server.url, id, mine[i], i),
        post(b, server.url, id, theirs[i], i),
      ]).flat(),
    );
    const kept = await stored(server, id);
    assert.deepEqual(
      kept.map((k) => k.entry.index),
      Array.from({ length: n }, (_, i) => i),
    );
    let wonByA = 0;
    let expectBytes = 0;
    const refusedForContention: string[] = [];
    for (const k of kept) {
      const i = k.entry.index;
      const winner = k.sha === sha256(mine[i])
        ? mine[i]
        : k.sha === sha256(theirs[i])
        ? theirs[i]
        : undefined;
      assert.ok(winner, `index ${i} holds exactly one contender's bytes`);
      if (winner === mine[i]) wonByA++;
      expectBytes += winner.length;
      const forIndex = replies.filter((r) => r.index === i);
      for (const r of forIndex) {
        assert.equal(r.contentType, "application/json");
        if (r.sha === k.sha) {
          if (r.status !== 200) {
            refusedForContention.push(`${r.status} ${r.body.error}`);
            continue;
          }
        } else {
          assert.equal(r.status, 409, `the loser of index ${i}`);
          assert.match(String(r.body.error), /different content/);
        }
      }
      const fresh = forIndex.filter((r) =>
        r.status === 200 && r.body.duplicate === false
      );
      assert.equal(fresh.length, 1, `index ${i}: one request stored it`);
    }
    const st = await status(server, id);
    assert.equal(st.chunks_received, n);
    assert.equal(st.bytes_received, expectBytes);
    const leftover = bytesOnDisk(server.dataDir, id) - expectBytes;
    console.log(
      `concurrency figures: ${replies.length} clashing requests for ${n} indexes: ${
        describe(replies)
      }; client A won ${wonByA}, client B ${
        n - wonByA
      }; bytes of refused or duplicate copies left on disk: ${leftover}`,
    );
    assert.deepEqual(
      refusedForContention,
      [],
      "the winning content was refused in some of its copies",
    );
    assert.equal(leftover, 0, "the losers and copies left no bytes on disk");
  } finally {
    a.close();
    b.close();
    await server.close();
  }
});

Deno.test("concurrency: two clients each keeping 12 chunks in flight to one session (indexed, then unindexed) get every chunk stored once and whole, none refused", async () => {
  const server = await startTestServer();
  const clients = [Deno.createHttpClient({}), Deno.createHttpClient({})];
  try {
    const results: string[] = [];
    const leftovers: number[] = [];
    for (const indexed of [true, false]) {
      const id = await createSession(server.url);
      const chunks = Array.from(
        { length: 240 },
        (_, i) => mediaBytes(4_000 + i * 13, (i % 250) + 1),
      );
      let next = 0;
      const replies: Reply[] = [];
      // 2 clients x 12 workers, each sending its next chunk as soon as the last is answered.
      await Promise.all(
        Array.from({ length: 24 }, async (_, w) => {
          while (next < chunks.length) {
            const i = next++;
            replies.push(
              await post(
                clients[w % 2],
                server.url,
                id,
                chunks[i],
                indexed ? i : undefined,
              ),
            );
          }
        }),
      );
      for (const r of replies) {
        assert.equal(r.contentType, "application/json");
        if (r.status !== 200) assert.equal(typeof r.body.error, "string");
      }
      const ok = replies.filter((r) => r.status === 200);
      const kept = await stored(server, id);
      // Indexes 0..n-1 (indexed: exactly the sent ones), each a whole sent chunk, once.
      assert.deepEqual(
        kept.map((k) => k.entry.index),
        indexed
          ? ok.map((r) => r.index).sort((x, y) => x! - y!)
          : kept.map((_, i) => i),
      );
      const sent = new Set(chunks.map(sha256));
      assert.equal(new Set(kept.map((k) => k.sha)).size, kept.length);
      for (const k of kept) assert.ok(sent.has(k.sha), "a whole sent chunk");
      assert.equal(kept.length, ok.length, "every 200 is one stored chunk");
      for (const r of ok) {
        assert.equal(
          kept.find((k) => k.entry.index === r.body.index)?.sha,
          r.sha,
          "the index in the reply holds that request's bytes",
        );
      }
      const st = await status(server, id);
      assert.equal(st.chunks_received, ok.length);
      const leftover = bytesOnDisk(server.dataDir, id) - st.bytes_received;
      leftovers.push(leftover);
      results.push(
        `${replies.length} ${
          indexed ? "indexed" : "unindexed"
        } chunks, 24 in flight: ${
          describe(replies)
        }, ${leftover} bytes of refused chunks left on disk`,
      );
    }
    console.log(`concurrency figures: ${results.join("; ")}`);
    for (const r of results) {
      assert.doesNotMatch(r, /"(?!200)\d{3}/, `chunks were refused: ${r}`);
    }
    assert.deepEqual(leftovers, [0, 0], "refused chunks left no bytes on disk");
  } finally {
    for (const c of clients) c.close();
    await server.close();
  }
});
