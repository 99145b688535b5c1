/**
 * The picture of an upload: the arrival log kept in each chunk's commit
 * (lib/recordings/arrivals.ts) and the SVG timeline drawn on the server
 * (components/recording/upload_timeline.tsx), checked against a recording
 * with a known gap, a duplicate, a skipped and a late chunk.
 */

import assert from "node:assert/strict";
import { renderToString } from "preact-render-to-string";
import { mediaBytes, startTestServer } from "./helpers.ts";
import {
  describeUpload,
  MAX_BUCKETS,
  MAX_EVENTS,
  noteChunk,
  noteDuplicate,
  replayArrivals,
} from "../lib/recordings/arrivals.ts";
import type { ArrivalLog, ChunkEntry, Recording } from "../lib/kv/keys.ts";
import { UploadTimeline } from "../components/recording/upload_timeline.tsx";

function piece(index: number): Uint8Array<ArrayBuffer> {
  return index === 0 ? mediaBytes(2000) : new Uint8Array(2000).fill(index);
}

Deno.test("upload picture: a gap, a duplicate, a skipped and a late chunk are in the server-drawn SVG", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const created = await (await fetch(`${server.url}/create/`, {
      method: "POST",
    })).json();
    const id = created.video_id;
    const send = async (index: number) => {
      const res = await fetch(`${server.url}/add_data/${id}/`, {
        method: "POST",
        body: piece(index),
        headers: { "x-chunk-index": String(index) },
      });
      const body = await res.json();
      assert.equal(res.status, 200, JSON.stringify(body));
      return body;
    };
    for (const i of [0, 1, 2]) {
      await send(i);
      await new Promise((r) => setTimeout(r, 150));
    }
    await new Promise((r) => setTimeout(r, 3300)); // the gap
    await send(3);
    assert.equal((await send(3)).duplicate, true); // a retry: same bytes
    await send(5); // chunk 4 is skipped...
    await send(4); // ...and arrives late

    const picture = await (await fetch(
      `${server.url}/api/recordings/${id}/upload`,
    )).json();
    assert.equal(picture.counts.gap, 1);
    assert.equal(picture.counts.duplicate, 1);
    assert.equal(picture.counts.skip, 1);
    assert.equal(picture.counts.late, 1);
    assert.equal(picture.missing, 0);
    assert.equal(picture.chunks, 6);
    assert.equal(picture.totalBytes, 12_000);
    assert.equal(picture.live, true);
    const gap = picture.events.find((e: { kind: string }) => e.kind === "gap");
    assert.ok(gap.until - gap.at >= 3300, JSON.stringify(gap));
    assert.equal(gap.index, 3);

    const res = await fetch(`${server.url}/videos/${id}`);
    assert.equal(res.status, 200);
    const html = await res.text();
    const svg = html.match(/<svg class="upload-svg"[\s\S]*?<\/svg>/)?.[0];
    assert.ok(svg, "the page has the upload picture without JavaScript");
    assert.match(svg, /role="img"/);
    for (const kind of ["gap", "resume", "duplicate", "skip", "late"]) {
      assert.match(svg, new RegExp(`data-kind="${kind}"`), kind);
    }
    assert.equal([...svg.matchAll(/data-kind="gap"/g)].length, 1);
    assert.equal([...svg.matchAll(/data-kind="duplicate"/g)].length, 1);
    assert.match(svg, /chunk 3 arrived again at/);
    assert.match(svg, /No chunk for 3\.\d s after/);
    assert.match(svg, /<text class="gap-label"[^>]*>gap 3\.\d s<\/text>/);
    assert.ok(
      [...svg.matchAll(/data-kind="bytes"/g)].length >= 2,
      "bars on both sides of the gap",
    );
    const summary = html.match(/<p class="upload-summary"[^>]*>([^<]*)</)?.[1];
    assert.match(
      summary ?? "",
      /^6 chunks, 12 KB over [\d.]+ s; peak [\d.]+ KB\/s; 1 gap; 1 duplicate chunk; 1 late chunk\.$/,
    );
    assert.match(
      html,
      /<li data-kind="skip">At [^<]* chunk 4 was missing<\/li>/,
    );
  } finally {
    await server.close();
  }
});

Deno.test("upload picture: the log stays bounded and a log rebuilt from chunks matches the one kept", () => {
  let log: ArrivalLog | undefined;
  const start = 1_000_000;
  const chunks: ChunkEntry[] = [];
  let nextIndex = 0;
  let last: number | undefined;
  for (let i = 0; i < 5000; i++) {
    const at = start + i * 1000 + (i === 100 ? 20_000 : 0) +
      (i > 100 ? 20_000 : 0);
    const index = i === 200 ? 201 : i === 201 ? 200 : i;
    log = noteChunk(log, {
      at,
      size: 1000,
      index,
      nextIndex,
      lastChunkAt: last,
      afterStop: false,
    });
    chunks.push({ index, at, size: 1000, file: "f", explicit: true });
    nextIndex = Math.max(nextIndex, index + 1);
    last = at;
  }
  for (let i = 0; i < 100; i++) log = noteDuplicate(log, start, i);
  assert.ok(log!.bytes.length <= MAX_BUCKETS);
  assert.equal(log!.bytes.reduce((a, b) => a + b, 0), 5_000_000);
  assert.equal(log!.events.length, MAX_EVENTS);
  assert.equal(log!.counts.duplicate, 100);
  assert.equal(log!.counts.gap, 1);
  assert.equal(log!.counts.skip, 1);
  assert.equal(log!.counts.late, 1);
  assert.ok(JSON.stringify(log).length < 4000, "the log is small");

  const rec = {
    id: "x",
    status: "complete",
    createdAt: start,
    updatedAt: start,
    bytesReceived: 5_000_000,
    chunksReceived: 5000,
    nextIndex: 5000,
    files: [],
    lastChunkAt: last,
  } as Recording;
  const rebuilt = replayArrivals(rec, chunks)!;
  assert.deepEqual(rebuilt.bytes, log!.bytes);
  assert.deepEqual(rebuilt.counts, { gap: 1, skip: 1, late: 1 });

  const picture = describeUpload(rec, rebuilt, Date.now(), true);
  const svg = renderToString(<UploadTimeline picture={picture} />);
  assert.match(svg, /data-kind="gap"/);
  assert.match(svg, /predates the arrival log/);
  assert.doesNotMatch(svg, /NaN|Infinity/);
});
