import assert from "node:assert/strict";
import {
  createSession,
  expectError,
  mediaBytes,
  sendChunk,
  withServer,
} from "./helpers.ts";

async function create(url: string, headers: Record<string, string> = {}) {
  return await fetch(`${url}/create/`, { method: "POST", headers });
}

Deno.test("access: with API_KEYS set, create needs a valid key; chunks need none unless tokens are required", async () => {
  await withServer({ API_KEYS: "alpha-key, beta-key" }, async ({ url }) => {
    const none = await create(url);
    assert.match(none.headers.get("www-authenticate") ?? "", /Bearer/);
    await expectError(none, 401, /API key is required/);
    await expectError(
      await create(url, { authorization: "Bearer nope" }),
      401,
      /not valid/,
    );
    await expectError(
      await create(url, { "x-api-key": "alpha-key-but-longer" }),
      401,
    );
    const ok = await create(url, { authorization: "Bearer alpha-key" });
    assert.equal(ok.status, 200);
    const { video_id: id, upload_token: token } = await ok.json();
    assert.equal(typeof token, "string");
    assert.ok(token.length >= 40);
    const ok2 = await create(url, { "x-api-key": "beta-key" });
    assert.equal(ok2.status, 200);
    await ok2.body?.cancel();
    const chunk = await sendChunk(url, id, mediaBytes(100));
    assert.equal(chunk.status, 200);
    await chunk.body?.cancel();
  });
});

