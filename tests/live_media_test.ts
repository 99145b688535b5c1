// Over 400 lines: the live /media rules (source ranges, HLS files, access) in one place, one scenario per test.
/**
 * Issue 15 item 4: what a live viewer fetches follows the same access
 * rules as the finished files, with headers that suit a live stream:
 * `/media/<id>/source` in byte ranges with `X-Settled-Length` (the part
 * that can no longer change), and the live encode's HLS files (playlist,
 * init segment, media segments) with their types and caching.
 */

import assert from "node:assert/strict";
import {
  expectError,
  mediaBytes,
  sendChunk,
  type TestServer,
  withServer,
} from "./helpers.ts";
import { type Recording, recordingKey } from "../lib/kv/keys.ts";
import { withToken } from "../lib/http/live_media.ts";
import { sliceChunks } from "../lib/recordings/source.ts";
import { concatBytes } from "../common/bytes.ts";

/** A chunk of `size` bytes whose every byte is `fill` (the first one a WebM start). */
function piece(size: number, fill: number, first = false) {
  return first ? mediaBytes(size, fill) : new Uint8Array(size).fill(fill);
}

async function send(
  url: string,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  index: number,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    body: bytes,
    headers: {
      "content-type": "video/webm",
      "x-chunk-index": String(index),
      ...headers,
    },
  });
  assert.equal(res.status, 200, await res.text());
}

async function getSource(
  url: string,
  id: string,
  headers: Record<string, string> = {},
  method = "GET",
) {
  const res = await fetch(`${url}/media/${id}/source`, { method, headers });
  const body = method === "HEAD"
    ? new Uint8Array()
    : new Uint8Array(await res.arrayBuffer());
  return { res, body };
}

Deno.test("live source: /media/<id>/source answers byte ranges over the chunks held now, and X-Settled-Length stops at the first missing chunk", async () => {
  await withServer({}, async ({ url }) => {
    const { video_id: id } = await (await fetch(`${url}/create/`, {
      method: "POST",
    })).json();
    // Nothing yet: an empty 200, nothing settled.
    const empty = await getSource(url, id, { range: "bytes=0-" });
    assert.equal(empty.res.status, 200);
    assert.equal(empty.body.length, 0);
    assert.equal(empty.res.headers.get("x-settled-length"), "0");

    const c0 = piece(3000, 1, true);
    const c1 = piece(2000, 2);
    const c3 = piece(1000, 4);
    await send(url, id, c0, 0);
    await send(url, id, c1, 1);
    await send(url, id, c3, 3); // index 2 is missing

    const head = await getSource(url, id, {}, "HEAD");
    assert.equal(head.res.status, 200);
    assert.equal(head.res.headers.get("accept-ranges"), "bytes");
    assert.equal(head.res.headers.get("content-length"), "6000");
    assert.equal(head.res.headers.get("x-settled-length"), "5000");
    assert.equal(head.res.headers.get("cache-control"), "no-store");
    assert.equal(head.res.headers.get("content-type"), "video/webm");
    const etag = head.res.headers.get("etag")!;
    assert.match(etag, /^"src-3-6000"$/);
    assert.equal(head.res.headers.get("last-modified"), null);

    // A viewer that holds 2500 bytes asks for the rest.
    const rest = await getSource(url, id, { range: "bytes=2500-" });
    assert.equal(rest.res.status, 206);
    assert.equal(rest.res.headers.get("content-range"), "bytes 2500-5999/6000");
    assert.equal(rest.res.headers.get("x-settled-length"), "5000");
    assert.deepEqual(
      rest.body,
      concatBytes([c0, c1, c3]).subarray(2500),
    );
    // A range inside one chunk, and across two.
    const inside = await getSource(url, id, { range: "bytes=3100-3109" });
    assert.equal(inside.res.status, 206);
    assert.deepEqual(inside.body, new Uint8Array(10).fill(2));
    const across = await getSource(url, id, { range: "bytes=4990-5009" });
    assert.deepEqual(
      across.body,
      concatBytes([new Uint8Array(10).fill(2), new Uint8Array(10).fill(4)]),
    );
    // Nothing new past the end: 416 with the length held.
    const none = await getSource(url, id, { range: "bytes=6000-" });
    assert.equal(none.res.status, 416);
    assert.equal(none.res.headers.get("content-range"), "bytes */6000");
    assert.equal(none.res.headers.get("x-settled-length"), "5000");
    // If-Range with the old ETag after the source grew: the whole source.
    const c2 = piece(500, 3);
    await send(url, id, c2, 2);
    const changed = await getSource(url, id, {
      range: "bytes=5000-",
      "if-range": etag,
    });
    assert.equal(changed.res.status, 200);
    assert.equal(changed.body.length, 6500);
    assert.equal(changed.res.headers.get("x-settled-length"), "6500");
    assert.deepEqual(changed.body, concatBytes([c0, c1, c2, c3]));
    // A matching ETag: 304.
    const same = await getSource(url, id, {
      "if-none-match": changed.res.headers.get("etag")!,
    });
    assert.equal(same.res.status, 304);
  });
});

