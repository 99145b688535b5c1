import assert from "node:assert/strict";
import {
  contentTypeFor,
  fileResponse,
  type OpenRange,
  type StoredFileInfo,
} from "../lib/http/http_file.ts";
import { openLocalRange } from "../lib/storage/local_file.ts";

const SIZE = 300_007;
const URL_BASE = "http://tapedeck.test/files/clip.mp4";

/**
 * Deno 2.9 turns the op and resource sanitizers off by default; every test
 * here turns them on so a file left open by openLocalRange fails the test.
 */
function test(name: string, fn: () => Promise<void> | void): void {
  Deno.test({ name, fn, sanitizeOps: true, sanitizeResources: true });
}

interface Fixture {
  path: string;
  bytes: Uint8Array;
  info: StoredFileInfo;
  open: OpenRange;
}

function randomBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65_536) {
    crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65_536)));
  }
  return bytes;
}

async function withFile(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const path = await Deno.makeTempFile({ suffix: ".mp4" });
  try {
    const bytes = randomBytes(SIZE);
    await Deno.writeFile(path, bytes);
    const stat = await Deno.stat(path);
    const mtime = stat.mtime!;
    const info = {
      size: stat.size,
      mtime,
      etag: `"${stat.size.toString(16)}-${mtime.getTime().toString(16)}"`,
    };
    const open: OpenRange = (start, end) => openLocalRange(path, start, end);
    await fn({ path, bytes, info, open });
  } finally {
    await Deno.remove(path);
  }
}

function get(headers: Record<string, string> = {}, method = "GET"): Request {
  return new Request(URL_BASE, { method, headers });
}

const neverOpen: OpenRange = () => {
  throw new Error("the file must not be opened");
};

async function body(res: Response): Promise<Uint8Array> {
  return new Uint8Array(await res.arrayBuffer());
}

function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

async function assertFull(
  res: Response,
  f: Fixture,
): Promise<void> {
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-length"), String(f.info.size));
  assert.equal(res.headers.get("content-range"), null);
  assert.deepEqual(await body(res), f.bytes);
}

async function assertPartial(
  res: Response,
  f: Fixture,
  start: number,
  end: number,
): Promise<void> {
  assert.equal(res.status, 206);
  assert.equal(
    res.headers.get("content-range"),
    `bytes ${start}-${end}/${f.info.size}`,
  );
  assert.equal(res.headers.get("content-length"), String(end - start + 1));
  assert.equal(res.headers.get("content-type"), "video/mp4");
  assert.equal(res.headers.get("accept-ranges"), "bytes");
  assert.deepEqual(await body(res), f.bytes.slice(start, end + 1));
}

test("full GET sends 200 with every header and the whole file", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(get(), f.info, "video/mp4", f.open);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "video/mp4");
    assert.equal(res.headers.get("content-length"), String(SIZE));
    assert.equal(res.headers.get("accept-ranges"), "bytes");
    assert.equal(res.headers.get("etag"), f.info.etag);
    assert.equal(
      res.headers.get("last-modified"),
      f.info.mtime.toUTCString(),
    );
    assert.equal(
      res.headers.get("cache-control"),
      "private, max-age=0, must-revalidate",
    );
    assert.equal(res.headers.get("content-range"), null);
    assert.deepEqual(await body(res), f.bytes);
  });
});

test("HEAD sends the GET headers, no body, and never opens the file", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({}, "HEAD"),
      f.info,
      "video/mp4",
      neverOpen,
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-length"), String(SIZE));
    assert.equal(res.headers.get("accept-ranges"), "bytes");
    assert.equal(res.headers.get("etag"), f.info.etag);
    assert.equal(res.body, null);

    const ranged = await fileResponse(
      get({ range: "bytes=0-99" }, "HEAD"),
      f.info,
      "video/mp4",
      neverOpen,
    );
    assert.equal(ranged.status, 200);
    assert.equal(ranged.headers.get("content-length"), String(SIZE));
    assert.equal(ranged.body, null);
  });
});

test("bytes=0-99 gives 206 with the first 100 bytes", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ range: "bytes=0-99" }),
      f.info,
      "video/mp4",
      f.open,
    );
    await assertPartial(res, f, 0, 99);
    assert.equal(res.headers.get("etag"), f.info.etag);
    assert.ok(res.headers.get("last-modified"));
  });
});

test("bytes=100- gives 206 from byte 100 to the end", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ range: "bytes=100-" }),
      f.info,
      "video/mp4",
      f.open,
    );
    await assertPartial(res, f, 100, SIZE - 1);
  });
});

test("bytes=-50 gives 206 with the last 50 bytes", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ range: "bytes=-50" }),
      f.info,
      "video/mp4",
      f.open,
    );
    await assertPartial(res, f, SIZE - 50, SIZE - 1);
  });
});

test("a suffix longer than the file gives the whole file as 206", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ range: "bytes=-999999999" }),
      f.info,
      "video/mp4",
      f.open,
    );
    await assertPartial(res, f, 0, SIZE - 1);
  });
});