Deno.test("access: REQUIRE_UPLOAD_TOKEN accepts only the session's own token on add_data and complete_job", async () => {
  await withServer({ REQUIRE_UPLOAD_TOKEN: "true" }, async ({ url }) => {
    const a = await (await create(url)).json();
    const b = await (await create(url)).json();
    await expectError(
      await sendChunk(url, a.video_id, mediaBytes(10)),
      401,
      /upload token/,
    );
    await expectError(
      await fetch(`${url}/add_data/${a.video_id}/`, {
        method: "POST",
        body: mediaBytes(10),
        headers: { "x-upload-token": b.upload_token },
      }),
      401,
    );
    const ways: Record<string, string>[] = [
      { "x-upload-token": a.upload_token },
      { authorization: `Bearer ${a.upload_token}` },
    ];
    for (const headers of ways) {
      const res = await fetch(`${url}/add_data/${a.video_id}/`, {
        method: "POST",
        body: mediaBytes(10),
        headers,
      });
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
    const viaQuery = await fetch(
      `${url}/add_data/${a.video_id}/?token=${
        encodeURIComponent(a.upload_token)
      }`,
      { method: "POST", body: mediaBytes(10, 1) },
    );
    assert.equal(viaQuery.status, 200);
    await viaQuery.body?.cancel();
    await expectError(
      await fetch(`${url}/complete_job/${a.video_id}/`, {
        method: "POST",
        headers: { "x-upload-token": b.upload_token },
      }),
      401,
    );
    const done = await fetch(`${url}/complete_job/${a.video_id}/`, {
      method: "POST",
      headers: { "x-upload-token": a.upload_token },
    });
    assert.equal(done.status, 200);
    await done.body?.cancel();
    const unknown = "0b9d6f3e-2c1a-4f59-9a8e-7d2f4c1b3a10";
    await expectError(
      await fetch(`${url}/add_data/${unknown}/`, { method: "POST", body: "x" }),
      404,
    );
    const status = await fetch(`${url}/check_status/${a.video_id}/`);
    assert.equal(status.status, 200);
    await status.body?.cancel();
  });
});

Deno.test("access: PRIVATE_RECORDINGS needs an API key or the session's token to read status, listing and files", async () => {
  await withServer(
    { API_KEYS: "k1", PRIVATE_RECORDINGS: "true" },
    async ({ url }) => {
      const a = await (await create(url, { "x-api-key": "k1" })).json();
      const b = await (await create(url, { "x-api-key": "k1" })).json();
      // The login session cookie (it used to be the raw key, which no longer works).
      const login = await fetch(`${url}/login`, {
        method: "POST",
        body: new URLSearchParams({ key: "k1" }),
        redirect: "manual",
      });
      await login.body?.cancel();
      const session = (login.headers.get("set-cookie") ?? "").split(";")[0];
      for (
        const path of [`/check_status/${a.video_id}/`, `/video/${a.video_id}/`]
      ) {
        await expectError(await fetch(`${url}${path}`), 401, /private/);
        await expectError(
          await fetch(`${url}${path}`, {
            headers: { "x-upload-token": b.upload_token },
          }),
          401,
        );
        const ways: Record<string, string>[] = [
          { "x-api-key": "k1" },
          { "x-upload-token": a.upload_token },
          { cookie: session },
        ];
        for (const headers of ways) {
          const res = await fetch(`${url}${path}`, { headers });
          assert.equal(res.status, 200);
          await res.body?.cancel();
        }
      }
      await expectError(
        await fetch(`${url}/media/${a.video_id}/${a.video_id}.mp4`),
        401,
      );
    },
  );
});

Deno.test("access: CREATE_RATE_PER_MINUTE answers 429 with Retry-After per client address", async () => {
  await withServer(
    { CREATE_RATE_PER_MINUTE: "3", TRUST_PROXY: "true" },
    async ({ url }) => {
      for (let i = 0; i < 3; i++) {
        const res = await create(url, { "x-forwarded-for": "203.0.113.7" });
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      const limited = await create(url, { "x-forwarded-for": "203.0.113.7" });
      const retry = Number(limited.headers.get("retry-after"));
      assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
      await expectError(limited, 429, /203\.0\.113\.7.*CREATE_RATE_PER_MINUTE/);
      const other = await create(url, { "x-forwarded-for": "198.51.100.1" });
      assert.equal(other.status, 200);
      await other.body?.cancel();
    },
  );
  await withServer({ CREATE_RATE_PER_MINUTE: "2" }, async ({ url }) => {
    for (let i = 0; i < 2; i++) await (await create(url)).body?.cancel();
    await expectError(
      await create(url, { "x-forwarded-for": "198.51.100.9" }),
      429,
    );
  });
});

Deno.test("access: MAX_OPEN_RECORDINGS refuses new sessions with 503 until one is completed", async () => {
  await withServer({ MAX_OPEN_RECORDINGS: "2" }, async ({ url }) => {
    const a = await createSession(url);
    await createSession(url);
    const full = await create(url);
    assert.ok(full.headers.get("retry-after"));
    await expectError(full, 503, /MAX_OPEN_RECORDINGS/);
    const res = await sendChunk(url, a, mediaBytes(50));
    await res.body?.cancel();
    await (await fetch(`${url}/complete_job/${a}/`, { method: "POST" })).body
      ?.cancel();
    const again = await create(url);
    assert.equal(again.status, 200);
    await again.body?.cancel();
  });
});

Deno.test("access: a burst of creates at once lets in exactly MAX_OPEN_RECORDINGS", async () => {
  await withServer({ MAX_OPEN_RECORDINGS: "3" }, async ({ url }) => {
    const answers = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const res = await create(url);
        const body = await res.json();
        return { status: res.status, body };
      }),
    );
    const statuses = answers.map((a) => a.status).sort();
    assert.deepEqual(statuses, [200, 200, 200, 503, 503, 503, 503, 503]);
    const refused = answers.find((a) => a.status === 503)!;
    assert.match(refused.body.error, /MAX_OPEN_RECORDINGS/);
    const first = answers.find((a) => a.status === 200)!.body.video_id;
    await (await sendChunk(url, first, mediaBytes(50))).body?.cancel();
    await (await fetch(`${url}/complete_job/${first}/`, { method: "POST" }))
      .body?.cancel();
    const again = await create(url);
    assert.equal(again.status, 200);
    await again.body?.cancel();
    await expectError(await create(url), 503, /MAX_OPEN_RECORDINGS/);
  });
});

