/**
 * Issue 12, findings 1, 4, 8 and 10 over HTTP (the browser side of finding
 * 1 is tests/browser_cross_origin_test.ts; finding 7 is
 * tests/slow_guard_test.ts):
 * - the Host allow-list stops DNS rebinding (421), ALLOWED_HOSTS widens it;
 * - CORS answers the API only: pages never, media and live sockets only
 *   for origins CORS_ORIGINS names;
 * - tus DELETE needs the recording's upload token or an API key, except for
 *   a tus upload still recording while the id is its capability;
 * - live sockets are capped per client address and in total (503), and a
 *   change reaches only the sockets whose scope holds it;
 * - a malformed login cookie is a 401 without a stack trace; the login
 *   cookie is a signed, expiring session (not the key), Secure behind
 *   TRUST_PROXY with X-Forwarded-Proto: https, and dies with its key.
 */

import assert from "node:assert/strict";
import { loadConfig } from "../lib/core/config.ts";
import { closeContext, openContext } from "../lib/core/context.ts";
import type { Recording } from "../lib/kv/keys.ts";
import { LiveHub } from "../lib/live/hub.ts";
import { createApp } from "../main.ts";
import { openSocket, type TestSocket, wsUrl } from "./browser_helpers.ts";
import {
  createSession,
  expectError,
  mediaBytes,
  sendChunk,
  withServer,
} from "./helpers.ts";

const TUS = { "tus-resumable": "1.0.0" };
const UPGRADE = {
  upgrade: "websocket",
  connection: "Upgrade",
  "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
  "sec-websocket-version": "13",
};

/** One request over raw TCP (fetch does not let a test choose the Host). */
async function rawRequest(
  url: string,
  head: string,
): Promise<{ status: number; headers: string; body: string }> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    await conn.write(new TextEncoder().encode(head));
    let text = "";
    const buf = new Uint8Array(16 * 1024);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
      const end = text.indexOf("\r\n\r\n");
      const length = /content-length: (\d+)/i.exec(text)?.[1];
      if (end >= 0 && length && text.length >= end + 4 + Number(length)) break;
    }
    const end = text.indexOf("\r\n\r\n");
    return {
      status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0),
      headers: text.slice(0, end),
      body: text.slice(end + 4),
    };
  } finally {
    conn.close();
  }
}

function get(path: string, host: string, extra = ""): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`;
}

// ------------------------------------------------------------ finding 1

Deno.test("security: a request for Host evil.example (DNS rebinding) gets a JSON 421 on the API, the pages and /ws", async () => {
  await withServer({}, async ({ url }) => {
    const id = await createSession(url);
    for (
      const path of ["/", `/check_status/${id}/`, `/videos/${id}`, "/ws"]
    ) {
      const res = await rawRequest(
        url,
        get(path, "evil.example:8000", path === "/ws" ? upgradeHead() : ""),
      );
      assert.equal(res.status, 421, `${path}: ${res.body}`);
      assert.match(res.headers, /content-type: application\/json/i);
      const error = JSON.parse(res.body).error;
      assert.match(error, /evil\.example.*ALLOWED_HOSTS/);
      assert.doesNotMatch(error, /\s+at\s+\S+:\d+:\d+/);
    }
    const post = await rawRequest(
      url,
      `POST /create/ HTTP/1.1\r\nHost: rebind.attacker.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(post.status, 421);
    // Names an attacker cannot point here are answered.
    for (
      const host of [
        "127.0.0.1:8000",
        "localhost:8000",
        "app.localhost",
        "[::1]:8000",
        "192.168.1.20:8000",
        "nas",
        Deno.hostname(),
      ]
    ) {
      const res = await rawRequest(url, get(`/check_status/${id}/`, host));
      assert.equal(res.status, 200, `${host}: ${res.body}`);
    }
  });
});

function upgradeHead(): string {
  return Object.entries(UPGRADE).map(([k, v]) => `${k}: ${v}\r\n`).join("");
}

Deno.test("security: ALLOWED_HOSTS lets a name through (also as a suffix), and * turns the check off", async () => {
  await withServer(
    { ALLOWED_HOSTS: "evil.example, .rec.example" },
    async ({ url }) => {
      const id = await createSession(url);
      for (const host of ["evil.example", "rec.example", "a.rec.example"]) {
        const res = await rawRequest(url, get(`/check_status/${id}/`, host));
        assert.equal(res.status, 200, host);
      }
      const other = await rawRequest(url, get("/", "other.example"));
      assert.equal(other.status, 421);
    },
  );
  await withServer({ ALLOWED_HOSTS: "*" }, async ({ url }) => {
    const res = await rawRequest(url, get("/", "evil.example"));
    assert.equal(res.status, 200);
  });
});

