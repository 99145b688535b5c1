/**
 * Issue 14 item 1: the app end to end with STORAGE_URL on an S3 bucket of a
 * real Swift (s3api). Chunks in every body form become objects before
 * they are acknowledged, processing (real ffmpeg) reads them through stdin
 * and uploads the outputs, `/media` serves them with Range, HEAD and ETag
 * (proxied, or a presigned redirect), tus with concatenation copies inside
 * the bucket, and deletion, expiry, retention and the orphan sweep remove
 * every object. DATA_DIR holds only scratch space. Faults through
 * tests/support/fault_proxy.ts (503s, stalls) and a relay that takes Swift
 * away entirely give the client JSON 503s with Retry-After, its retry
 * succeeds, and no acknowledged chunk is lost.
 *
 * Over 400 lines: one Swift, started once, serves every case, and the fault
 * cases share the body forms and helpers of the others.
 */

import assert from "node:assert/strict";
import { toBase64 as encodeBase64 } from "../lib/core/base64.ts";
import { unflushedOutputsKey } from "../lib/kv/keys.ts";
import {
  applyRetention,
  expireIdleRecordings,
  sweepOrphans,
} from "../lib/recordings/maintenance.ts";
import { S3Client } from "../lib/storage/s3_client.ts";
import {
  createSession,
  expectError,
  makeRecording,
  missingTool,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import { assertSameBytes, fetchSource } from "./stop_helpers.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { startSwift, SWIFT_IGNORE, type SwiftS3 } from "./support/swift.ts";

const ffmpegMissing = await missingTool("ffmpeg");
const TUS = { "tus-resumable": "1.0.0" };
const OCTETS = { ...TUS, "content-type": "application/offset+octet-stream" };

let swift: Promise<SwiftS3> | undefined;
function getSwift(): Promise<SwiftS3> {
  swift ??= startSwift();
  return swift;
}

/** A 4 s VP9/Opus live WebM, made once. */
let recording: Promise<Uint8Array<ArrayBuffer>> | undefined;
function sourceRecording(): Promise<Uint8Array<ArrayBuffer>> {
  recording ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "s3-app-" });
    try {
      return await makeRecording(`${dir}/src.webm`, { seconds: 4 });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  })();
  return recording;
}

/** A server on its own bucket, reached at `endpoint` (Swift, or a proxy). */
interface S3Server extends TestServer {
  bucket: S3Client;
  prefix: string;
  /** Keys under the recording's prefix. */
  objects(id: string): Promise<string[]>;
}

let buckets = 0;
async function startS3Server(
  env: Record<string, string> = {},
  endpoint?: string,
): Promise<S3Server> {
  const s = await getSwift();
  const name = `app-${Date.now().toString(36)}-${buckets++}`;
  const bucket = new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    bucket: name,
    accessKeyId: s.accessKeyId,
    secretAccessKey: s.secretAccessKey,
  });
  await bucket.ensureBucket();
  const prefix = "td/";
  const server = await startTestServer({
    STORAGE_URL: `s3://${name}/td`,
    S3_ENDPOINT: endpoint ?? s.endpoint,
    AWS_REGION: s.region,
    AWS_ACCESS_KEY_ID: s.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s.secretAccessKey,
    COMPLETE_GRACE_MS: "0",
    ...env,
  });
  return {
    ...server,
    bucket,
    prefix,
    async objects(id: string) {
      const page = await bucket.list(`${prefix}recordings/${id}/`);
      return page.objects.map((o) => o.key.slice(prefix.length));
    },
    async close() {
      await server.close();
      await bucket.deletePrefix("").catch(() => {});
      bucket.close();
    },
  };
}

function s3Test(
  name: string,
  fn: () => Promise<void>,
  options: { ffmpeg?: boolean } = {},
) {
  Deno.test({
    name,
    ignore: SWIFT_IGNORE || (options.ffmpeg === true && ffmpegMissing),
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });
}

/** Files under a folder, recursively (relative paths). */
async function filesUnder(dir: string, at = ""): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(`${dir}/${at}`)) {
      const rel = at ? `${at}/${e.name}` : e.name;
      if (e.isDirectory) out.push(...await filesUnder(dir, rel));
      else out.push(rel);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out;
}