Deno.test("access: a first chunk that is not WebM or MP4 gets 415 and nothing is stored", async () => {
  await withServer({}, async ({ url, dataDir }) => {
    const id = await createSession(url);
    await expectError(
      await sendChunk(
        url,
        id,
        new TextEncoder().encode("<html>not a video</html>"),
      ),
      415,
      /EBML|ftyp/,
    );
    await expectError(
      await sendChunk(
        url,
        id,
        new TextEncoder().encode("#!/bin/sh\necho hi\n"),
        0,
      ),
      415,
    );
    const later = await sendChunk(
      url,
      id,
      new TextEncoder().encode("middle bytes"),
      3,
    );
    assert.equal(later.status, 200);
    await later.body?.cancel();
    const st = await (await fetch(`${url}/check_status/${id}/`)).json();
    assert.equal(st.chunks_received, 1);
    const files = [...Deno.readDirSync(`${dataDir}/recordings/${id}/chunks`)];
    assert.equal(files.length, 1);
    const held = Deno.statSync(
      `${dataDir}/recordings/${id}/chunks/${files[0].name}`,
    );
    assert.equal(
      held.size,
      "middle bytes".length,
      "refused chunks left no bytes",
    );
    const mp4 = new Uint8Array(64);
    mp4.set([0, 0, 0, 24, 0x66, 0x74, 0x79, 0x70]);
    const ok = await sendChunk(url, id, mp4, 0);
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  });
});

Deno.test("access: a chunked body over MAX_CHUNK_BYTES gets 413 without the server reading the rest", async () => {
  await withServer({ MAX_CHUNK_BYTES: "100000" }, async ({ url }) => {
    const id = await createSession(url);
    const { hostname, port } = new URL(url);
    const conn = await Deno.connect({ hostname, port: Number(port) });
    try {
      const enc = new TextEncoder();
      await conn.write(enc.encode(
        `POST /add_data/${id}/ HTTP/1.1\r\nHost: ${hostname}\r\n` +
          "Content-Type: video/webm\r\nTransfer-Encoding: chunked\r\n\r\n",
      ));
      const piece = mediaBytes(40_000);
      for (let i = 0; i < 3; i++) {
        await conn.write(enc.encode(`${piece.length.toString(16)}\r\n`));
        await conn.write(piece);
        await conn.write(enc.encode("\r\n"));
      }
      const buf = new Uint8Array(4096);
      const n = await Promise.race([
        conn.read(buf),
        new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
      ]);
      assert.ok(n, "the server answered before the body ended");
      const reply = new TextDecoder().decode(buf.subarray(0, n));
      assert.match(reply, /^HTTP\/1\.1 413/);
      assert.match(reply, /content-type: application\/json/i);
      assert.match(reply, /MAX_CHUNK_BYTES/);
    } finally {
      conn.close();
    }
    const st = await (await fetch(`${url}/check_status/${id}/`)).json();
    assert.equal(st.chunks_received, 0);
  });
});

Deno.test("access: a first chunk too short to judge (a browser's 1-byte chunk) is held until the start can be checked", async () => {
  await withServer({}, async ({ url }) => {
    const webm = await createSession(url);
    const one = await sendChunk(url, webm, new Uint8Array([0x1a]), 0);
    assert.equal(one.status, 200);
    await one.body?.cancel();
    const rest = mediaBytes(200).slice(1);
    const two = await sendChunk(url, webm, rest, 1);
    assert.equal(two.status, 200);
    await two.body?.cancel();

    const mp4 = await createSession(url);
    const first = await sendChunk(
      url,
      mp4,
      new Uint8Array([0, 0, 0, 24, 0x66]),
      0,
    );
    assert.equal(first.status, 200);
    await first.body?.cancel();
    const second = await sendChunk(
      url,
      mp4,
      new TextEncoder().encode("typisom..."),
      1,
    );
    assert.equal(second.status, 200);
    await second.body?.cancel();

    const bad = await createSession(url);
    const tiny = await sendChunk(url, bad, new TextEncoder().encode("<"), 0);
    assert.equal(tiny.status, 200);
    await tiny.body?.cancel();
    await expectError(
      await sendChunk(
        url,
        bad,
        new TextEncoder().encode("html>hello</html>"),
        1,
      ),
      415,
      /does not start like/,
    );
    const st = await (await fetch(`${url}/check_status/${bad}/`)).json();
    assert.equal(st.chunks_received, 1);
  });
});