Deno.test("security: CORS answers the API (any origin by default) but never the pages; media only for named origins", async () => {
  await withServer({}, async ({ url }) => {
    const origin = { origin: "https://other.example" };
    const id = await createSession(url);
    const api = await fetch(`${url}/check_status/${id}/`, { headers: origin });
    assert.equal(api.headers.get("access-control-allow-origin"), "*");
    await api.body?.cancel();
    for (const path of ["/", `/videos/${id}`, "/record", "/login"]) {
      const page = await fetch(`${url}${path}`, { headers: origin });
      assert.equal(page.headers.get("access-control-allow-origin"), null, path);
      await page.body?.cancel();
      const pre = await fetch(`${url}${path}`, {
        method: "OPTIONS",
        headers: { ...origin, "access-control-request-method": "GET" },
      });
      assert.equal(pre.headers.get("access-control-allow-origin"), null, path);
      await pre.body?.cancel();
    }
    const media = await fetch(`${url}/media/${id}/source`, { headers: origin });
    assert.equal(media.headers.get("access-control-allow-origin"), null);
    await media.body?.cancel();
    const tus = await fetch(`${url}/files/`, {
      method: "OPTIONS",
      headers: { ...origin, "access-control-request-method": "POST" },
    });
    assert.equal(tus.headers.get("access-control-allow-origin"), "*");
    await tus.body?.cancel();
    // A live socket from another origin: CORS_ORIGINS=* does not let it in.
    await expectError(
      await fetch(`${url}/ws`, { headers: { ...UPGRADE, ...origin } }),
      403,
      /CORS_ORIGINS/,
    );
  });
  await withServer(
    { CORS_ORIGINS: "*, https://app.example" },
    async ({ url }) => {
      const id = await createSession(url);
      const named = await fetch(`${url}/media/${id}/source`, {
        headers: { origin: "https://app.example" },
      });
      assert.equal(
        named.headers.get("access-control-allow-origin"),
        "https://app.example",
      );
      await named.body?.cancel();
      const other = await fetch(`${url}/media/${id}/source`, {
        headers: { origin: "https://other.example" },
      });
      assert.equal(other.headers.get("access-control-allow-origin"), null);
      await other.body?.cancel();
      const socket = await fetch(`${url}/ws`, {
        headers: { ...UPGRADE, origin: "https://app.example" },
      });
      assert.equal(socket.status, 101);
      await socket.body?.cancel();
    },
  );
});

// ------------------------------------------------------------ finding 4

async function tusCreate(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ location: string; id: string; token: string }> {
  const res = await fetch(`${url}/files/`, {
    method: "POST",
    headers: { ...TUS, "upload-defer-length": "1", ...headers },
  });
  assert.equal(res.status, 201, await res.text());
  return {
    location: res.headers.get("location")!,
    id: res.headers.get("x-video-id")!,
    token: res.headers.get("x-upload-token")!,
  };
}

async function tusDelete(
  url: string,
  id: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  return await fetch(`${url}/files/${id}`, {
    method: "DELETE",
    headers: { ...TUS, ...headers },
  });
}