Deno.test("live source: a first chunk at another index than 0 is the start when it starts like a recording; a gap after it ends the settled part", async () => {
  await withServer({}, async ({ url }) => {
    const { video_id: id } = await (await fetch(`${url}/create/`, {
      method: "POST",
    })).json();
    await send(url, id, piece(100, 7, true), 1); // starts like WebM: the start
    let res = await fetch(`${url}/media/${id}/source`, { method: "HEAD" });
    assert.equal(res.headers.get("x-settled-length"), "100");

    const { video_id: other } = await (await fetch(`${url}/create/`, {
      method: "POST",
    })).json();
    await send(url, other, piece(100, 7, true), 0);
    await send(url, other, piece(50, 8), 5);
    res = await fetch(`${url}/media/${other}/source`, { method: "HEAD" });
    assert.equal(res.headers.get("x-settled-length"), "100");
  });
});

Deno.test("live source: chunk slices for a range", () => {
  const chunks = [
    { file: "a", offset: 0, size: 10 },
    { file: "a", offset: 10, size: 5 },
    { file: "b", size: 20 },
  ];
  assert.deepEqual(sliceChunks(chunks, 0, 34), [
    { file: "a", offset: 0, size: 10 },
    { file: "a", offset: 10, size: 5 },
    { file: "b", offset: 0, size: 20 },
  ]);
  assert.deepEqual(sliceChunks(chunks, 12, 16), [
    { file: "a", offset: 12, size: 3 },
    { file: "b", offset: 0, size: 2 },
  ]);
  assert.deepEqual(sliceChunks(chunks, 30, 34), [
    { file: "b", offset: 15, size: 5 },
  ]);
});