async function postRaw(
  url: string,
  id: string,
  body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>,
  index: number,
): Promise<Response> {
  return await fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    headers: { "content-type": "video/webm", "x-chunk-index": String(index) },
    body,
    ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
  } as RequestInit);
}

async function postJson(
  url: string,
  id: string,
  bytes: Uint8Array,
  order: number,
): Promise<Response> {
  return await fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ blob_data: encodeBase64(bytes), order }),
  });
}

async function postForm(
  url: string,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  order: number,
): Promise<Response> {
  const form = new FormData();
  form.set("blob_data", new Blob([bytes], { type: "video/webm" }), "c.webm");
  form.set("order", String(order));
  return await fetch(`${url}/add_data/${id}/`, { method: "POST", body: form });
}

async function ok(
  res: Response,
  what: string,
): Promise<Record<string, unknown>> {
  const text = await res.text();
  assert.equal(res.status, 200, `${what}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** A stream of `bytes` in pieces (sent chunked: no Content-Length). */
function chunked(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, at + 8192));
      at += 8192;
    },
  });
}

/** Splits bytes into `n` nearly equal consecutive parts. */
function split(
  bytes: Uint8Array<ArrayBuffer>,
  n: number,
): Uint8Array<ArrayBuffer>[] {
  const size = Math.ceil(bytes.length / n);
  return Array.from(
    { length: n },
    (_, i) => bytes.slice(i * size, Math.min(bytes.length, (i + 1) * size)),
  );
}

s3Test("s3 app: chunks in every form, processing, /media, delete", async () => {
  const source = await sourceRecording();
  const server = await startS3Server();
  const { url } = server;
  try {
    const id = await createWithToken(url);
    const parts = split(source, 4);
    await ok(await postRaw(url, id, parts[0], 0), "raw chunk");
    await ok(await postJson(url, id, parts[1], 1), "JSON chunk");
    await ok(await postForm(url, id, parts[2], 2), "multipart chunk");
    await ok(await postRaw(url, id, chunked(parts[3]), 3), "chunked raw chunk");
    // A retry is a duplicate; another body for a taken index a 409.
    const again = await ok(await postRaw(url, id, parts[0], 0), "retry");
    assert.equal(again.duplicate, true);
    await expectError(
      await postRaw(url, id, parts[1].slice(0, parts[0].length), 0),
      409,
    );

    const chunkKeys = (await server.objects(id)).filter((k) =>
      k.includes("/chunks/")
    );
    assert.equal(chunkKeys.length, 4, chunkKeys.join(", "));
    assertSameBytes(await fetchSource(url, id), source, "source");
    // DATA_DIR holds no recording: only scratch space (and the KV file).
    const local = (await filesUnder(server.dataDir)).filter((f) =>
      !f.startsWith("tapedeck.kv")
    );
    assert.deepEqual(local, [], `DATA_DIR: ${local.join(", ")}`);

    await ok(
      await fetch(`${url}/complete_job/${id}/`, { method: "POST" }),
      "complete",
    );
    const st = await waitForStatus(url, id);
    assert.equal(st.status, "complete", JSON.stringify(st));
    const video = await ok(await fetch(`${url}/video/${id}/`), "video");
    assert.deepEqual(video.completed_videos, [`${id}.mp4`, `${id}.webm`]);
    assert.ok(
      String(video.poster).endsWith(`/${id}.jpg`),
      String(video.poster),
    );
    const files = (await server.objects(id)).filter((k) =>
      k.includes("/files/")
    ).sort();
    assert.deepEqual(files, [
      `recordings/${id}/files/${id}.jpg`,
      `recordings/${id}/files/${id}.mp4`,
      `recordings/${id}/files/${id}.webm`,
    ]);
    // Published to the bucket: durable at once, nothing left to flush.
    const ctx = server.service.ctx;
    assert.equal((await ctx.kv.get(unflushedOutputsKey(id))).value, null);
    assert.deepEqual(await filesUnder(`${server.dataDir}/work`), []);

    const mp4Url = `${url}/media/${id}/${id}.mp4`;
    const full = await fetch(mp4Url);
    assert.equal(full.status, 200);
    const mp4 = new Uint8Array(await full.arrayBuffer());
    const etag = full.headers.get("etag")!;
    assert.match(etag, /^"[0-9a-f]{32}"$/);
    assert.equal(full.headers.get("content-type"), "video/mp4");
    assert.ok(full.headers.get("last-modified"));
    assert.equal(Number(full.headers.get("content-length")), mp4.length);
    const stored = await server.bucket.getObject(
      `${server.prefix}recordings/${id}/files/${id}.mp4`,
    );
    assertSameBytes(
      new Uint8Array(await new Response(stored.body).arrayBuffer()),
      mp4,
      "mp4 as stored",
    );

    const ranged = await fetch(mp4Url, {
      headers: { range: "bytes=100-4195" },
    });
    assert.equal(ranged.status, 206);
    assert.equal(
      ranged.headers.get("content-range"),
      `bytes 100-4195/${mp4.length}`,
    );
    assertSameBytes(
      new Uint8Array(await ranged.arrayBuffer()),
      mp4.slice(100, 4196),
      "range",
    );
    const tail = await fetch(mp4Url, { headers: { range: "bytes=-500" } });
    assert.equal(tail.status, 206);
    assertSameBytes(
      new Uint8Array(await tail.arrayBuffer()),
      mp4.slice(-500),
      "suffix range",
    );
    const head = await fetch(mp4Url, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("etag"), etag);
    assert.equal(Number(head.headers.get("content-length")), mp4.length);
    assert.equal((await head.arrayBuffer()).byteLength, 0);
    const cached = await fetch(mp4Url, { headers: { "if-none-match": etag } });
    await cached.body?.cancel();
    assert.equal(cached.status, 304);
    const poster = await fetch(`${url}/media/${id}/${id}.jpg`);
    assert.equal(poster.headers.get("content-type"), "image/jpeg");
    assert.ok((await poster.arrayBuffer()).byteLength > 1000);
    await expectError(await fetch(`${url}/media/${id}/other.mp4`), 404);

    // Deleting removes every object of the recording.
    const del = await fetch(`${url}/files/${id}`, {
      method: "DELETE",
      headers: { ...TUS, "x-upload-token": tokens.get(id)! },
    });
    await del.body?.cancel();
    assert.equal(del.status, 204);
    assert.deepEqual(await server.objects(id), []);
    await expectError(await fetch(mp4Url), 404);
  } finally {
    await server.close();
  }
}, { ffmpeg: true });

/** Upload tokens of the recordings made by {@link createWithToken}. */
const tokens = new Map<string, string>();

/** POST /create/ keeping the upload token. */
async function createWithToken(url: string): Promise<string> {
  const body = await ok(
    await fetch(`${url}/create/`, { method: "POST" }),
    "create",
  );
  const id = String(body.video_id);
  tokens.set(id, String(body.upload_token));
  return id;
}

s3Test(
  "s3 app: /media redirects to presigned URLs with MEDIA_REDIRECT",
  async () => {
    const server = await startS3Server({
      MEDIA_REDIRECT: "true",
      RUN_WORKER: "false",
    });
    try {
      // A complete recording with a finished file put there by hand.
      const id = await createWithToken(server.url);
      const ctx = server.service.ctx;
      const dir = await Deno.makeTempDir();
      const bytes = crypto.getRandomValues(new Uint8Array(50_000));
      await Deno.writeFile(`${dir}/f.mp4`, bytes);
      await ctx.storage.publishFile(id, `${id}.mp4`, `${dir}/f.mp4`);
      await Deno.remove(dir, { recursive: true });
      const { updateRecording } = await import(
        "../lib/recordings/transitions.ts"
      );
      await updateRecording(ctx, id, (rec) => ({
        next: { ...rec!, status: "complete", files: [`${id}.mp4`] },
      }));
      const mediaUrl = `${server.url}/media/${id}/${id}.mp4`;
      for (const method of ["GET", "HEAD"]) {
        const res = await fetch(mediaUrl, { method, redirect: "manual" });
        await res.body?.cancel();
        assert.equal(res.status, 302, method);
        const location = res.headers.get("location")!;
        assert.match(location, /X-Amz-Signature=/);
        assert.match(location, /X-Amz-Expires=3600/);
        const direct = await fetch(location, {
          method,
          headers: { range: "bytes=10-19" },
        });
        assert.ok(
          [200, 206].includes(direct.status),
          `${method} ${direct.status}`,
        );
        if (method === "GET") {
          assert.deepEqual(
            new Uint8Array(await direct.arrayBuffer()),
            bytes.slice(10, 20),
          );
        } else await direct.body?.cancel();
      }
      // Followed by the client, the redirect gives the bytes.
      const followed = await fetch(mediaUrl);
      assertSameBytes(
        new Uint8Array(await followed.arrayBuffer()),
        bytes,
        "followed",
      );
      // Names are checked before any redirect.
      await expectError(
        await fetch(`${server.url}/media/${id}/x.mp4`, { redirect: "manual" }),
        404,
      );
    } finally {
      await server.close();
    }
  },
);

s3Test(
  "s3 app: tus upload with checksum, and concatenation by copy",
  async () => {
    const source = await sourceRecording();
    const server = await startS3Server();
    const { url } = server;
    try {
      // A plain tus upload in two PATCHes, the second with a checksum.
      const [a, b] = split(source, 2);
      const created = await fetch(`${url}/files/`, {
        method: "POST",
        headers: { ...TUS, "upload-length": String(source.length) },
      });
      await created.body?.cancel();
      assert.equal(created.status, 201);
      const location = new URL(created.headers.get("location")!, url);
      const tusId = location.pathname.split("/").at(-1)!;
      const patch = async (
        offset: number,
        body: Uint8Array<ArrayBuffer>,
        extra = {},
      ) => {
        const res = await fetch(location, {
          method: "PATCH",
          headers: { ...OCTETS, "upload-offset": String(offset), ...extra },
          body,
        });
        await res.body?.cancel();
        return res.status;
      };
      assert.equal(await patch(0, a), 204);
      const digest = new Uint8Array(
        await crypto.subtle.digest("SHA-1", b),
      );
      const wrong = `sha1 ${encodeBase64(new Uint8Array(20))}`;
      assert.equal(await patch(a.length, b, { "upload-checksum": wrong }), 460);
      assert.equal(
        (await server.objects(tusId)).length,
        1,
        "a checksum mismatch stores nothing",
      );
      assert.equal(
        await patch(a.length, b, {
          "upload-checksum": `sha1 ${encodeBase64(digest)}`,
        }),
        204,
      );
      assertSameBytes(await fetchSource(url, tusId), source, "tus source");

      // Concatenation: three partials joined by a final upload.
      const pieces = split(source, 3);
      const partials: { location: string; id: string }[] = [];
      for (const piece of pieces) {
        const res = await fetch(`${url}/files/`, {
          method: "POST",
          headers: {
            ...TUS,
            "upload-concat": "partial",
            "upload-length": String(piece.length),
          },
        });
        await res.body?.cancel();
        const loc = res.headers.get("location")!;
        partials.push({ location: loc, id: loc.split("/").at(-1)! });
        const half = Math.floor(piece.length / 2);
        for (
          const [offset, body] of [[0, piece.slice(0, half)], [
            half,
            piece.slice(half),
          ]] as const
        ) {
          const p = await fetch(new URL(loc, url), {
            method: "PATCH",
            headers: { ...OCTETS, "upload-offset": String(offset) },
            body,
          });
          await p.body?.cancel();
          assert.equal(p.status, 204);
        }
      }
      const final = await fetch(`${url}/files/`, {
        method: "POST",
        headers: {
          ...TUS,
          "upload-concat": `final;${
            partials.map((p) => new URL(p.location, url).pathname).join(" ")
          }`,
        },
      });
      await final.body?.cancel();
      assert.equal(final.status, 201);
      const finalId = final.headers.get("location")!.split("/").at(-1)!;
      const st = await waitForStatus(url, finalId);
      assert.equal(st.status, "complete", JSON.stringify(st));
      assertSameBytes(await fetchSource(url, finalId), source, "final source");
      const keys = await server.objects(finalId);
      assert.equal(keys.filter((k) => k.includes("/chunks/")).length, 6);
      // The partials (and their objects) are gone.
      for (const p of partials) {
        assert.deepEqual(
          await server.objects(p.id),
          [],
        );
      }
    } finally {
      await server.close();
    }
  },
  { ffmpeg: true },
);

s3Test(
  "s3 app: expiry, retention and the orphan sweep remove objects",
  async () => {
    const server = await startS3Server({
      RUN_WORKER: "false",
      RECORDING_IDLE_TIMEOUT_S: "1",
      RETENTION_DAYS: "1",
    });
    const { url } = server;
    const ctx = server.service.ctx;
    try {
      // A tus partial nobody claims expires with its objects.
      const res = await fetch(`${url}/files/`, {
        method: "POST",
        headers: {
          ...TUS,
          "upload-concat": "partial",
          "upload-length": "5000",
        },
      });
      await res.body?.cancel();
      const partial = res.headers.get("location")!.split("/").at(-1)!;
      const p = await fetch(new URL(res.headers.get("location")!, url), {
        method: "PATCH",
        headers: { ...OCTETS, "upload-offset": "0" },
        body: new Uint8Array(2000).fill(1),
      });
      await p.body?.cancel();
      assert.equal(p.status, 204);
      assert.equal((await server.objects(partial)).length, 1);
      const expired = await expireIdleRecordings(ctx, Date.now() + 5000);
      assert.ok(expired.removed.includes(partial), JSON.stringify(expired));
      assert.deepEqual(await server.objects(partial), []);

      // A finished recording past its retention goes with its objects.
      const id = await createWithToken(url);
      const webm = (await sourceBytesOrMedia()).slice(0, 4000);
      await ok(await postRaw(url, id, webm, 0), "chunk");
      const { updateRecording } = await import(
        "../lib/recordings/transitions.ts"
      );
      await updateRecording(ctx, id, (rec) => ({
        next: {
          ...rec!,
          status: "failed",
          error: "test",
          finishedAt: Date.now(),
        },
      }));
      assert.equal((await server.objects(id)).length, 1);
      const retained = await applyRetention(ctx, Date.now() + 2 * 86_400_000);
      assert.deepEqual(retained, [id]);
      assert.deepEqual(await server.objects(id), []);

      // Objects of a recording no record names are swept.
      const orphan = crypto.randomUUID();
      await server.bucket.putObject(
        `${server.prefix}recordings/${orphan}/chunks/x`,
        new Uint8Array(10),
      );
      assert.ok((await ctx.storage.listRecordingIds()).includes(orphan));
      const swept = await sweepOrphans(ctx, { idle: false });
      assert.equal(swept.recordings, 0, "found once: only a suspect");
      const again = await sweepOrphans(ctx, { idle: false });
      assert.equal(again.recordings, 1);
      assert.deepEqual(await server.objects(orphan), []);
    } finally {
      await server.close();
    }
  },
);

/** The test recording, or WebM-looking bytes when ffmpeg is missing. */
async function sourceBytesOrMedia(): Promise<Uint8Array<ArrayBuffer>> {
  if (ffmpegMissing) {
    const b = new Uint8Array(8000).fill(7);
    b.set([0x1a, 0x45, 0xdf, 0xa3]);
    return b;
  }
  return await sourceRecording();
}

s3Test(
  "s3 app faults: a 503 or a stall on a chunk PUT is a 503 the client retries",
  async () => {
    const s = await getSwift();
    const proxy = await startFaultProxy(s.endpoint);
    const server = await startS3Server({ S3_TIMEOUT_MS: "1500" }, proxy.url);
    const { url } = server;
    try {
      const source = await sourceBytesOrMedia();
      const parts = split(source, 6);
      const id = await createSession(url);
      /** Fails the next `n` chunk PUTs with `action`, then passes. */
      const failChunkPuts = (n: number, action: "fail503" | "stall") => {
        let left = n;
        proxy.setRule((req) =>
          req.method === "PUT" && req.path.includes("/chunks/") && left-- > 0
            ? action
            : "pass"
        );
      };
      const acked: number[] = [];
      const send = async (
        i: number,
        form: "raw" | "json",
        expect: number,
      ) => {
        const res = form === "raw"
          ? await postRaw(url, id, parts[i], i)
          : await postJson(url, id, parts[i], i);
        if (expect === 200) {
          await ok(res, `chunk ${i}`);
          acked.push(i);
        } else {
          await expectError(res, expect, /object storage is unavailable/);
          assert.ok(Number(res.headers.get("retry-after")) > 0, "Retry-After");
        }
      };
      await send(0, "raw", 200);
      // A streamed PUT (the length is known) is not replayed: the client is.
      failChunkPuts(1, "fail503");
      await send(1, "raw", 503);
      await send(1, "raw", 200);
      // A spooled PUT (JSON: length unknown) is retried from its file first.
      failChunkPuts(2, "fail503");
      await send(2, "json", 200);
      failChunkPuts(4, "fail503");
      await send(3, "json", 503);
      await send(3, "json", 200);
      // A PUT that gets no answer times out (S3_TIMEOUT_MS).
      failChunkPuts(1, "stall");
      const t0 = performance.now();
      await send(4, "raw", 503);
      assert.ok(performance.now() - t0 < 10_000);
      await send(4, "raw", 200);
      proxy.setRule(() => "pass");
      await send(5, "raw", 200);
      assert.deepEqual(acked, [0, 1, 2, 3, 4, 5]);
      assertSameBytes(await fetchSource(url, id), source, "source");
      // The failed tries left no object behind.
      assert.equal(
        (await server.objects(id)).filter((k) => k.includes("/chunks/")).length,
        6,
      );
    } finally {
      await server.close();
      await proxy.stop();
    }
  },
);

/** A TCP relay to `target` that can be taken down (refusing) and back up. */
function startRelay(target: string) {
  const to = new URL(target);
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  let listener: Deno.Listener | undefined;
  const conns = new Set<Deno.Conn>();
  const pipe = async (from: Deno.Conn, into: Deno.Conn) => {
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        for (let at = 0; at < n;) at += await into.write(buf.subarray(at, n));
      }
    } catch {
      // either side went away
    }
    for (const c of [from, into]) {
      conns.delete(c);
      try {
        c.close();
      } catch { /* closed */ }
    }
  };
  const up = () => {
    const l = Deno.listen({ hostname: "127.0.0.1", port });
    listener = l;
    (async () => {
      for await (const client of l) {
        try {
          const server = await Deno.connect({
            hostname: to.hostname,
            port: Number(to.port),
          });
          conns.add(client).add(server);
          pipe(client, server);
          pipe(server, client);
        } catch {
          client.close();
        }
      }
    })().catch(() => {});
  };
  up();
  return {
    url: `http://127.0.0.1:${port}`,
    up,
    down() {
      listener?.close();
      listener = undefined;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      conns.clear();
    },
  };
}