Deno.test("security: tus DELETE of a /create/ recording or a finished upload needs its upload token (tokens off)", async () => {
  await withServer({}, async ({ url }) => {
    // A /create/ recording, completed: its id alone does not delete it.
    const made = await (await fetch(`${url}/create/`, { method: "POST" }))
      .json();
    await (await sendChunk(url, made.video_id, mediaBytes(500))).body
      ?.cancel();
    await (await fetch(`${url}/complete_job/${made.video_id}/`, {
      method: "POST",
    })).body?.cancel();
    await expectError(
      await tusDelete(url, made.video_id),
      401,
      /upload token.*API key/,
    );
    await expectError(
      await tusDelete(url, made.video_id, { "x-upload-token": "nope" }),
      401,
    );
    const status = await fetch(`${url}/check_status/${made.video_id}/`);
    assert.equal(status.status, 200, "still there");
    await status.body?.cancel();
    const ok = await tusDelete(url, made.video_id, {
      "x-upload-token": made.upload_token,
    });
    assert.equal(ok.status, 204);
    await expectError(
      await fetch(`${url}/check_status/${made.video_id}/`),
      404,
    );

    // A /create/ recording still recording is not a tus upload either.
    const open = await createSession(url);
    await expectError(await tusDelete(url, open), 401);

    // A tus upload still recording: its client may abandon it by id.
    const up = await tusCreate(url);
    const del = await tusDelete(url, up.id);
    assert.equal(del.status, 204);
    await del.body?.cancel();

    // A tus upload that reached its length (completed): token needed.
    const done = await tusCreate(url);
    const body = mediaBytes(300);
    const patch = await fetch(`${url}${done.location}`, {
      method: "PATCH",
      headers: {
        ...TUS,
        "content-type": "application/offset+octet-stream",
        "upload-offset": "0",
        "upload-length": String(body.length),
      },
      body,
    });
    assert.equal(patch.status, 204, await patch.text());
    await expectError(await tusDelete(url, done.id), 401);
    const byToken = await tusDelete(url, done.id, {
      "x-upload-token": done.token,
    });
    assert.equal(byToken.status, 204);
    await byToken.body?.cancel();
    await expectError(await tusDelete(url, crypto.randomUUID()), 404);
  });
});

Deno.test("security: with API keys and private recordings but no tokens, only a key or the token deletes", async () => {
  await withServer(
    { API_KEYS: "k1", PRIVATE_RECORDINGS: "true" },
    async ({ url }) => {
      const up = await tusCreate(url, { "x-api-key": "k1" });
      // Someone who cannot view it cannot delete it, even while it records.
      await expectError(
        await fetch(`${url}/check_status/${up.id}/`),
        401,
        /private/,
      );
      await expectError(await tusDelete(url, up.id), 401);
      const byKey = await tusDelete(url, up.id, { "x-api-key": "k1" });
      assert.equal(byKey.status, 204);
      await byKey.body?.cancel();
      const other = await tusCreate(url, { "x-api-key": "k1" });
      const byToken = await tusDelete(url, other.id, {
        "x-upload-token": other.token,
      });
      assert.equal(byToken.status, 204);
      await byToken.body?.cancel();
    },
  );
});

// ------------------------------------------------------------ finding 8

Deno.test("security: live sockets are capped per client address and in total with a 503 before the upgrade", async () => {
  await withServer(
    { WS_MAX_PER_CLIENT: "2", WS_MAX_TOTAL: "3", TRUST_PROXY: "true" },
    async ({ url }) => {
      const id = await createSession(url);
      const open = (from: string) =>
        openSocketFrom(wsUrl(url, `/ws/${id}`), from);
      const a1 = await open("203.0.113.1");
      const a2 = await open("203.0.113.1");
      const refused = await fetch(`${url}/ws/${id}`, {
        headers: { ...UPGRADE, "x-forwarded-for": "203.0.113.1" },
      });
      assert.ok(refused.headers.get("retry-after"));
      await expectError(refused, 503, /203\.0\.113\.1.*WS_MAX_PER_CLIENT/);
      const b1 = await open("198.51.100.7");
      await expectError(
        await fetch(`${url}/ws/${id}`, {
          headers: { ...UPGRADE, "x-forwarded-for": "198.51.100.8" },
        }),
        503,
        /WS_MAX_TOTAL/,
      );
      // A closed socket frees its place.
      await closeSocket(a1);
      await eventuallyOk(async () => {
        const again = await fetch(`${url}/ws/${id}`, {
          headers: { ...UPGRADE, "x-forwarded-for": "198.51.100.8" },
        });
        await again.body?.cancel();
        return again.status === 101;
      });
      for (const s of [a2, b1]) await closeSocket(s);
    },
  );
});