/** Publishes fake live files for `id` and marks its record as having a live encode. */
async function fakeLiveEncode(
  server: TestServer,
  id: string,
  files: Record<string, string | Uint8Array>,
  segments: number,
): Promise<void> {
  const ctx = server.service.ctx;
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-live-files-" });
  try {
    for (const [name, content] of Object.entries(files)) {
      const path = `${dir}/${name}`;
      if (typeof content === "string") await Deno.writeTextFile(path, content);
      else await Deno.writeFile(path, content);
      await ctx.storage.publishFile(id, name, path);
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const entry = await ctx.kv.get<Recording>(recordingKey(id));
  await ctx.kv.set(recordingKey(id), {
    ...entry.value!,
    live: {
      mode: "encode",
      state: "running",
      playlist: "live.m3u8",
      init: "live-init.mp4",
      segments,
      encodedS: segments * 2,
      updatedAt: Date.now(),
    },
  });
}

const PLAYLIST = [
  "#EXTM3U",
  "#EXT-X-VERSION:7",
  "#EXT-X-TARGETDURATION:2",
  "#EXT-X-MEDIA-SEQUENCE:1",
  "#EXT-X-PLAYLIST-TYPE:EVENT",
  '#EXT-X-MAP:URI="live-init.mp4"',
  "#EXTINF:2.000000,",
  "live-00001.m4s",
  "#EXTINF:2.000000,",
  "live-00002.m4s",
  "",
].join("\n");

Deno.test("live files: with PRIVATE_RECORDINGS the playlist, segments and source need an API key or the token; types and caching suit a live playlist", async () => {
  await withServer(
    { API_KEYS: "the-key", PRIVATE_RECORDINGS: "true" },
    async (server) => {
      const { url } = server;
      const created = await (await fetch(`${url}/create/`, {
        method: "POST",
        headers: { "x-api-key": "the-key" },
      })).json();
      const id: string = created.video_id;
      const token: string = created.upload_token;
      await send(url, id, piece(400, 1, true), 0);
      const segment = piece(1000, 9);
      await fakeLiveEncode(server, id, {
        "live.m3u8": PLAYLIST,
        "live-init.mp4": piece(64, 5),
        "live-00001.m4s": segment,
        "live-00002.m4s": piece(900, 8),
        "live-00003.m4s": piece(800, 7), // written, not listed yet
      }, 2);
      const names = [
        "live.m3u8",
        "live-init.mp4",
        "live-00001.m4s",
        "source",
      ];
      for (const name of names) {
        await expectError(
          await fetch(`${url}/media/${id}/${name}`),
          401,
          /private/,
        );
        await expectError(
          await fetch(`${url}/media/${id}/${name}?token=not-the-token`),
          401,
        );
        const byKey = await fetch(`${url}/media/${id}/${name}`, {
          headers: { "x-api-key": "the-key" },
        });
        assert.equal(byKey.status, 200, name);
        await byKey.body?.cancel();
      }
      const q = `?token=${encodeURIComponent(token)}`;

      // The playlist: revalidated every time; its URIs carry the token.
      const playlist = await fetch(`${url}/media/${id}/live.m3u8${q}`);
      assert.equal(playlist.status, 200);
      assert.equal(
        playlist.headers.get("content-type"),
        "application/vnd.apple.mpegurl",
      );
      assert.equal(playlist.headers.get("cache-control"), "private, no-cache");
      const text = await playlist.text();
      const t = encodeURIComponent(token);
      assert.match(text, new RegExp(`URI="live-init\\.mp4\\?token=${t}"`));
      assert.match(text, new RegExp(`^live-00001\\.m4s\\?token=${t}$`, "m"));
      assert.match(text, new RegExp(`^live-00002\\.m4s\\?token=${t}$`, "m"));
      assert.match(text, /^#EXT-X-PLAYLIST-TYPE:EVENT$/m);
      const again = await fetch(`${url}/media/${id}/live.m3u8${q}`, {
        headers: { "if-none-match": playlist.headers.get("etag")! },
      });
      assert.equal(again.status, 304);
      // With an API key, the playlist as stored.
      const byKey = await fetch(`${url}/media/${id}/live.m3u8`, {
        headers: { "x-api-key": "the-key" },
      });
      assert.equal(await byKey.text(), PLAYLIST);
      assert.notEqual(
        byKey.headers.get("etag"),
        playlist.headers.get("etag"),
        "the rewritten playlist has its own ETag",
      );

      // The init segment: revalidated; a listed media segment: immutable.
      const init = await fetch(`${url}/media/${id}/live-init.mp4${q}`);
      assert.equal(init.status, 200);
      assert.equal(init.headers.get("content-type"), "video/mp4");
      assert.equal(init.headers.get("cache-control"), "private, no-cache");
      await init.body?.cancel();
      const seg = await fetch(`${url}/media/${id}/live-00001.m4s${q}`);
      assert.equal(seg.status, 200);
      assert.equal(seg.headers.get("content-type"), "video/iso.segment");
      assert.equal(
        seg.headers.get("cache-control"),
        "private, max-age=31536000, immutable",
      );
      assert.equal(seg.headers.get("accept-ranges"), "bytes");
      assert.deepEqual(new Uint8Array(await seg.arrayBuffer()), segment);
      const part = await fetch(`${url}/media/${id}/live-00001.m4s${q}`, {
        headers: { range: "bytes=10-19" },
      });
      assert.equal(part.status, 206);
      assert.equal(part.headers.get("content-range"), "bytes 10-19/1000");
      await part.body?.cancel();
      const head = await fetch(`${url}/media/${id}/live-00002.m4s${q}`, {
        method: "HEAD",
      });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get("content-length"), "900");
      // Published but not listed yet: served, never stored by a cache.
      const unlisted = await fetch(`${url}/media/${id}/live-00003.m4s${q}`);
      assert.equal(unlisted.status, 200);
      assert.equal(unlisted.headers.get("cache-control"), "private, no-store");
      await unlisted.body?.cancel();
      // No such segment: 404; names that are not live files: not served so.
      await expectError(
        await fetch(`${url}/media/${id}/live-00004.m4s${q}`),
        404,
      );
      await expectError(
        await fetch(`${url}/media/${id}/live.m3u8.bak${q}`),
        404,
      );
      await expectError(await fetch(`${url}/media/${id}/live-1.m4s${q}`), 404);
      // Other methods: 405.
      const post = await fetch(`${url}/media/${id}/live.m3u8${q}`, {
        method: "POST",
      });
      assert.equal(post.status, 405);
      await post.body?.cancel();

      // The source, by token, in ranges.
      const source = await fetch(`${url}/media/${id}/source${q}`, {
        headers: { range: "bytes=100-" },
      });
      assert.equal(source.status, 206);
      assert.equal(source.headers.get("content-range"), "bytes 100-399/400");
      await source.body?.cancel();

      // Another recording's token opens nothing of this one.
      const other = await (await fetch(`${url}/create/`, {
        method: "POST",
        headers: { "x-api-key": "the-key" },
      })).json();
      await expectError(
        await fetch(
          `${url}/media/${id}/live.m3u8?token=${
            encodeURIComponent(other.upload_token)
          }`,
        ),
        401,
      );
    },
  );
});

Deno.test("live files: a recording without a live encode serves none, whatever is stored under those names", async () => {
  await withServer({}, async (server) => {
    const { url } = server;
    const { video_id: id } = await (await fetch(`${url}/create/`, {
      method: "POST",
    })).json();
    const chunk = await sendChunk(url, id, mediaBytes(400));
    await chunk.body?.cancel();
    await fakeLiveEncode(server, id, { "live.m3u8": PLAYLIST }, 1);
    const ok = await fetch(`${url}/media/${id}/live.m3u8`);
    assert.equal(ok.status, 200, "served while the record has a live encode");
    await ok.body?.cancel();
    const ctx = server.service.ctx;
    const entry = await ctx.kv.get<Recording>(recordingKey(id));
    const { live: _, ...withoutLive } = entry.value!;
    await ctx.kv.set(recordingKey(id), withoutLive);
    await expectError(await fetch(`${url}/media/${id}/live.m3u8`), 404);
  });
});

Deno.test("live files: the playlist's URIs get the token, tags without URIs stay as they are", () => {
  const text = [
    "#EXTM3U",
    '#EXT-X-MAP:URI="live-init.mp4"',
    "#EXTINF:2.0,",
    "live-00001.m4s",
    "#EXTINF:2.0,",
    "live-00002.m4s?x=1",
    "#EXT-X-ENDLIST",
    "",
  ].join("\n");
  assert.equal(
    withToken(text, "a b/c"),
    [
      "#EXTM3U",
      '#EXT-X-MAP:URI="live-init.mp4?token=a%20b%2Fc"',
      "#EXTINF:2.0,",
      "live-00001.m4s?token=a%20b%2Fc",
      "#EXTINF:2.0,",
      "live-00002.m4s?x=1&token=a%20b%2Fc",
      "#EXT-X-ENDLIST",
      "",
    ].join("\n"),
  );
});
