/**
 * The library API (`/api/recordings`): titles at create (JSON, form, tus
 * filename, none), list with paging, status filter and search, get,
 * rename, delete with the access rules, and a delete while processing.
 * (Longer than most files: each area of the API has its own server and
 * test, kept together as the API's one contract.)
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  makeRecording,
  mediaBytes,
  missingTool,
  splitBytes,
  startTestServer,
} from "./helpers.ts";
import { indexLibrary } from "../lib/recordings/library.ts";
import { type Recording, recordingKey } from "../lib/kv/keys.ts";

const ffmpegMissing = await missingTool("ffmpeg");

interface Created {
  id: string;
  token: string;
}

async function create(
  url: string,
  init: RequestInit = {},
): Promise<Created> {
  const res = await fetch(`${url}/create/`, { method: "POST", ...init });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return { id: body.video_id, token: body.upload_token };
}

async function json(
  res: Response,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return { status: res.status, body: await res.json() };
}

async function get(url: string, headers: Record<string, string> = {}) {
  return await json(await fetch(url, { headers }));
}

async function rename(
  url: string,
  id: string,
  body: BodyInit | null,
  headers: Record<string, string> = { "content-type": "application/json" },
) {
  return await json(
    await fetch(`${url}/api/recordings/${id}`, {
      method: "PATCH",
      body,
      headers,
    }),
  );
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

function titles(body: Record<string, unknown>): unknown[] {
  return (body.recordings as { title: unknown }[]).map((r) => r.title);
}

Deno.test("library api: titles come from create (JSON, form, nothing) and the tus filename", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const a = await create(server.url, {
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "  Weekly\tdemo  " }),
    });
    const b = await create(server.url, {
      body: new URLSearchParams({ title: "Form title" }),
    });
    const form = new FormData();
    form.set("title", "Multipart title");
    const c = await create(server.url, { body: form });
    const d = await create(server.url);
    const tus = await fetch(`${server.url}/files/`, {
      method: "POST",
      headers: {
        "tus-resumable": "1.0.0",
        "upload-defer-length": "1",
        "upload-metadata": `filename ${btoa("Team call.2024.webm")},filetype ${
          btoa("video/webm")
        }`,
      },
    });
    assert.equal(tus.status, 201);
    await tus.body?.cancel();
    const tusId = tus.headers.get("x-video-id")!;

    const expect: [string, unknown][] = [
      [a.id, "Weekly demo"],
      [b.id, "Form title"],
      [c.id, "Multipart title"],
      [d.id, null],
      [tusId, "Team call.2024"],
    ];
    for (const [id, title] of expect) {
      const one = await get(`${server.url}/api/recordings/${id}`);
      assert.equal(one.status, 200);
      assert.equal(one.body.title, title, id);
      assert.equal(one.body.status, "recording");
      assert.equal(one.body.id, id);
      assert.match(String(one.body.created_at), /^\d{4}-\d\d-\d\dT/);
      assert.deepEqual(one.body.files, []);
      assert.equal(
        (one.body.urls as Record<string, string>).embed,
        `/embed/${id}`,
      );
    }

    const bad = await fetch(`${server.url}/create/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "x".repeat(201) }),
    });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error, /at most 200/);
    const notString = await fetch(`${server.url}/create/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: 5 }),
    });
    assert.equal(notString.status, 400);
    await notString.body?.cancel();
    const malformed = await fetch(`${server.url}/create/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{",
    });
    assert.equal(malformed.status, 400);
    await malformed.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("library api: list pages newest first, filters by status, searches titles by word beginnings", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const names = [
      "Café design review",
      "Weekly sync",
      "Design sprint kickoff",
      "Bug bash",
      "design notes 2",
    ];
    const made: Created[] = [];
    for (const title of names) {
      made.push(
        await create(server.url, {
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ title }),
        }),
      );
      await new Promise((r) => setTimeout(r, 3));
    }
    // One of them is closed with data, so it is no longer "recording".
    const chunk = await fetch(`${server.url}/add_data/${made[1].id}/`, {
      method: "POST",
      body: mediaBytes(1000),
    });
    assert.equal(chunk.status, 200);
    await chunk.body?.cancel();
    const done = await fetch(`${server.url}/complete_job/${made[1].id}/`, {
      method: "POST",
    });
    assert.equal(done.status, 200);
    await done.body?.cancel();

    const all = await get(`${server.url}/api/recordings`);
    assert.equal(all.status, 200);
    assert.deepEqual(titles(all.body), names.slice().reverse());
    assert.equal(all.body.cursor, null);

    const first = await get(`${server.url}/api/recordings?limit=2`);
    assert.deepEqual(titles(first.body), [names[4], names[3]]);
    const second = await get(
      `${server.url}/api/recordings?limit=2&cursor=${first.body.cursor}`,
    );
    assert.deepEqual(titles(second.body), [names[2], names[1]]);

    const design = await get(`${server.url}/api/recordings?q=design`);
    assert.deepEqual(titles(design.body), [names[4], names[2], names[0]]);
    const prefix = await get(`${server.url}/api/recordings?q=DES`);
    assert.deepEqual(titles(prefix.body), [names[4], names[2], names[0]]);
    const accents = await get(`${server.url}/api/recordings?q=cafe%20rev`);
    assert.deepEqual(titles(accents.body), [names[0]]);
    const none = await get(`${server.url}/api/recordings?q=esign`);
    assert.deepEqual(titles(none.body), []);

    const pageOne = await get(`${server.url}/api/recordings?q=design&limit=2`);
    assert.deepEqual(titles(pageOne.body), [names[4], names[2]]);
    assert.ok(pageOne.body.cursor);
    const pageTwo = await get(
      `${server.url}/api/recordings?q=design&limit=2&cursor=${
        encodeURIComponent(String(pageOne.body.cursor))
      }`,
    );
    assert.deepEqual(titles(pageTwo.body), [names[0]]);
    assert.equal(pageTwo.body.cursor, null);

    const processing = await get(
      `${server.url}/api/recordings?status=processing`,
    );
    assert.deepEqual(titles(processing.body), [names[1]]);
    const recording = await get(
      `${server.url}/api/recordings?status=recording&q=design`,
    );
    assert.deepEqual(titles(recording.body), [names[4], names[2], names[0]]);
    const wrong = await get(`${server.url}/api/recordings?status=done`);
    assert.equal(wrong.status, 400);
    const badLimit = await get(`${server.url}/api/recordings?limit=0`);
    assert.equal(badLimit.status, 400);

    // Renaming moves a recording between searches.
    const renamed = await rename(
      server.url,
      made[3].id,
      JSON.stringify({ title: "Design bug bash" }),
    );
    assert.equal(renamed.status, 200);
    assert.equal(renamed.body.title, "Design bug bash");
    const after = await get(`${server.url}/api/recordings?q=design%20bug`);
    assert.deepEqual(titles(after.body), ["Design bug bash"]);
    const oldName = await get(`${server.url}/api/recordings?q=bash`);
    assert.deepEqual(titles(oldName.body), ["Design bug bash"]);
    const form = await rename(
      server.url,
      made[3].id,
      new URLSearchParams({ title: "" }),
      { "content-type": "application/x-www-form-urlencoded" },
    );
    assert.equal(form.status, 200);
    assert.equal(form.body.title, null);
    const gone = await get(`${server.url}/api/recordings?q=bash`);
    assert.deepEqual(titles(gone.body), []);

    const missing = await rename(server.url, made[3].id, "{}");
    assert.equal(missing.status, 400);
    const long = await rename(
      server.url,
      made[3].id,
      JSON.stringify({ title: "y".repeat(300) }),
    );
    assert.equal(long.status, 400);
    const unknown = await rename(
      server.url,
      crypto.randomUUID(),
      JSON.stringify({ title: "z" }),
    );
    assert.equal(unknown.status, 404);
    const method = await fetch(`${server.url}/api/recordings`, {
      method: "POST",
    });
    assert.equal(method.status, 405);
    assert.equal(method.headers.get("allow"), "GET, HEAD");
    await method.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("library api: records written before the indexes are indexed by the start-up sweep", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const { id } = await create(server.url, {
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "Old upload" }),
    });
    const ctx = server.service.ctx;
    // Make it look like a record of the previous version: no index mark,
    // no index entries.
    const entry = await ctx.kv.get<Recording>(recordingKey(id));
    const old = { ...entry.value! };
    delete old.indexes;
    const atomic = ctx.kv.atomic().set(recordingKey(id), old);
    for await (const e of ctx.kv.list({ prefix: ["recording_by_word"] })) {
      atomic.delete(e.key);
    }
    for await (const e of ctx.kv.list({ prefix: ["recording_by_status"] })) {
      atomic.delete(e.key);
    }
    await atomic.commit();
    const before = await get(`${server.url}/api/recordings?q=old`);
    assert.deepEqual(titles(before.body), []);
    assert.equal(await indexLibrary(ctx), 1);
    assert.equal(await indexLibrary(ctx), 0);
    const after = await get(`${server.url}/api/recordings?q=old`);
    assert.deepEqual(titles(after.body), ["Old upload"]);
    const status = await get(`${server.url}/api/recordings?status=recording`);
    assert.deepEqual(titles(status.body), ["Old upload"]);
  } finally {
    await server.close();
  }
});

Deno.test("library api: access rules of upload tokens, API keys and private recordings", async () => {
  const server = await startTestServer({
    RUN_WORKER: "false",
    API_KEYS: "key-1",
    PRIVATE_RECORDINGS: "true",
  });
  const key = { "x-api-key": "key-1" };
  try {
    const { id, token } = await create(server.url, { headers: key });
    const other = await create(server.url, { headers: key });
    const base = `${server.url}/api/recordings`;

    assert.equal((await get(base)).status, 401);
    assert.equal((await get(base, { "x-upload-token": token })).status, 401);
    assert.equal((await get(base, key)).status, 200);
    const head = await fetch(base, { method: "HEAD", headers: key });
    assert.equal(head.status, 200);
    await head.body?.cancel();

    assert.equal((await get(`${base}/${id}`)).status, 401);
    assert.equal(
      (await get(`${base}/${id}`, { "x-upload-token": other.token })).status,
      401,
    );
    assert.equal(
      (await get(`${base}/${id}`, { "x-upload-token": token })).status,
      200,
    );
    assert.equal((await get(`${base}/${id}?token=${token}`)).status, 200);
    assert.equal((await get(`${base}/${id}`, key)).status, 200);
    assert.equal((await get(`${base}/${id}/upload`)).status, 401);
    assert.equal((await get(`${base}/${id}/upload`, key)).status, 200);

    const body = JSON.stringify({ title: "Mine" });
    const asJson = { "content-type": "application/json" };
    assert.equal((await rename(server.url, id, body, asJson)).status, 401);
    assert.equal(
      (await rename(server.url, id, body, {
        ...asJson,
        "x-upload-token": other.token,
      })).status,
      401,
    );
    assert.equal(
      (await rename(server.url, id, body, {
        ...asJson,
        "x-upload-token": token,
      }))
        .status,
      200,
    );
    assert.equal(
      (await rename(server.url, other.id, body, { ...asJson, ...key }))
        .status,
      200,
    );

    const del = async (headers: Record<string, string>, which = id) =>
      await json(
        await fetch(`${base}/${which}`, { method: "DELETE", headers }),
      );
    assert.equal((await del({})).status, 401);
    assert.equal((await del({ "x-upload-token": other.token })).status, 401);
    const ok = await del({ "x-upload-token": token });
    assert.equal(ok.status, 200);
    assert.match(String(ok.body.message), /deleted/);
    assert.equal((await get(`${base}/${id}`, key)).status, 404);
    assert.equal((await del({ "x-upload-token": token })).status, 404);
    assert.equal((await del(key, other.id)).status, 200);
    assert.deepEqual((await get(base, key)).body.recordings, []);
  } finally {
    await server.close();
  }
});

Deno.test("library api: with no credentials configured, renaming needs none but deleting needs the token", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const { id, token } = await create(server.url);
    const renamed = await rename(
      server.url,
      id,
      JSON.stringify({ title: "Anyone may" }),
    );
    assert.equal(renamed.status, 200);
    const denied = await fetch(`${server.url}/api/recordings/${id}`, {
      method: "DELETE",
    });
    assert.equal(denied.status, 401);
    assert.match((await denied.json()).error, /upload token/);
    const ok = await fetch(`${server.url}/api/recordings/${id}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const cors = await fetch(`${server.url}/api/recordings`, {
      method: "OPTIONS",
      headers: {
        origin: "https://elsewhere.example",
        "access-control-request-method": "PATCH",
      },
    });
    assert.equal(cors.status, 204);
    assert.equal(cors.headers.get("access-control-allow-origin"), "*");
    await cors.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test({
  name:
    "library api: deleting a recording while it is processing stops the job and removes its files, chunks and records",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    try {
      const tmp = await Deno.makeTempFile({ suffix: ".webm" });
      // VP8 is re-encoded: processing takes long enough to delete midway.
      const bytes = await makeRecording(tmp, { codec: "vp8", seconds: 12 });
      await Deno.remove(tmp);
      const { id, token } = await create(server.url, {
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ title: "Doomed" }),
      });
      const pieces = splitBytes(bytes, [300_000]);
      for (const [i, piece] of pieces.entries()) {
        const res = await fetch(`${server.url}/add_data/${id}/`, {
          method: "POST",
          body: piece,
          headers: { "x-chunk-index": String(i) },
        });
        assert.equal(res.status, 200, await res.text());
      }
      const done = await fetch(
        `${server.url}/complete_job/${id}/?last_chunk=${pieces.length - 1}`,
        { method: "POST" },
      );
      assert.equal(done.status, 200);
      await done.body?.cancel();
      const deadline = Date.now() + 20_000;
      let stage = "";
      while (Date.now() < deadline) {
        const st = await (await fetch(`${server.url}/check_status/${id}/`))
          .json();
        stage = st.stage ?? st.status;
        if (st.status === "processing" && st.progress > 0.05) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(
        (await get(`${server.url}/api/recordings/${id}`)).body.status,
        "processing",
        `the job should still run (${stage})`,
      );
      const del = await fetch(`${server.url}/api/recordings/${id}`, {
        method: "DELETE",
        headers: { "x-upload-token": token },
      });
      assert.equal(del.status, 200, await del.text());
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(
        await exists(join(server.dataDir, "recordings", id)),
        false,
        "the recording's folder is gone",
      );
      const kv = server.service.ctx.kv;
      for (
        const prefix of [
          ["chunk", id],
          ["job", id],
          ["recording", id],
        ]
      ) {
        const left = [];
        for await (const e of kv.list({ prefix })) left.push(e.key);
        assert.deepEqual(left, [], `${prefix.join("/")} entries remain`);
      }
      for (const prefix of ["recording_by_word", "recording_by_status"]) {
        const left = [];
        for await (const e of kv.list({ prefix: [prefix] })) {
          if (e.key.at(-1) === id) left.push(e.key);
        }
        assert.deepEqual(left, [], `${prefix} entries remain`);
      }
      assert.equal(
        (await fetch(`${server.url}/media/${id}/${id}.mp4`)).status,
        404,
      );
      const status = await fetch(`${server.url}/check_status/${id}/`);
      assert.equal(status.status, 404);
      await status.body?.cancel();
      assert.deepEqual(
        (await get(`${server.url}/api/recordings?q=doomed`)).body.recordings,
        [],
      );
    } finally {
      await server.close();
    }
  },
});
