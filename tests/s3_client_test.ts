/**
 * The S3 client against a real Swift (s3api) on loopback, with the fault
 * proxy in front where a test needs failures. One Swift serves the file.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  md5Base64,
  multipartEtag,
  S3Client,
  type S3ClientOptions,
  S3Error,
} from "../lib/storage/s3_client.ts";
import { startSwift, SWIFT_IGNORE, type SwiftS3 } from "./support/swift.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";

const MiB = 1 << 20;
const figures: Record<string, string> = {};

let swift: Promise<SwiftS3> | undefined;
function getSwift(): Promise<SwiftS3> {
  swift ??= startSwift().then((s) => {
    figures.swift_start_ms = s.startMs.toFixed(0);
    return s;
  });
  return swift;
}

let buckets = 0;
async function client(
  extra: Partial<S3ClientOptions> = {},
): Promise<S3Client> {
  const s = await getSwift();
  const c = new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    bucket: `t${Date.now().toString(36)}-${buckets++}`,
    accessKeyId: s.accessKeyId,
    secretAccessKey: s.secretAccessKey,
    retryBaseMs: 20,
    ...extra,
  });
  await c.ensureBucket();
  return c;
}

function swiftTest(name: string, fn: () => Promise<void>) {
  Deno.test({
    name,
    ignore: SWIFT_IGNORE,
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });
}

// Deterministic content: byte at offset o is BASE[o % P], so any range of
// any object can be made or checked without keeping it.
const P = 65521;
const BASE = new Uint8Array(2 * P);
crypto.getRandomValues(BASE.subarray(0, P));
BASE.copyWithin(P, 0, P);

function bytes(offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length;) {
    const s = (offset + i) % P;
    const n = Math.min(length - i, P);
    out.set(BASE.subarray(s, s + n), i);
    i += n;
  }
  return out;
}

function stream(
  offset: number,
  length: number,
  chunk = 256 * 1024,
): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(c) {
      if (sent >= length) return c.close();
      const n = Math.min(chunk, length - sent);
      c.enqueue(bytes(offset + sent, n));
      sent += n;
    },
  }, { highWaterMark: 0 });
}

/** Checks a body against the pattern; returns its length. */
async function check(
  body: ReadableStream<Uint8Array>,
  offset: number,
): Promise<number> {
  let at = 0;
  for await (const part of body) {
    const want = bytes(offset + at, part.byteLength);
    for (let i = 0; i < part.byteLength; i++) {
      if (part[i] !== want[i]) {
        throw new Error(`byte ${offset + at + i} differs`);
      }
    }
    at += part.byteLength;
  }
  return at;
}

