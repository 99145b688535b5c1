/**
 * The storage contract (lib/storage/storage.ts): one set of cases run
 * against local disk (LocalStorage) and against an S3 bucket (S3Storage) on
 * a real Swift with its S3 API. Chunks from bytes and from streams of known
 * and unknown length, their head, digest and size, limits and stalls that
 * keep nothing, settle(false), sameBytes, reading chunks back in order,
 * publishing (one PUT and multipart) with ranged reads across part
 * boundaries, removal, listing and typed errors. Then what only the object
 * store does: copies inside the bucket, presigned URLs, and a store that is
 * down, and STORAGE_URL parsing.
 *
 * Over 400 lines: one suite for both backends is the point, and one Swift
 * started once serves every case.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  AppError,
  BodyAbortedError,
  NotFoundError,
  RequestTimeoutError,
  TooLargeError,
  UnavailableError,
} from "../lib/core/errors.ts";
import { LocalStorage } from "../lib/storage/local.ts";
import { S3Storage } from "../lib/storage/s3.ts";
import { S3Client } from "../lib/storage/s3_client.ts";
import { ScratchSpace } from "../lib/storage/scratch.ts";
import {
  canCopyChunks,
  canLinkFiles,
  canOpenChunks,
  type ChunkRef,
  type Storage,
} from "../lib/storage/storage.ts";
import { startSwift, SWIFT_IGNORE, type SwiftS3 } from "./support/swift.ts";

const MiB = 1 << 20;

/** One backend under test. */
interface Backend {
  storage: Storage;
  /** Bytes held for the recording's chunks (committed or not). */
  chunkBytes(id: string): Promise<number>;
  /** The scratch folder (must be empty after every write). */
  scratchDir: string;
  close(): Promise<void>;
}

type Case = (b: Backend) => Promise<void>;

async function localBackend(): Promise<Backend> {
  const dir = await Deno.makeTempDir({ prefix: "storage-contract-" });
  await Deno.mkdir(join(dir, "recordings"));
  const storage = new LocalStorage(dir);
  return {
    storage,
    scratchDir: dir,
    async chunkBytes(id) {
      let total = 0;
      try {
        for await (
          const e of Deno.readDir(join(dir, "recordings", id, "chunks"))
        ) {
          total +=
            (await Deno.stat(join(dir, "recordings", id, "chunks", e.name)))
              .size;
        }
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      return total;
    },
    async close() {
      storage.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

let swift: Promise<SwiftS3> | undefined;
function getSwift(): Promise<SwiftS3> {
  swift ??= startSwift();
  return swift;
}

let buckets = 0;
/** A client on a fresh bucket of the test Swift. */
async function swiftClient(): Promise<S3Client> {
  const s = await getSwift();
  const client = new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    bucket: `contract-${Date.now().toString(36)}-${buckets++}`,
    accessKeyId: s.accessKeyId,
    secretAccessKey: s.secretAccessKey,
    retryBaseMs: 20,
  });
  await client.ensureBucket();
  return client;
}

async function s3Backend(): Promise<Backend> {
  const client = await swiftClient();
  const dir = await Deno.makeTempDir({ prefix: "storage-contract-s3-" });
  const storage = new S3Storage({
    client,
    prefix: "tenant/a/",
    scratch: new ScratchSpace(dir),
    // Small enough that a 13 MiB file goes up in three parts.
    multipartAbove: 6 * MiB,
    partSize: 5 * MiB,
  });
  return {
    storage,
    scratchDir: dir,
    async chunkBytes(id) {
      const page = await client.list(`tenant/a/recordings/${id}/chunks/`);
      return page.objects.reduce((n, o) => n + o.size, 0);
    },
    async close() {
      await client.deletePrefix("");
      storage.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

// Deterministic bytes: byte at offset o is BASE[o % P].
const P = 65521;
const BASE = new Uint8Array(2 * P);
crypto.getRandomValues(BASE.subarray(0, P));
BASE.copyWithin(P, 0, P);

function bytes(offset: number, length: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  for (let i = 0; i < length;) {
    const s = (offset + i) % P;
    const n = Math.min(length - i, P);
    out.set(BASE.subarray(s, s + n), i);
    i += n;
  }
  return out;
}

/** A stream of `data` in pieces of `piece` bytes. */
function streamOf(
  data: Uint8Array,
  piece = 16 * 1024,
): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= data.length) return c.close();
      c.enqueue(data.slice(at, at + piece));
      at += piece;
    },
  }, { highWaterMark: 0 });
}