test("a range past the end is clamped to the last byte", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ range: "bytes=10-999999999" }),
      f.info,
      "video/mp4",
      f.open,
    );
    await assertPartial(res, f, 10, SIZE - 1);
  });
});

test("a 1-byte range at the last byte gives that byte", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ range: `bytes=${SIZE - 1}-${SIZE - 1}` }),
      f.info,
      "video/mp4",
      f.open,
    );
    await assertPartial(res, f, SIZE - 1, SIZE - 1);
  });
});

test("bytes=size- gives 416 with bytes */size and a JSON error", async () => {
  await withFile(async (f) => {
    for (
      const range of [
        `bytes=${SIZE}-`,
        `bytes=${SIZE + 5}-${SIZE + 9}`,
        "bytes=-0",
      ]
    ) {
      const res = await fileResponse(
        get({ range }),
        f.info,
        "video/mp4",
        neverOpen,
      );
      assert.equal(res.status, 416, range);
      assert.equal(res.headers.get("content-range"), `bytes */${SIZE}`);
      assert.equal(res.headers.get("content-type"), "application/json");
      const json = await res.json();
      assert.equal(typeof json.error, "string");
      assert.match(json.error, /not satisfiable/);
    }
  });
});

test("malformed or multiple ranges are ignored and the whole file is sent", async () => {
  await withFile(async (f) => {
    for (
      const range of [
        "bytes=abc",
        "bytes=",
        "bytes=-",
        "bytes=5-2",
        "bytes=1.5-3",
        "bytes=0x10-20",
        "items=0-99",
        "0-99",
        "bytes=0-1,5-6",
      ]
    ) {
      const res = await fileResponse(
        get({ range }),
        f.info,
        "video/mp4",
        f.open,
      );
      assert.equal(res.status, 200, range);
      await assertFull(res, f);
    }
  });
});

test("If-None-Match that matches gives 304 without a body", async () => {
  await withFile(async (f) => {
    for (
      const value of [
        f.info.etag,
        `"other", ${f.info.etag}`,
        "*",
        `W/${f.info.etag}`,
      ]
    ) {
      const res = await fileResponse(
        get({ "if-none-match": value, range: "bytes=0-9" }),
        f.info,
        "video/mp4",
        neverOpen,
      );
      assert.equal(res.status, 304, value);
      assert.equal(res.headers.get("etag"), f.info.etag);
      assert.equal(
        res.headers.get("cache-control"),
        "private, max-age=0, must-revalidate",
      );
      assert.equal(
        res.headers.get("last-modified"),
        f.info.mtime.toUTCString(),
      );
      assert.equal(res.body, null);
    }
  });
});

test("If-None-Match that does not match gives 200", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ "if-none-match": '"nope", W/"also-no"' }),
      f.info,
      "video/mp4",
      f.open,
    );
    await assertFull(res, f);
  });
});

test("weak ETag W/ in If-None-Match matches (weak comparison)", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ "if-none-match": `W/${f.info.etag}` }),
      f.info,
      "video/mp4",
      neverOpen,
    );
    assert.equal(res.status, 304);
    assert.equal(res.body, null);
  });
});

test("If-Modified-Since not older than the file gives 304", async () => {
  await withFile(async (f) => {
    const mtime = f.info.mtime.getTime();
    const asctime = new Date(mtime + 3_600_000);
    const month = asctime.toUTCString().slice(8, 11);
    const day = String(asctime.getUTCDate()).padStart(2, " ");
    const clock = asctime.toISOString().slice(11, 19);
    const weekday = asctime.toUTCString().slice(0, 3);
    for (
      const value of [
        httpDate(mtime),
        httpDate(mtime + 60_000),
        `${weekday} ${month} ${day} ${clock} ${asctime.getUTCFullYear()}`,
      ]
    ) {
      const res = await fileResponse(
        get({ "if-modified-since": value }),
        f.info,
        "video/mp4",
        neverOpen,
      );
      assert.equal(res.status, 304, value);
      assert.equal(res.headers.get("etag"), f.info.etag);
      assert.equal(res.body, null);
    }
  });
});

test("If-Modified-Since older than the file, or invalid, gives 200", async () => {
  await withFile(async (f) => {
    for (
      const value of [
        httpDate(f.info.mtime.getTime() - 60_000),
        "yesterday",
        "Sun, 31 Feb 2021 00:00:00 GMT",
      ]
    ) {
      const res = await fileResponse(
        get({ "if-modified-since": value }),
        f.info,
        "video/mp4",
        f.open,
      );
      await assertFull(res, f);
    }
  });
});

test("If-None-Match takes precedence over If-Modified-Since", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({
        "if-none-match": '"different"',
        "if-modified-since": httpDate(f.info.mtime.getTime() + 60_000),
      }),
      f.info,
      "video/mp4",
      f.open,
    );
    await assertFull(res, f);
  });
});