async function rejects(
  p: Promise<unknown>,
  code: string,
): Promise<S3Error> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof S3Error, `not an S3Error: ${err}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  throw new Error(`expected ${code}`);
}

Deno.test("md5Base64 matches node:crypto", () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 1000, 100_003]) {
    const data = bytes(n, n);
    assert.equal(
      md5Base64(data),
      createHash("md5").update(data).digest("base64"),
      `length ${n}`,
    );
  }
});

swiftTest("put, get, range, head, delete", async () => {
  const c = await client();
  const key = "rec/a b+c!'()*ü/chunk 1.webm";
  const data = bytes(0, 100_000);
  const put = await c.putObject(key, data, { contentType: "video/webm" });
  assert.equal(put.etag, createHash("md5").update(data).digest("hex"));

  const head = await c.headObject(key);
  assert.ok(head);
  assert.equal(head.size, 100_000);
  assert.equal(head.etag, put.etag);
  assert.equal(head.contentType, "video/webm");
  assert.ok(Math.abs(head.lastModified.getTime() - Date.now()) < 60_000);

  const whole = await c.getObject(key);
  assert.equal(whole.size, 100_000);
  assert.equal(await check(whole.body, 0), 100_000);

  const part = await c.getObject(key, { start: 1000, end: 1999 });
  assert.equal(part.start, 1000);
  assert.equal(part.length, 1000);
  assert.equal(part.size, 100_000);
  assert.equal(await check(part.body, 1000), 1000);

  const tail = await c.getObject(key, { start: 99_990, end: 200_000 });
  assert.equal(tail.length, 10);
  assert.equal(await check(tail.body, 99_990), 10);

  await rejects(c.getObject(key, { start: 100_000 }), "InvalidRange");
  await rejects(c.getObject("rec/none"), "NoSuchKey");
  assert.equal(await c.headObject("rec/none"), null);

  await c.deleteObject(key);
  assert.equal(await c.headObject(key), null);
  await c.deleteObject(key);
  await c.ensureBucket();
});

swiftTest("list pages with a continuation token", async () => {
  const c = await client();
  const keys = Array.from({ length: 7 }, (_, i) => `list/k${i}`);
  await Promise.all(keys.map((k, i) => c.putObject(k, bytes(i, i + 1))));
  await c.putObject("other/x", bytes(0, 3));

  const seen: string[] = [];
  let token: string | undefined;
  let pages = 0;
  do {
    const page = await c.list("list/", {
      continuationToken: token,
      maxKeys: 3,
    });
    seen.push(...page.objects.map((o) => o.key));
    token = page.continuationToken;
    pages++;
  } while (token);
  assert.deepEqual(seen, keys);
  assert.equal(pages, 3);
  const all = await c.list("list/");
  assert.equal(all.continuationToken, undefined);
  assert.deepEqual(all.objects.map((o) => o.size), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(
    all.objects[2].etag,
    createHash("md5").update(bytes(2, 3)).digest("hex"),
  );
});

swiftTest("deletePrefix: DeleteObjects in batches", async () => {
  const s = await getSwift();
  const proxy = await startFaultProxy(s.endpoint);
  try {
    const c = await client({ endpoint: proxy.url });
    await Promise.all(
      Array.from(
        { length: 7 },
        (_, i) => c.putObject(`del/${i}`, bytes(i, 10)),
      ),
    );
    await c.putObject("keep/1", bytes(0, 10));
    assert.equal(await c.deletePrefix("del/", { batchSize: 3 }), 7);
    assert.deepEqual((await c.list("del/")).objects, []);
    assert.equal((await c.list("keep/")).objects.length, 1);
    const posts = proxy.log.filter((r) => r.method === "POST");
    assert.equal(posts.length, 3);
    assert.ok(posts.every((r) => r.path.endsWith("?delete")));
    assert.equal(await c.deletePrefix("del/"), 0);
  } finally {
    await proxy.stop();
  }
});

swiftTest("deletePrefix falls back to single deletes on 501", async () => {
  const s = await getSwift();
  const proxy = await startFaultProxy(s.endpoint);
  try {
    const c = await client({ endpoint: proxy.url });
    await Promise.all(
      Array.from({ length: 5 }, (_, i) => c.putObject(`d/${i}`, bytes(i, 10))),
    );
    proxy.setRule((r) =>
      r.method === "POST" ? { fail: 501, code: "NotImplemented" } : "pass"
    );
    assert.equal(await c.deletePrefix("d/"), 5);
    assert.deepEqual((await c.list("d/")).objects, []);
    assert.equal(proxy.log.filter((r) => r.method === "POST").length, 1);
    assert.equal(proxy.log.filter((r) => r.method === "DELETE").length, 5);
  } finally {
    await proxy.stop();
  }
});

swiftTest("a 20 MiB stream is put without buffering it", async () => {
  const s = await getSwift();
  const proxy = await startFaultProxy(s.endpoint);
  const c = await client({ endpoint: proxy.url });
  const size = 20 * MiB;
  // The first big put grows the heap whatever the body; measure the second.
  await c.putObject("warm", stream(0, size), { length: size });
  const before = Deno.memoryUsage().rss;
  let peak = before;
  let lead = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, Deno.memoryUsage().rss);
  }, 10);
  // How far the stream runs ahead of the bytes that reached the proxy.
  const body = stream(0, size).pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, out) {
        const entry = proxy.log.at(-1);
        const forwarded = entry?.path.endsWith("/big") ? entry.bytesUp : 0;
        produced += chunk.byteLength;
        lead = Math.max(lead, produced - forwarded);
        out.enqueue(chunk);
      },
    }),
  );
  let produced = 0;
  try {
    const put = await c.putObject("big", body, { length: size });
    assert.match(put.etag, /^[0-9a-f]{32}$/);
    clearInterval(sampler);
    figures.stream_put_lead_mib = (lead / MiB).toFixed(1);
    figures.stream_put_rss_growth_mib = ((peak - before) / MiB).toFixed(1);
    // Buffered whole, it would run the whole size ahead; socket buffers
    // (several MiB on loopback) allow some lead.
    assert.ok(lead < size * 0.75, `the stream ran ${lead} bytes ahead`);
    assert.ok(
      peak - before < 2 * size,
      `rss grew by ${((peak - before) / MiB).toFixed(1)} MiB`,
    );
    const got = await c.getObject("big");
    assert.equal(got.size, size);
    assert.equal(await check(got.body, 0), size);

    await rejects(
      c.putObject("short", stream(0, 10), { length: 20 }),
      "InvalidBody",
    );
    await rejects(
      c.putObject("long", stream(0, 30), { length: 20 }),
      "InvalidBody",
    );
    assert.equal(await c.headObject("short"), null);
    assert.equal(await c.headObject("long"), null);
  } finally {
    clearInterval(sampler);
    await proxy.stop();
  }
});

const PART = 5 * MiB;

/** A multipart object of two 5 MiB parts and a 1000-byte last part. */
async function multipartObject(c: S3Client, key: string): Promise<number> {
  const id = await c.createMultipart(key, { contentType: "video/mp4" });
  const p1 = await c.uploadPart(key, id, 1, stream(0, PART), { length: PART });
  const p2 = await c.uploadPart(key, id, 2, () => stream(PART, PART), {
    length: PART,
  });
  const p3 = await c.uploadPart(key, id, 3, bytes(2 * PART, 1000));
  const done = await c.completeMultipart(key, id, [
    { partNumber: 1, etag: p1.etag },
    { partNumber: 2, etag: p2.etag },
    { partNumber: 3, etag: p3.etag },
  ]);
  assert.equal(done.etag, multipartEtag([p1.etag, p2.etag, p3.etag]));
  return 2 * PART + 1000;
}

swiftTest(
  "multipart: 5 MiB parts, a small last part, ranges across parts",
  async () => {
    const c = await client();
    const size = await multipartObject(c, "mp/video.mp4");
    const head = await c.headObject("mp/video.mp4");
    assert.ok(head);
    assert.equal(head.size, size);
    assert.match(head.etag, /-3$/);
    assert.equal(head.contentType, "video/mp4");
    assert.equal(
      await check((await c.getObject("mp/video.mp4")).body, 0),
      size,
    );

    for (
      const [start, end] of [[PART - 10, PART + 9], [PART - 1, 2 * PART + 5], [
        2 * PART,
        size + 50,
      ]]
    ) {
      const got = await c.getObject("mp/video.mp4", { start, end });
      const want = Math.min(end, size - 1) - start + 1;
      assert.equal(got.length, want);
      assert.equal(await check(got.body, start), want, `${start}-${end}`);
    }
    assert.deepEqual(await c.listMultipartUploads("mp/"), []);
  },
);

swiftTest(
  "multipart: a small part that is not the last is EntityTooSmall",
  async () => {
    const c = await client();
    const id = await c.createMultipart("small");
    const p1 = await c.uploadPart("small", id, 1, bytes(0, 1000));
    const p2 = await c.uploadPart("small", id, 2, bytes(1000, 1000));
    const err = await rejects(
      c.completeMultipart("small", id, [
        { partNumber: 1, etag: p1.etag },
        { partNumber: 2, etag: p2.etag },
      ]),
      "EntityTooSmall",
    );
    assert.equal(err.status, 400);
    assert.equal(err.operation, "CompleteMultipartUpload");
    assert.equal(err.retryable, false);
    await c.abortMultipart("small", id);
    await rejects(c.listParts("small", id), "NoSuchUpload");
    await c.abortMultipart("small", id);

    const one = await c.createMultipart("one");
    const only = await c.uploadPart("one", one, 1, bytes(0, 10));
    await c.completeMultipart("one", one, [{ partNumber: 1, etag: only.etag }]);
    assert.equal((await c.headObject("one"))?.size, 10);
  },
);

swiftTest("multipart: listParts resumes an upload", async () => {
  const c = await client();
  const key = "resume/rec.webm";
  const id = await c.createMultipart(key);
  await c.uploadPart(key, id, 1, stream(0, PART), { length: PART });
  await c.uploadPart(key, id, 2, stream(PART, PART), { length: PART });

  // Another process picks the upload up from the bucket alone.
  const uploads = await c.listMultipartUploads("resume/");
  assert.deepEqual(uploads.map((u) => [u.key, u.uploadId]), [[key, id]]);
  const parts = await c.listParts(key, id);
  assert.deepEqual(parts.map((p) => [p.partNumber, p.size]), [[1, PART], [
    2,
    PART,
  ]]);
  const p3 = await c.uploadPart(key, id, 3, bytes(2 * PART, 77));
  await c.completeMultipart(key, id, [...parts, {
    partNumber: 3,
    etag: p3.etag,
  }]);
  const got = await c.getObject(key);
  assert.equal(await check(got.body, 0), 2 * PART + 77);
});

swiftTest(
  "multipart: uploadPartCopy of ranges across part boundaries",
  async () => {
    const c = await client();
    await multipartObject(c, "src");
    const id = await c.createMultipart("copy");
    // part 1: 5 MiB + 100 bytes over the first boundary of the source;
    // part 2: 31 bytes over the second one.
    const a = { start: PART - 3 * MiB, end: 2 * PART - 3 * MiB + 99 };
    const b = { start: 2 * PART - 10, end: 2 * PART + 20 };
    const p1 = await c.uploadPartCopy("copy", id, 1, { key: "src", ...a });
    const p2 = await c.uploadPartCopy("copy", id, 2, { key: "src", ...b });
    assert.match(p1.etag, /^[0-9a-f]{32}$/);
    const parts = await c.listParts("copy", id);
    assert.deepEqual(parts.map((p) => p.size), [PART + 100, 31]);
    await c.completeMultipart("copy", id, [
      { partNumber: 1, etag: p1.etag },
      { partNumber: 2, etag: p2.etag },
    ]);
    const first = await c.getObject("copy", { end: PART + 99 });
    assert.equal(await check(first.body, a.start), PART + 100);
    const second = await c.getObject("copy", { start: PART + 100 });
    assert.equal(await check(second.body, b.start), 31);
    await rejects(
      c.uploadPartCopy("copy", id, 3, { key: "nothing", start: 0, end: 1 }),
      "NoSuchKey",
    );
  },
);

swiftTest("faults: a 503 is retried; a stall times out cleanly", async () => {
  const s = await getSwift();
  const proxy = await startFaultProxy(s.endpoint);
  try {
    const c = await client({ endpoint: proxy.url, timeoutMs: 500, retries: 2 });
    const tries = new Map<string, number>();
    const firstFails =
      (action: "fail503" | "fail500") =>
      (r: { method: string; path: string }) => {
        const k = `${r.method} ${r.path}`;
        tries.set(k, (tries.get(k) ?? 0) + 1);
        return tries.get(k) === 1 ? action : "pass";
      };
    proxy.setRule(firstFails("fail503"));
    await c.putObject("f/a", bytes(0, 5000));
    const got = await c.getObject("f/a");
    assert.equal(await check(got.body, 0), 5000);
    assert.equal((await c.headObject("f/a"))?.size, 5000);
    const puts = proxy.log.filter((r) => r.path.endsWith("/f/a"));
    assert.deepEqual(puts.map((r) => [r.method, r.action]), [
      ["PUT", "fail503"],
      ["PUT", "pass"],
      ["GET", "fail503"],
      ["GET", "pass"],
      ["HEAD", "fail503"],
      ["HEAD", "pass"],
    ]);

    proxy.setRule(() => "fail500");
    const down = await rejects(c.headObject("f/a"), "InternalError");
    assert.equal(down.status, 500);
    assert.equal(down.retryable, true);

    // A stream body cannot be sent twice; a function giving one can.
    proxy.setRule(() => "fail503");
    await rejects(
      c.putObject("f/s", stream(0, 100), { length: 100 }),
      "ServiceUnavailable",
    );
    tries.clear();
    proxy.setRule(firstFails("fail503"));
    await c.putObject("f/s", () => stream(0, 100), { length: 100 });

    proxy.setRule(() => "stall");
    const t0 = performance.now();
    const stalled = await rejects(c.headObject("f/a"), "Timeout");
    const took = performance.now() - t0;
    assert.equal(stalled.status, 0);
    assert.equal(stalled.operation, "HeadObject");
    assert.ok(took >= 3 * 500 && took < 3 * 500 + 6000, `took ${took} ms`);

    const ctrl = new AbortController();
    setTimeout(() => ctrl.abort(), 100);
    const t1 = performance.now();
    await rejects(c.getObject("f/a", { signal: ctrl.signal }), "Aborted");
    assert.ok(performance.now() - t1 < 450, "aborted before the timeout");
  } finally {
    await proxy.stop();
  }
});

swiftTest(
  "faults: a cut download resumes; a cut upload is retried",
  async () => {
    const s = await getSwift();
    const proxy = await startFaultProxy(s.endpoint);
    try {
      const c = await client({ endpoint: proxy.url, timeoutMs: 2000 });
      const size = 3 * MiB;
      await c.putObject("cut/a", stream(0, size), { length: size });

      let gets = 0;
      proxy.setRule((r) =>
        r.method === "GET" && gets++ === 0 ? { cutResponseAfter: MiB } : "pass"
      );
      const got = await c.getObject("cut/a");
      assert.equal(await check(got.body, 0), size);
      const ranges = proxy.log.filter((r) => r.method === "GET").map((r) =>
        r.headers.get("range")
      );
      assert.deepEqual(ranges, [null, `bytes=${MiB}-`]);

      let puts = 0;
      proxy.setRule((r) => r.method === "PUT" && puts++ === 0 ? "cut" : "pass");
      await c.putObject("cut/b", () => stream(0, size), { length: size });
      assert.equal(await check((await c.getObject("cut/b")).body, 0), size);
      proxy.setRule(() => "cut");
      await rejects(
        c.putObject("cut/c", stream(0, size), { length: size }),
        "NetworkError",
      );
    } finally {
      await proxy.stop();
    }
  },
);

swiftTest("faults: early answers, stalled uploads, lost answers", async () => {
  const s = await getSwift();
  const proxy = await startFaultProxy(s.endpoint);
  try {
    const c = await client({ endpoint: proxy.url, timeoutMs: 500, retries: 1 });
    // Swift answers before reading the body: the stream is dropped. The
    // answer itself (or its body) may be lost to the reset that closing a
    // socket with unread bytes sends: a clean error all the same.
    const missing = new S3Client({
      endpoint: proxy.url,
      region: s.region,
      bucket: "no-such-bucket",
      accessKeyId: s.accessKeyId,
      secretAccessKey: s.secretAccessKey,
    });
    for (
      const put of [
        () => missing.putObject("x", stream(0, 8 * MiB), { length: 8 * MiB }),
        () => missing.putObject("x", bytes(0, 10)),
      ]
    ) {
      const err = await put().then(() => null, (e: unknown) => e);
      assert.ok(err instanceof S3Error, String(err));
      assert.ok(
        ["NoSuchBucket", "NotFound", "NetworkError"].includes(err.code),
        err.message,
      );
    }

    // A stalled upload: the body goes out, the answer never comes.
    proxy.setRule(() => "stall");
    await rejects(
      c.putObject("st", stream(0, MiB), { length: MiB }),
      "Timeout",
    );
    await rejects(
      c.putObject("st", () => stream(0, MiB), { length: MiB }),
      "Timeout",
    );
    proxy.setRule(() => "pass");

    // The answer to a completion is lost after Swift completed it. Swift
    // answers a second completion with success again; AWS answers
    // NoSuchUpload, after which the object is checked.
    for (
      const second of ["pass", { fail: 404, code: "NoSuchUpload" }] as const
    ) {
      const key = `lost-${proxy.log.length}`;
      const id = await c.createMultipart(key);
      const p1 = await c.uploadPart(key, id, 1, bytes(0, PART));
      const p2 = await c.uploadPart(key, id, 2, bytes(PART, 10));
      let tries = 0;
      proxy.setRule((r) =>
        r.method === "POST" && r.path.includes("uploadId=")
          ? (tries++ === 0 ? "drop" : second)
          : "pass"
      );
      const from = proxy.log.length;
      const done = await c.completeMultipart(key, id, [
        { partNumber: 1, etag: p1.etag },
        { partNumber: 2, etag: p2.etag },
      ]);
      assert.match(done.etag, /-2$/);
      assert.equal(tries, 2);
      assert.deepEqual(
        proxy.log.slice(from).map((r) => r.method),
        second === "pass" ? ["POST", "POST"] : ["POST", "POST", "HEAD"],
      );
      assert.equal((await c.headObject(key))?.size, PART + 10);
    }
  } finally {
    await proxy.stop();
  }
});

swiftTest("virtual-host style (through a forward proxy)", async () => {
  const s = await getSwift();
  const proxy = await startFaultProxy(s.endpoint);
  const port = new URL(s.endpoint).port;
  const c = await client({
    endpoint: `http://${s.storageDomain}:${port}`,
    style: "virtual-host",
    proxy: proxy.url,
  });
  try {
    await c.putObject("v/1", bytes(0, 10));
    await c.putObject("v/2", stream(0, 20), { length: 20 });
    assert.deepEqual((await c.list("v/")).objects.map((o) => o.size), [10, 20]);
    assert.equal(await check((await c.getObject("v/2")).body, 0), 20);
    assert.ok(
      proxy.log.every((r) =>
        r.headers.get("host") === `${c.bucket}.${s.storageDomain}:${port}`
      ),
    );
    assert.equal(await c.deletePrefix("v/"), 2);
  } finally {
    c.close();
    await proxy.stop();
  }
});