s3Test(
  "s3 app faults: Swift down entirely gives clean 503s, then recovers",
  async () => {
    const s = await getSwift();
    const relay = startRelay(s.endpoint);
    const server = await startS3Server({ S3_TIMEOUT_MS: "2000" }, relay.url);
    const { url } = server;
    try {
      const source = await sourceBytesOrMedia();
      const parts = split(source, 3);
      const id = await createSession(url);
      await ok(await postRaw(url, id, parts[0], 0), "chunk 0");
      relay.down();
      for (
        const res of [
          await postRaw(url, id, parts[1], 1),
          await postJson(url, id, parts[1], 1),
          await postForm(url, id, parts[1], 1),
          await fetch(`${url}/media/${id}/source`),
        ]
      ) {
        await expectError(res, 503, /object storage is unavailable/);
        assert.ok(Number(res.headers.get("retry-after")) > 0);
      }
      // What lives in KV still answers.
      const st = await ok(await fetch(`${url}/check_status/${id}/`), "status");
      assert.equal(st.chunks_received, 1);
      relay.up();
      await ok(await postRaw(url, id, parts[1], 1), "chunk 1 again");
      await ok(await postJson(url, id, parts[2], 2), "chunk 2");
      assertSameBytes(await fetchSource(url, id), source, "source");
    } finally {
      await server.close();
      relay.down();
    }
  },
);

Deno.test({
  name: "stop Swift",
  ignore: SWIFT_IGNORE,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    if (swift) await (await swift).stop();
  },
});