async function eventuallyOk(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("did not happen in 5 s");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A socket opened as if from `address` (X-Forwarded-For, TRUST_PROXY). */
async function openSocketFrom(
  url: string,
  address: string,
): Promise<WebSocket> {
  const ws = new WebSocket(
    url,
    { headers: { "x-forwarded-for": address } } as unknown as string[],
  );
  await new Promise((resolve, reject) => {
    ws.onmessage = resolve;
    ws.onerror = () => reject(new Error(`${address} was refused`));
  });
  return ws;
}

async function closeSocket(ws: WebSocket): Promise<void> {
  const closed = new Promise((r) => ws.onclose = r);
  ws.close();
  await closed;
}

/**
 * Counts the hub's listener calls, whichever way sockets subscribe
 * (`subscribe` before the fix, `follow` after).
 */
function countDeliveries(hub: LiveHub): { calls: number } {
  const counter = { calls: 0 };
  const h = hub as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of ["subscribe", "follow"]) {
    const original = h[name];
    if (typeof original !== "function") continue;
    h[name] = (...args: unknown[]) => {
      const listener = args.at(-1) as (rec: Recording) => void;
      args[args.length - 1] = (rec: Recording) => {
        counter.calls++;
        listener(rec);
      };
      return original.apply(hub, args);
    };
  }
  return counter;
}

Deno.test("security: a change reaches the sockets whose scope holds it and no others", async () => {
  await withServer({ WS_MAX_PER_CLIENT: "100" }, async ({ url, service }) => {
    const counter = countDeliveries(service.ctx.live);
    const a = await createSession(url);
    const b = await createSession(url);
    const idle: TestSocket[] = [];
    for (let i = 0; i < 30; i++) {
      const s = await openSocket(wsUrl(url, `/ws/${b}`));
      assert.equal((await s.next()).type, "snapshot");
      idle.push(s);
    }
    // An older page of the dashboard that shows only b.
    const page2 = await openSocket(wsUrl(url, "/ws?limit=1"));
    const first = await page2.next();
    assert.equal(first.type, "snapshot");
    await page2.close();
    const older = await openSocket(
      wsUrl(
        url,
        `/ws?limit=1&cursor=${
          encodeURIComponent((first as { cursor: string }).cursor)
        }`,
      ),
    );
    assert.equal((await older.next()).type, "snapshot");
    const watcher = await openSocket(wsUrl(url, `/ws/${a}`));
    assert.equal((await watcher.next()).type, "snapshot");
    const before = counter.calls;
    await (await sendChunk(url, a, mediaBytes(100), 0)).body?.cancel();
    const change = await watcher.next();
    assert.equal(change.type, "change");
    // Only a's socket and the older page (which shows a) were called.
    const calls = counter.calls - before;
    console.log(`listener calls for one change with 33 sockets open: ${calls}`);
    assert.equal(calls, 2);
    await new Promise((r) => setTimeout(r, 100));
    for (const s of idle) assert.equal(s.received.length, 1, "only a snapshot");
    for (const s of [...idle, older, watcher]) await s.close();
  });
});

Deno.test("security: the hub indexes subscribers by recording and creation time", () => {
  const hub = new LiveHub();
  const got: string[] = [];
  const rec = (id: string, createdAt: number) =>
    ({ id, createdAt }) as unknown as Recording;
  const offA = hub.follow({ ids: ["a"] }, (r) => got.push(`a:${r.id}`));
  hub.follow(
    { ids: ["b"], createdSince: 100 },
    (r) => got.push(`page:${r.id}`),
  );
  hub.subscribe((r) => got.push(`all:${r.id}`));
  hub.publish(rec("a", 50));
  hub.publish(rec("b", 50));
  hub.publish(rec("c", 150));
  hub.publish(rec("d", 20));
  assert.deepEqual(got, [
    "all:a",
    "a:a",
    "all:b",
    "page:b",
    "all:c",
    "page:c",
    "all:d",
  ]);
  assert.equal(hub.deliveries, 7);
  assert.equal(hub.size, 3);
  offA();
  offA();
  assert.equal(hub.size, 2);
});

// ------------------------------------------------------------ finding 10