swiftTest("figures: 64 MiB through the client, import time", async () => {
  const c = await client();
  const size = 64 * MiB;
  let t = performance.now();
  await c.putObject("perf", stream(0, size, MiB), { length: size });
  figures.put_64mib_mb_s = (size / 1e6 / ((performance.now() - t) / 1000))
    .toFixed(0);
  t = performance.now();
  let n = 0;
  for await (const part of (await c.getObject("perf")).body) {
    n += part.byteLength;
  }
  figures.get_64mib_mb_s = (size / 1e6 / ((performance.now() - t) / 1000))
    .toFixed(0);
  assert.equal(n, size);
  await c.deleteObject("perf");

  const url = new URL("../lib/storage/s3_client.ts", import.meta.url).href;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const t = performance.now(); await import(${
        JSON.stringify(url)
      }); console.log((performance.now() - t).toFixed(1));`,
    ],
    stderr: "inherit",
  }).output();
  figures.client_import_ms = new TextDecoder().decode(out.stdout).trim();
  console.log(
    "figures:",
    Object.entries(figures).map(([k, v]) => `${k}=${v}`).join(" "),
  );
});

Deno.test({
  name: "stop Swift",
  ignore: SWIFT_IGNORE,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    if (swift) await (await swift).stop();
  },
});
