import assert from "node:assert/strict";
import { buildAssets } from "../tools/build_assets.ts";
import {
  createSession,
  makeRecording,
  missingTool,
  sendChunk,
  splitBytes,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

async function getPage(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ res: Response; html: string }> {
  const res = await fetch(url, { headers });
  return { res, html: await res.text() };
}

function assertHtml(res: Response, status = 200): void {
  assert.equal(res.status, status);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = res.headers.get("content-security-policy") ?? "";
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
}

/** Every script is the hashed bundle or JSON data; no inline handlers or styles. */
function assertNoInlineCode(html: string): void {
  const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
  assert.ok(scripts.length > 0);
  for (const [, attrs, body] of scripts) {
    if (/type="application\/json"/.test(attrs)) {
      JSON.parse(body.replace(/&quot;/g, '"'));
      continue;
    }
    assert.match(
      attrs,
      /^ type="module" src="\/static\/build\/[0-9a-f]{20}\.js"$/,
    );
    assert.equal(body, "");
  }
  assert.doesNotMatch(html, /\son[a-z]+=/i, "inline event handler");
  assert.doesNotMatch(html, /\sstyle=/i, "inline style attribute");
}

function rowIds(html: string): string[] {
  return [...html.matchAll(/<tr data-id="([0-9a-f-]{36})"/g)].map((m) => m[1]);
}

async function completedRecording(server: TestServer): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-pages-" });
  try {
    const bytes = await makeRecording(`${dir}/in.webm`, { seconds: 3 });
    const id = await createSession(server.url);
    for (const [i, piece] of splitBytes(bytes, [50_000]).entries()) {
      const res = await sendChunk(server.url, id, piece, i);
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
    const done = await fetch(`${server.url}/complete_job/${id}/`, {
      method: "POST",
    });
    await done.body?.cancel();
    assert.equal((await waitForStatus(server.url, id)).status, "complete");
    return id;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("pages: the dashboard lists recordings newest first with cursor paging, all in the server HTML", async () => {
  const server = await startTestServer();
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push(await createSession(server.url));
      await new Promise((r) => setTimeout(r, 5));
    }
    const first = await getPage(`${server.url}/?limit=2`);
    assertHtml(first.res);
    assertNoInlineCode(first.html);
    assert.deepEqual(rowIds(first.html), [ids[2], ids[1]]);
    assert.match(first.html, /data-island="dashboard"/);
    assert.match(first.html, new RegExp(`href="/videos/${ids[2]}"`));
    assert.match(
      first.html,
      /<span class="badge badge-recording" data-status="recording">recording<\/span>/,
    );
    for (
      const label of [
        "Received",
        "Chunks",
        "Last chunk",
        "Duration",
        "Progress",
        "Error",
      ]
    ) {
      assert.match(
        first.html,
        new RegExp(`<th scope="col"[^>]*>${label}</th>`),
      );
    }
    const older = first.html.match(
      /href="(\/\?limit=2&amp;cursor=[^"]+)" rel="next"/,
    );
    assert.ok(older, "a full page links to the older one");

    const second = await getPage(
      `${server.url}${older[1].replace(/&amp;/g, "&")}`,
    );
    assertHtml(second.res);
    assert.deepEqual(rowIds(second.html), [ids[0]]);
    assert.doesNotMatch(second.html, /rel="next"/);
    assert.match(second.html, /href="\/\?limit=2">← Newest/);

    const bad = await getPage(`${server.url}/?cursor=garbage!!`);
    assertHtml(bad.res, 400);
    assert.match(bad.html, /cursor is not valid/);
    const badLimit = await getPage(`${server.url}/?limit=0`);
    assertHtml(badLimit.res, 400);
  } finally {
    await server.close();
  }
});

Deno.test("pages: the dashboard of an empty service says so and links to the recorder", async () => {
  const server = await startTestServer();
  try {
    const { res, html } = await getPage(`${server.url}/`);
    assertHtml(res);
    assert.match(html, /<p class="empty" id="empty">No recordings yet\./);
    assert.match(html, /<a href="\/record">Record one<\/a>/);
    assert.deepEqual(rowIds(html), []);
  } finally {
    await server.close();
  }
});