Deno.test("security: a malformed login cookie is a 401 (JSON for the API, the login link for pages), never a 500", async () => {
  await withServer({ API_KEYS: "k1" }, async ({ url }) => {
    const bad = { cookie: "tapedeck_key=%" };
    await expectError(
      await fetch(`${url}/create/`, { method: "POST", headers: bad }),
      401,
      /login cookie is not valid/,
    );
    const ws = await fetch(`${url}/ws`, { headers: { ...UPGRADE, ...bad } });
    await expectError(ws, 401);
    const page = await fetch(`${url}/`, { headers: bad });
    assert.equal(page.status, 401);
    const html = await page.text();
    assert.match(html, /href="\/login"/);
    assert.doesNotMatch(html, /\s+at\s+\S+:\d+:\d+/);
    for (const cookie of ["tapedeck_key=%E0%A4%A", "tapedeck_key=v1.x.y.z"]) {
      await expectError(
        await fetch(`${url}/create/`, { method: "POST", headers: { cookie } }),
        401,
      );
    }
  });
  await withServer({}, async ({ url }) => {
    // Without API keys the cookie is not read at all.
    const res = await fetch(`${url}/`, {
      headers: { cookie: "tapedeck_key=%" },
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  });
});

async function logIn(
  url: string,
  key: string,
  headers: Record<string, string> = {},
): Promise<string> {
  const res = await fetch(`${url}/login`, {
    method: "POST",
    body: new URLSearchParams({ key }),
    headers,
    redirect: "manual",
  });
  await res.body?.cancel();
  assert.equal(res.status, 303);
  return res.headers.get("set-cookie") ?? "";
}

Deno.test("security: the login cookie is a signed session, not the key; Secure behind TRUST_PROXY with X-Forwarded-Proto: https", async () => {
  await withServer(
    { API_KEYS: "secret-key-1", TRUST_PROXY: "true" },
    async ({ url }) => {
      const plain = await logIn(url, "secret-key-1");
      assert.doesNotMatch(plain, /secret-key-1/);
      assert.match(plain, /HttpOnly/);
      assert.match(plain, /SameSite=Strict/);
      assert.match(plain, /Max-Age=\d+/);
      assert.doesNotMatch(plain, /Secure/);
      const behindTls = await logIn(url, "secret-key-1", {
        "x-forwarded-proto": "https",
      });
      assert.match(behindTls, /; Secure/);
      const session = plain.split(";")[0];
      const page = await fetch(`${url}/`, { headers: { cookie: session } });
      assert.equal(page.status, 200);
      await page.body?.cancel();
      // A session cannot be forged or stretched: any change breaks it.
      const [name, value] = session.split("=");
      const parts = value.split(".");
      parts[2] = String(Number(parts[2]) + 10_000_000);
      await expectError(
        await fetch(`${url}/create/`, {
          method: "POST",
          headers: { cookie: `${name}=${parts.join(".")}` },
        }),
        401,
      );
      const logout = await fetch(`${url}/logout`, { redirect: "manual" });
      assert.match(logout.headers.get("set-cookie") ?? "", /Max-Age=0/);
      await logout.body?.cancel();
      // A form posted from another site is refused (login CSRF).
      const csrf = await fetch(`${url}/login`, {
        method: "POST",
        body: new URLSearchParams({ key: "secret-key-1" }),
        headers: { origin: "https://evil.example" },
        redirect: "manual",
      });
      assert.equal(csrf.status, 403);
      assert.equal(csrf.headers.get("set-cookie"), null);
      await csrf.body?.cancel();
    },
  );
  await withServer({ API_KEYS: "k1" }, async ({ url }) => {
    // Without TRUST_PROXY the header is not believed.
    const cookie = await logIn(url, "k1", { "x-forwarded-proto": "https" });
    assert.doesNotMatch(cookie, /Secure/);
  });
});

Deno.test("security: sessions are shared by instances on one KV and die when their key is removed from API_KEYS", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-session-" });
  try {
    let session = "";
    await withServer(
      { DATA_DIR: dataDir, API_KEYS: "old-key,other-key" },
      async ({ url }) => {
        session = (await logIn(url, "old-key")).split(";")[0];
      },
    );
    // Another instance (same KV, same keys) accepts it.
    const ctx = await openContext(loadConfig({
      DATA_DIR: dataDir,
      MIN_FREE_BYTES: "0",
      RUN_WORKER: "false",
      API_KEYS: "old-key,other-key",
    }));
    try {
      const res = await createApp(ctx).request("http://127.0.0.1/", {
        headers: { cookie: session },
      });
      assert.equal(res.status, 200);
      await res.body?.cancel();
    } finally {
      await closeContext(ctx);
    }
    // The key is taken out of API_KEYS: its sessions stop working.
    await withServer(
      { DATA_DIR: dataDir, API_KEYS: "other-key" },
      async ({ url }) => {
        await expectError(
          await fetch(`${url}/create/`, {
            method: "POST",
            headers: { cookie: session },
          }),
          401,
          /login cookie is not valid/,
        );
      },
    );
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