/** A stream that sends `data`, then nothing more (never closes). */
function stallingStream(data: Uint8Array): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream({
    pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(data);
      }
      return new Promise(() => {});
    },
  }, { highWaterMark: 0 });
}

async function readAll(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function sha1(data: Uint8Array): string {
  return createHash("sha1").update(data).digest("base64");
}

async function rejectsWith(
  p: Promise<unknown>,
  type: new (...args: never[]) => AppError,
): Promise<void> {
  try {
    await p;
  } catch (err) {
    assert.ok(
      err instanceof type,
      `expected ${type.name}, got ${(err as Error)?.stack ?? err}`,
    );
    return;
  }
  assert.fail(`expected ${type.name}`);
}

async function emptyScratch(b: Backend): Promise<void> {
  const spool = join(b.scratchDir, "spool");
  const left: string[] = [];
  try {
    for await (const e of Deno.readDir(spool)) left.push(e.name);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  assert.deepEqual(left, [], "no spool file is left behind");
}

const cases: Record<string, Case> = {
  async "chunks from bytes and streams of known and unknown length"(b) {
    const id = crypto.randomUUID();
    await b.storage.createRecording(id);
    const data = [bytes(0, 100_000), bytes(7, 3), bytes(99, 300_001)];
    const stored = [
      await b.storage.writeChunk(id, data[0], MiB, { digest: "sha1" }),
      await b.storage.writeChunk(id, streamOf(data[1]), MiB, {
        digest: "sha1",
        length: data[1].length,
      }),
      await b.storage.writeChunk(id, streamOf(data[2], 7000), MiB, {
        digest: "sha1",
      }),
    ];
    for (const [i, s] of stored.entries()) {
      assert.equal(s.size, data[i].length);
      assert.deepEqual(s.head, data[i].slice(0, 16));
      assert.equal(s.digest, sha1(data[i]));
      await s.settle(true);
    }
    for (const [i, s] of stored.entries()) {
      assert.deepEqual(
        await readAll(await b.storage.openChunk(id, s)),
        data[i],
      );
    }
    assert.equal(await b.chunkBytes(id), 400_004);
    await emptyScratch(b);
  },

  async "a body over the limit, stalled or cut short keeps nothing"(b) {
    const id = crypto.randomUUID();
    await b.storage.createRecording(id);
    const big = bytes(0, 200_000);
    await rejectsWith(b.storage.writeChunk(id, big, 100_000), TooLargeError);
    await rejectsWith(
      b.storage.writeChunk(id, streamOf(big), 100_000),
      TooLargeError,
    );
    await rejectsWith(
      b.storage.writeChunk(id, streamOf(big), 100_000, { length: 200_000 }),
      TooLargeError,
    );
    for (const length of [undefined, 50_000]) {
      await rejectsWith(
        b.storage.writeChunk(id, stallingStream(bytes(0, 1000)), MiB, {
          idleMs: 300,
          length,
        }),
        RequestTimeoutError,
      );
    }
    await rejectsWith(
      b.storage.writeChunk(id, streamOf(bytes(0, 1000)), MiB, {
        length: 5000,
      }),
      BodyAbortedError,
    );
    assert.equal(await b.chunkBytes(id), 0);
    await emptyScratch(b);
  },

  async "settle(false) removes the chunk; settle(true) keeps it"(b) {
    const id = crypto.randomUUID();
    await b.storage.createRecording(id);
    const kept = await b.storage.writeChunk(id, bytes(0, 5000), MiB);
    await kept.settle(true);
    for (const length of [undefined, 7000]) {
      const dropped = await b.storage.writeChunk(
        id,
        streamOf(bytes(1, 7000)),
        MiB,
        { length },
      );
      await dropped.settle(false);
      await dropped.settle(false); // twice is harmless
    }
    assert.equal(await b.chunkBytes(id), 5000);
  },

  async "sameBytes tells a retry from a clash"(b) {
    const id = crypto.randomUUID();
    await b.storage.createRecording(id);
    const put = async (data: Uint8Array, length?: number) => {
      const s = await b.storage.writeChunk(id, streamOf(data), MiB, {
        length,
      });
      await s.settle(true);
      return s;
    };
    const a = await put(bytes(0, 40_000));
    const again = await put(bytes(0, 40_000), 40_000);
    const other = await put(bytes(1, 40_000));
    const shorter = await put(bytes(0, 39_999));
    assert.equal(await b.storage.sameBytes(id, a, again), true);
    assert.equal(await b.storage.sameBytes(id, a, other), false);
    assert.equal(await b.storage.sameBytes(id, a, shorter), false);
  },

  async "chunks read back one by one and at once, in the given order"(b) {
    const id = crypto.randomUUID();
    await b.storage.createRecording(id);
    const refs: ChunkRef[] = [];
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 6; i++) {
      const data = bytes(i * 1000, 10_000 + i * 3001);
      const s = await b.storage.writeChunk(id, data, MiB);
      await s.settle(true);
      refs.push(s);
      parts.push(data);
    }
    const order = [2, 0, 1, 5, 3, 4];
    for (const i of order) {
      assert.deepEqual(
        await readAll(await b.storage.openChunk(id, refs[i])),
        parts[i],
      );
    }
    if (canOpenChunks(b.storage)) {
      const all = await readAll(
        await b.storage.openChunks(id, order.map((i) => refs[i])),
      );
      assert.deepEqual(
        all,
        new Uint8Array(order.flatMap((i) => [...parts[i]])),
      );
    }
    await rejectsWith(
      b.storage.openChunk(id, { file: "no-such-chunk", size: 10 }),
      NotFoundError,
    );
  },

  async "publish, stat and ranged reads (across multipart part boundaries)"(b) {
    const id = crypto.randomUUID();
    await b.storage.createRecording(id);
    const dir = await Deno.makeTempDir({ prefix: "publish-" });
    try {
      assert.equal(await b.storage.statFile(id, "x.mp4"), null);
      const small = bytes(5, 200_000);
      await Deno.writeFile(join(dir, "poster.jpg"), small);
      const info = await b.storage.publishFile(
        id,
        `${id}.jpg`,
        join(dir, "poster.jpg"),
      );
      assert.equal(info.size, small.length);
      assert.match(info.etag, /^"[^"]+"$/);
      assert.ok(Math.abs(info.mtime.getTime() - Date.now()) < 60_000);
      assert.deepEqual(await b.storage.statFile(id, `${id}.jpg`), info);
      assert.deepEqual(
        await readAll(await b.storage.openFile(id, `${id}.jpg`, 10, 99)),
        small.slice(10, 100),
      );

      const size = 13 * MiB + 12_345;
      const large = bytes(11, size);
      await Deno.writeFile(join(dir, "big.mp4"), large);
      const big = await b.storage.publishFile(
        id,
        `${id}.mp4`,
        join(dir, "big.mp4"),
      );
      assert.equal(big.size, size);
      for (
        const [start, end] of [
          [0, 0],
          [5 * MiB - 10, 5 * MiB + 10],
          [10 * MiB - 1, 10 * MiB],
          [4 * MiB, 11 * MiB],
          [size - 100, size - 1],
        ]
      ) {
        assert.deepEqual(
          await readAll(await b.storage.openFile(id, `${id}.mp4`, start, end)),
          large.slice(start, end + 1),
          `range ${start}-${end}`,
        );
      }
      // Publishing again replaces the file.
      await Deno.writeFile(join(dir, "again.jpg"), bytes(0, 1000));
      const replaced = await b.storage.publishFile(
        id,
        `${id}.jpg`,
        join(dir, "again.jpg"),
      );
      assert.equal(replaced.size, 1000);
      assert.notEqual(replaced.etag, info.etag);
      await rejectsWith(
        b.storage.openFile(id, "missing.webm", 0, 10),
        NotFoundError,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },

  async "removeRecording and listRecordingIds"(b) {
    const ids = [crypto.randomUUID(), crypto.randomUUID()];
    const dir = await Deno.makeTempDir({ prefix: "publish-" });
    try {
      for (const id of ids) {
        await b.storage.createRecording(id);
        const s = await b.storage.writeChunk(id, bytes(0, 3000), MiB);
        await s.settle(true);
        await Deno.writeFile(join(dir, "f"), bytes(1, 3000));
        await b.storage.publishFile(id, `${id}.webm`, join(dir, "f"));
      }
      const listed = await b.storage.listRecordingIds();
      for (const id of ids) assert.ok(listed.includes(id), id);
      await b.storage.removeRecording(ids[0]);
      await b.storage.removeRecording(ids[0]); // twice is harmless
      const after = await b.storage.listRecordingIds();
      assert.ok(!after.includes(ids[0]));
      assert.ok(after.includes(ids[1]));
      assert.equal(await b.chunkBytes(ids[0]), 0);
      assert.equal(await b.storage.statFile(ids[0], `${ids[0]}.webm`), null);
      assert.ok(await b.storage.statFile(ids[1], `${ids[1]}.webm`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },

  async "work folders are local scratch"(b) {
    const id = crypto.randomUUID();
    const work = await b.storage.makeWorkDir(id);
    await Deno.writeTextFile(join(work, "x"), "x");
    assert.ok(work.startsWith(b.scratchDir));
    await b.storage.removeWorkDir(work);
    await assert.rejects(Deno.stat(work), Deno.errors.NotFound);
    const other = await b.storage.makeWorkDir(id);
    await b.storage.removeAllWorkDirs();
    await assert.rejects(Deno.stat(other), Deno.errors.NotFound);
  },
};

async function runCases(
  t: Deno.TestContext,
  make: () => Promise<Backend>,
): Promise<void> {
  const backend = await make();
  try {
    for (const [name, fn] of Object.entries(cases)) {
      await t.step(name, () => fn(backend));
    }
  } finally {
    await backend.close();
  }
}

Deno.test("storage contract: local disk", (t) => runCases(t, localBackend));

Deno.test({
  name: "storage contract: S3 (Swift)",
  ignore: SWIFT_IGNORE,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: (t) => runCases(t, s3Backend),
});

Deno.test({
  name: "storage S3: copies in the bucket, presigned URLs, HEAD-based facts",
  ignore: SWIFT_IGNORE,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const b = await s3Backend();
    try {
      const storage = b.storage;
      assert.ok(canCopyChunks(storage) && canLinkFiles(storage));
      assert.ok(!canOpenChunks(storage));
      const from = crypto.randomUUID();
      const to = crypto.randomUUID();
      const data = bytes(3, 123_456);
      const s = await storage.writeChunk(from, data, MiB);
      await s.settle(true);
      const copy = await storage.copyChunk(from, s, to, data.slice(0, 16));
      assert.equal(copy.size, data.length);
      assert.deepEqual(copy.head, data.slice(0, 16));
      await copy.settle(true);
      assert.deepEqual(await readAll(await storage.openChunk(to, copy)), data);
      const dropped = await storage.copyChunk(from, s, to, new Uint8Array(0));
      await dropped.settle(false);
      assert.equal(await b.chunkBytes(to), data.length);

      const dir = await Deno.makeTempDir();
      try {
        await Deno.writeFile(join(dir, "v.webm"), data);
        const info = await storage.publishFile(
          to,
          "v.webm",
          join(dir, "v.webm"),
        );
        const get = await fetch(
          await storage.fileUrl(to, "v.webm", "GET", 60),
          {
            headers: { range: "bytes=100-199" },
          },
        );
        assert.equal(get.status, 206);
        assert.deepEqual(
          new Uint8Array(await get.arrayBuffer()),
          data.slice(100, 200),
        );
        const head = await fetch(
          await storage.fileUrl(to, "v.webm", "HEAD", 60),
          { method: "HEAD" },
        );
        assert.equal(head.status, 200);
        assert.equal(head.headers.get("etag"), info.etag);
        assert.equal(head.headers.get("content-type"), "video/webm");
        const unsigned = await fetch(
          (await storage.fileUrl(to, "v.webm", "GET", 60)).split("?")[0],
        );
        await unsigned.body?.cancel();
        // Refused without the signature (Swift: 400 off its S3 path).
        assert.ok(
          unsigned.status >= 400 && unsigned.status < 500,
          `unsigned: ${unsigned.status}`,
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    } finally {
      await b.close();
    }
  },
});

Deno.test({
  name: "storage S3: a store that is down gives UnavailableError, no 500",
  ignore: SWIFT_IGNORE,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    const dir = await Deno.makeTempDir();
    const storage = new S3Storage({
      client: new S3Client({
        endpoint: `http://127.0.0.1:${port}`,
        region: "local-1",
        bucket: "down",
        accessKeyId: "a",
        secretAccessKey: "b",
        retryBaseMs: 5,
        retries: 1,
      }),
      prefix: "",
      scratch: new ScratchSpace(dir),
    });
    try {
      const id = crypto.randomUUID();
      await rejectsWith(
        storage.writeChunk(id, bytes(0, 100), MiB),
        UnavailableError,
      );
      await rejectsWith(
        storage.writeChunk(id, streamOf(bytes(0, 100)), MiB),
        UnavailableError,
      );
      await rejectsWith(
        storage.writeChunk(id, streamOf(bytes(0, 100)), MiB, { length: 100 }),
        UnavailableError,
      );
      await rejectsWith(storage.statFile(id, "x.mp4"), UnavailableError);
      await rejectsWith(storage.listRecordingIds(), UnavailableError);
      await rejectsWith(storage.removeRecording(id), UnavailableError);
      try {
        await storage.writeChunk(id, bytes(0, 100), MiB);
      } catch (err) {
        assert.equal((err as UnavailableError).headers["Retry-After"], "5");
        assert.match((err as Error).message, /nothing was stored/);
      }
    } finally {
      storage.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
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

Deno.test("STORAGE_URL: local by default, file://, s3:// with the AWS settings", async () => {
  const { loadConfig } = await import("../lib/core/config.ts");
  const { ConfigError } = await import("../lib/core/errors.ts");
  assert.deepEqual(loadConfig({ DATA_DIR: "/d" }).storage, {
    kind: "local",
    dir: "/d",
  });
  assert.deepEqual(
    loadConfig({ DATA_DIR: "/d", STORAGE_URL: "file:///srv/rec" }).storage,
    { kind: "local", dir: "/srv/rec" },
  );
  const keys = { AWS_ACCESS_KEY_ID: "id", AWS_SECRET_ACCESS_KEY: "secret" };
  const aws = loadConfig({ STORAGE_URL: "s3://media/a/b/", ...keys }).storage;
  assert.deepEqual(aws, {
    kind: "s3",
    bucket: "media",
    prefix: "a/b/",
    endpoint: "https://s3.us-east-1.amazonaws.com",
    region: "us-east-1",
    accessKeyId: "id",
    secretAccessKey: "secret",
    sessionToken: undefined,
    forcePathStyle: false,
    timeoutMs: 30_000,
  });
  const own = loadConfig({
    STORAGE_URL: "s3://media",
    AWS_ENDPOINT_URL: "http://127.0.0.1:9000",
    AWS_REGION: "eu-west-3",
    AWS_SESSION_TOKEN: "tok",
    S3_TIMEOUT_MS: "2000",
    ...keys,
  }).storage;
  assert.ok(own.kind === "s3");
  assert.equal(own.prefix, "");
  assert.equal(own.endpoint, "http://127.0.0.1:9000");
  assert.equal(own.region, "eu-west-3");
  assert.equal(own.sessionToken, "tok");
  assert.equal(own.forcePathStyle, true);
  assert.equal(own.timeoutMs, 2000);
  const hosted = loadConfig({
    STORAGE_URL: "s3://media",
    S3_ENDPOINT: "https://s3.example",
    S3_FORCE_PATH_STYLE: "false",
    ...keys,
  }).storage;
  assert.ok(hosted.kind === "s3" && !hosted.forcePathStyle);
  assert.throws(() => loadConfig({ STORAGE_URL: "s3://media" }), ConfigError);
  assert.throws(() => loadConfig({ STORAGE_URL: "gs://media" }), ConfigError);
  const media = loadConfig({ MEDIA_REDIRECT: "true" });
  assert.equal(media.mediaRedirect, true);
  assert.equal(media.mediaRedirectTtlS, 3600);
});