Deno.test({
  name:
    "pages: a recording's page shows counters and the live player while recording and, once complete, a player, files and media facts",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    try {
      const live = await createSession(server.url);
      const dir = await Deno.makeTempDir({ prefix: "tapedeck-pages-" });
      const bytes = await makeRecording(`${dir}/in.webm`, { seconds: 1 });
      await Deno.remove(dir, { recursive: true });
      const res = await sendChunk(server.url, live, bytes, 0);
      await res.body?.cancel();
      const recording = await getPage(`${server.url}/videos/${live}`);
      assertHtml(recording.res);
      assertNoInlineCode(recording.html);
      assert.match(recording.html, /data-island="recording_detail"/);
      assert.match(
        recording.html,
        /<article class="detail" data-id="[^"]+" data-status="recording">/,
      );
      assert.match(recording.html, /<dd data-field="chunks">1<\/dd>/);
      assert.match(recording.html, /id="recording-notice"/);
      // While recording, the live player (issue 15), not the finished one.
      assert.match(recording.html, /<section class="live-view" id="live-view"/);
      assert.match(recording.html, /<video [^>]*id="live-player"/);
      assert.doesNotMatch(recording.html, /<source src="\/media\//);
      assert.doesNotMatch(recording.html, /download="/);

      const id = await completedRecording(server);
      const done = await getPage(`${server.url}/videos/${id}/`);
      assertHtml(done.res);
      const video = done.html.match(/<video [^>]*>([\s\S]*?)<\/video>/);
      assert.ok(video, "a complete recording has a player");
      assert.match(video[0], new RegExp(`poster="/media/${id}/${id}\\.jpg"`));
      const sources = [
        ...video[1].matchAll(/<source src="([^"]+)" type="([^"]+)"/g),
      ]
        .map((m) => [m[1], m[2]]);
      assert.deepEqual(sources, [
        [`/media/${id}/${id}.mp4`, "video/mp4"],
        [`/media/${id}/${id}.webm`, "video/webm"],
      ]);
      const downloads = [
        ...done.html.matchAll(/<a href="([^"]+)" download="[^"]+">/g),
      ]
        .map((m) => m[1]);
      assert.deepEqual(downloads.sort(), [
        `/media/${id}/${id}.jpg`,
        `/media/${id}/${id}.mp4`,
        `/media/${id}/${id}.webm`,
      ]);
      for (const href of downloads) {
        const file = await fetch(`${server.url}${href}`, { method: "HEAD" });
        assert.equal(file.status, 200, href);
      }
      const facts = done.html.match(
        /<dl class="facts" id="media-facts">([\s\S]*?)<\/dl>/,
      );
      assert.ok(facts);
      assert.match(facts[1], /<dt>Duration<\/dt><dd>3\.0 s<\/dd>/);
      assert.match(facts[1], /<dt>Resolution<\/dt><dd>320 × 240<\/dd>/);
      assert.match(facts[1], /<dt>Video codec<\/dt><dd>vp9<\/dd>/);
      assert.match(facts[1], /<dt>Audio codec<\/dt><dd>opus/);
      assert.match(facts[1], /<dt>Size<\/dt><dd>[\d.]+ KB in 3 files<\/dd>/);
    } finally {
      await server.close();
    }
  },
});

Deno.test("pages: a recording's page is an HTML 404 for malformed and unknown ids", async () => {
  const server = await startTestServer();
  try {
    for (const id of ["not-a-uuid", crypto.randomUUID(), "%3Cscript%3E"]) {
      const { res, html } = await getPage(`${server.url}/videos/${id}`);
      assertHtml(res, 404);
      assert.match(html, /<h1>Not found<\/h1>/);
      assert.doesNotMatch(html, /<script>/);
    }
  } finally {
    await server.close();
  }
});