test("If-Range that does not match sends the whole file as 200", async () => {
  await withFile(async (f) => {
    for (
      const value of [
        '"stale-etag"',
        `W/${f.info.etag}`,
        httpDate(f.info.mtime.getTime() - 60_000),
        "not a date",
      ]
    ) {
      const res = await fileResponse(
        get({ range: "bytes=0-99", "if-range": value }),
        f.info,
        "video/mp4",
        f.open,
      );
      assert.equal(res.status, 200, value);
      await assertFull(res, f);
    }
  });
});

test("If-Range that matches (ETag or date) honours the range", async () => {
  await withFile(async (f) => {
    for (const value of [f.info.etag, f.info.mtime.toUTCString()]) {
      const res = await fileResponse(
        get({ range: "bytes=0-99", "if-range": value }),
        f.info,
        "video/mp4",
        f.open,
      );
      await assertPartial(res, f, 0, 99);
    }
  });
});

test("options set Cache-Control and extra headers", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({ range: "bytes=0-0" }),
      f.info,
      "video/mp4",
      f.open,
      {
        cacheControl: "public, max-age=60",
        headers: { "Content-Disposition": 'inline; filename="clip.mp4"' },
      },
    );
    assert.equal(res.status, 206);
    assert.equal(res.headers.get("cache-control"), "public, max-age=60");
    assert.equal(
      res.headers.get("content-disposition"),
      'inline; filename="clip.mp4"',
    );
    assert.deepEqual(await body(res), f.bytes.slice(0, 1));
  });
});

test("methods other than GET and HEAD get 405", async () => {
  await withFile(async (f) => {
    const res = await fileResponse(
      get({}, "POST"),
      f.info,
      "video/mp4",
      neverOpen,
    );
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal(typeof (await res.json()).error, "string");
  });
});

test("an empty file gets 200 with no body, even with a Range", async () => {
  const info = { size: 0, mtime: new Date(), etag: '"0-0"' };
  const res = await fileResponse(
    get({ range: "bytes=0-" }),
    info,
    "video/mp4",
    neverOpen,
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-length"), "0");
  assert.deepEqual(await body(res), new Uint8Array(0));
});

test("contentTypeFor maps known extensions", () => {
  assert.equal(contentTypeFor("a.mp4"), "video/mp4");
  assert.equal(contentTypeFor("dir.x/A.WEBM"), "video/webm");
  assert.equal(contentTypeFor("a.mkv"), "video/x-matroska");
  assert.equal(contentTypeFor("thumb.jpg"), "image/jpeg");
  assert.equal(contentTypeFor("thumb.jpeg"), "image/jpeg");
  assert.equal(contentTypeFor("poster.png"), "image/png");
  assert.equal(contentTypeFor("meta.json"), "application/json");
  assert.equal(contentTypeFor("notes.txt"), "application/octet-stream");
  assert.equal(contentTypeFor("mp4"), "application/octet-stream");
  assert.equal(contentTypeFor("dir.mp4/file"), "application/octet-stream");
});

test("openLocalRange streams exact bytes across many 64 KiB pieces", async () => {
  await withFile(async (f) => {
    const start = 1_000;
    const end = start + 4 * 65_536 + 17;
    const stream = await openLocalRange(f.path, start, end);
    const chunks: Uint8Array[] = [];
    for await (const chunk of stream) {
      assert.ok(chunk.length <= 65_536);
      chunks.push(chunk);
    }
    assert.ok(chunks.length >= 5);
    const got = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let offset = 0;
    for (const c of chunks) {
      got.set(c, offset);
      offset += c.length;
    }
    assert.deepEqual(got, f.bytes.slice(start, end + 1));
  });
});

test("openLocalRange closes the file when cancelled early", async () => {
  await withFile(async (f) => {
    const stream = await openLocalRange(f.path, 0, SIZE - 1);
    const reader = stream.getReader();
    const first = await reader.read();
    assert.equal(first.done, false);
    assert.deepEqual(first.value, f.bytes.slice(0, 65_536));
    await reader.cancel();
  });
});

test("openLocalRange closes the file when cancelled before reading", async () => {
  await withFile(async (f) => {
    const stream = await openLocalRange(f.path, 5, 10);
    await stream.cancel();
  });
});

test("openLocalRange errors if the file is shorter than the range", async () => {
  await withFile(async (f) => {
    const stream = await openLocalRange(f.path, SIZE - 10, SIZE + 10);
    await assert.rejects(
      new Response(stream).arrayBuffer(),
      /ended 11 bytes before/,
    );
  });
});

test("a real server answers a Range request with 206 and the bytes", async () => {
  await withFile(async (f) => {
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      (req) => fileResponse(req, f.info, contentTypeFor(f.path), f.open),
    );
    try {
      const url = `http://127.0.0.1:${server.addr.port}/clip.mp4`;
      const res = await fetch(url, {
        headers: { range: "bytes=70000-200000" },
      });
      await assertPartial(res, f, 70_000, 200_000);

      const full = await fetch(url);
      await assertFull(full, f);

      const head = await fetch(url, { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get("content-length"), String(SIZE));
      await head.body?.cancel();
    } finally {
      await server.shutdown();
    }
  });
});