Deno.test("pages: the recorder offers camera, screen and this tab, with the microphone", async () => {
  const server = await startTestServer();
  try {
    const { res, html } = await getPage(`${server.url}/record`);
    assertHtml(res);
    assertNoInlineCode(html);
    assert.match(html, /data-island="recorder"/);
    for (const source of ["camera", "screen", "tab"]) {
      assert.match(
        html,
        new RegExp(`<input type="radio" name="source" id="source-${source}"`),
      );
    }
    assert.match(html, />This tab</);
    assert.match(html, /<input type="checkbox" name="mic" id="mic" checked/);
    assert.match(html, /<button type="submit" id="start"/);
    assert.match(
      html,
      /<script type="application\/json" id="island-props-recorder">\{"timesliceMs":1000\}<\/script>/,
    );
    assert.match(html, /<noscript>/);
  } finally {
    await server.close();
  }
});

Deno.test({
  name: "pages: island props cannot break out of their JSON script element",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    try {
      const dir = await Deno.makeTempDir({ prefix: "tapedeck-pages-" });
      const bytes = await makeRecording(`${dir}/in.webm`, { seconds: 1 });
      await Deno.remove(dir, { recursive: true });
      const id = await createSession(server.url);
      const res = await fetch(`${server.url}/add_data/${id}/`, {
        method: "POST",
        body: bytes,
        headers: {
          "content-type": "video/webm;x=</script><script>alert(1)</script>",
        },
      });
      assert.equal(res.status, 200);
      await res.body?.cancel();
      for (const path of [`/videos/${id}`, "/"]) {
        const page = await getPage(`${server.url}${path}`);
        assertHtml(page.res);
        assert.doesNotMatch(page.html, /<script>alert/);
        assertNoInlineCode(page.html);
      }
      const detail = await getPage(`${server.url}/videos/${id}`);
      const json = detail.html.match(
        /<script type="application\/json" id="island-props-recording_detail">([\s\S]*?)<\/script>/,
      );
      assert.ok(json);
      assert.equal(
        JSON.parse(json[1]).recording.mimeType,
        "video/webm;x=</script><script>alert(1)</script>",
      );
    } finally {
      await server.close();
    }
  },
});

Deno.test("pages: with API keys set, the dashboard, recorder and live list need a key; static files do not", async () => {
  const server = await startTestServer({ API_KEYS: "k-123" });
  try {
    for (const path of ["/", "/record"]) {
      const denied = await getPage(`${server.url}${path}`);
      assertHtml(denied.res, 401);
      assert.match(denied.html, /API key is required/);
      const allowed = await getPage(`${server.url}${path}`, {
        "x-api-key": "k-123",
      });
      assertHtml(allowed.res);
      // A cookie holding the raw key is not a session (it used to be accepted).
      const rawKey = await getPage(`${server.url}${path}`, {
        cookie: "tapedeck_key=k-123",
      });
      assertHtml(rawKey.res, 401);
      const login = await fetch(`${server.url}/login`, {
        method: "POST",
        body: new URLSearchParams({ key: "k-123" }),
        redirect: "manual",
      });
      await login.body?.cancel();
      const cookie = await getPage(`${server.url}${path}`, {
        cookie: (login.headers.get("set-cookie") ?? "").split(";")[0],
      });
      assertHtml(cookie.res);
    }
    const ws = { upgrade: "websocket", connection: "Upgrade" };
    const socket = await fetch(`${server.url}/ws`, { headers: ws });
    assert.equal(socket.status, 401);
    assert.match(socket.headers.get("content-type") ?? "", /application\/json/);
    assert.match((await socket.json()).error, /API key/);
    const { html } = await getPage(`${server.url}/`, { "x-api-key": "k-123" });
    const script = html.match(/<script type="module" src="([^"]+)"/)![1];
    const js = await fetch(`${server.url}${script}`);
    assert.equal(js.status, 200);
    await js.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("pages: /static serves the hashed bundle and stylesheet for a year and nothing outside static/", async () => {
  const server = await startTestServer();
  try {
    const { html } = await getPage(`${server.url}/`);
    const script = html.match(/<script type="module" src="([^"]+)"/)![1];
    const style = html.match(/<link rel="stylesheet" href="([^"]+)"/)![1];

    const js = await fetch(`${server.url}${script}`);
    assert.equal(js.status, 200);
    assert.equal(
      js.headers.get("content-type"),
      "text/javascript; charset=utf-8",
    );
    assert.equal(
      js.headers.get("cache-control"),
      "public, max-age=31536000, immutable",
    );
    const code = await js.text();
    assert.match(code, /data-island|dataset/);
    assert.doesNotMatch(code, /Deno\./, "server code leaked into the bundle");

    const css = await fetch(`${server.url}${style}`);
    assert.equal(css.status, 200);
    assert.equal(css.headers.get("content-type"), "text/css; charset=utf-8");
    assert.match(await css.text(), /\.recordings/);

    const plain = await fetch(`${server.url}/static/style.css`);
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get("cache-control"), "no-cache");
    await plain.body?.cancel();

    for (
      const path of [
        "/static/%2e%2e/main.ts",
        "/static/..%2fdeno.json",
        "/static/nope.css",
        "/static/build/.x.js",
      ]
    ) {
      const res = await fetch(`${server.url}${path}`);
      assert.equal(res.status, 404, path);
      await res.body?.cancel();
    }
  } finally {
    await server.close();
  }
});

Deno.test("pages: the asset build names files by content hash and reuses a build whose inputs did not change", async () => {
  const first = await buildAssets();
  const again = await buildAssets();
  assert.deepEqual(again, first);
  assert.deepEqual(first.islands, [
    "dashboard",
    "recorder",
    "recording_detail",
  ]);
  const root = new URL("../static/build/", import.meta.url);
  for (const url of [first.script!, first.style]) {
    const name = url.split("/").pop()!;
    const bytes = await Deno.readFile(new URL(name, root));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(
      "",
    );
    assert.equal(name.split(".")[0], hex.slice(0, 20));
  }
});

Deno.test("pages: with API keys set, /login checks the key and sets an HttpOnly cookie the dashboard accepts", async () => {
  const server = await startTestServer({
    RUN_WORKER: "false",
    API_KEYS: "sesame",
  });
  try {
    const denied = await fetch(`${server.url}/`);
    assert.equal(denied.status, 401);
    assert.match(await denied.text(), /href="\/login"/);

    const form = await fetch(`${server.url}/login`);
    assert.equal(form.status, 200);
    assert.match(form.headers.get("content-type") ?? "", /text\/html/);
    assert.match(await form.text(), /<form method="post" action="\/login"/);

    const wrong = await fetch(`${server.url}/login`, {
      method: "POST",
      body: new URLSearchParams({ key: "open" }),
      redirect: "manual",
    });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers.get("set-cookie"), null);
    assert.match(await wrong.text(), /not valid/);

    const right = await fetch(`${server.url}/login`, {
      method: "POST",
      body: new URLSearchParams({ key: "sesame" }),
      redirect: "manual",
    });
    assert.equal(right.status, 303);
    await right.body?.cancel();
    const cookie = right.headers.get("set-cookie") ?? "";
    // A signed session, not the key itself (the cookie used to hold the key).
    assert.match(cookie, /^tapedeck_key=v1\.[^;]+;/);
    assert.doesNotMatch(cookie, /sesame/);
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);

    const allowed = await fetch(`${server.url}/`, {
      headers: { cookie: cookie.split(";")[0] },
    });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers.get("x-content-type-options"), "nosniff");
    await allowed.body?.cancel();

    const huge = await fetch(`${server.url}/login`, {
      method: "POST",
      body: new URLSearchParams({ key: "x".repeat(20_000) }),
    });
    assert.equal(huge.status, 413);
    await huge.body?.cancel();
  } finally {
    await server.close();
  }
});
