/**
 * Fuzz (GitHub issue #4, "Faults to survive"): thousands of malformed
 * requests from a seeded PRNG against a real `deno run main.ts` child while a
 * real recording is uploaded, completed and processed next to them.
 *
 * Every request is built to be wrong (unknown or malformed ids, wrong
 * methods, bad chunk indexes, broken bodies, bad content types, traversal
 * names, invalid UTF-8, huge or broken headers, bad request lines). Answers
 * on the API paths (and unknown paths) must be a 4xx JSON error with an
 * `error` sentence: never a 5xx, never HTML, never a stack trace. The web
 * pages (/, /record, /videos/, /static/) may answer HTML but never 5xx.
 * Requests that fetch refuses to send go over raw TCP; there a 4xx (any
 * body) or a closed connection is accepted. The session the fuzzer attacks
 * must end with no chunk stored, and the real upload must end byte-exact.
 *
 * Set FUZZ_SEED to replay a run.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type ChunkEntry, chunkPrefix } from "../lib/kv/keys.ts";
import {
  type ChildServer,
  createSession,
  makeRecording,
  missingTool,
  sendChunk,
  spawnServer,
  splitBytes,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";
import { seededRandom } from "./support/random.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const FETCH_REQUESTS = 3200;
const RAW_REQUESTS = 400;
const encoder = new TextEncoder();
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Gen {
  constructor(readonly next: () => number) {}
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  bytes(n: number): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    // Never a media header: a fuzzed body must not be a valid first chunk.
    if (n > 0 && out[0] === 0x1a) out[0] = 0x1b;
    if (n > 4 && out[4] === 0x66) out[4] = 0x67;
    return out;
  }
  text(n: number, alphabet = "abcxyz019-_.~%/:;@!$&'()*+,= "): string {
    const chars = [...alphabet];
    let s = "";
    for (let i = 0; i < n; i++) s += chars[this.int(chars.length)];
    return s;
  }
  uuid(): string {
    const h = () => this.int(16).toString(16);
    const part = (n: number) => Array.from({ length: n }, h).join("");
    return `${part(8)}-${part(4)}-4${part(3)}-${
      this.pick(["8", "9", "a", "b"])
    }${part(3)}-${part(12)}`;
  }
}

/** Ids that are not a live session's (unknown, malformed, hostile). */
function junkId(g: Gen): string {
  return g.pick([
    () => g.uuid(),
    () => g.uuid().toUpperCase(),
    () => g.uuid().replace(/-/g, ""),
    () => "00000000-0000-1000-8000-000000000000",
    () => "..",
    () => "%2e%2e",
    () => "..%2f..%2ftapedeck.kv",
    () => "%00",
    () => `${g.uuid()}%00`,
    () => `${g.uuid()}%00.mp4`,
    () => "%FF%FE%FD",
    () => "%C0%AE%C0%AE",
    () => "%E0%A4%A",
    () => "%zz",
    () => "%",
    () => "null",
    () => "-1",
    () => "0",
    () => "' OR 1=1 --",
    () => "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    () => "\u00e9\u00e8",
    () => "\u{1F600}",
    () => "a".repeat(g.pick([65, 300, 5000])),
    () => g.text(1 + g.int(40)),
    () =>
      encodeURIComponent(
        g.text(1 + g.int(20), "\u0000\u0001\u007f\u00ff\uFFFD/\\?#[]"),
      ),
  ])();
}

function junkName(g: Gen, id: string): string {
  return g.pick([
    () => `${id}.mp4`,
    () => `${id}.webm`,
    () => `${id}.jpg`,
    () => "..%2F..%2Ftapedeck.kv",
    () => "%2e%2e%2f%2e%2e%2ftapedeck.kv",
    () => "tapedeck.kv",
    () => "..",
    () => ".mp4",
    () => `${id}.mp4%00.txt`,
    () => "%00",
    () => "x".repeat(g.pick([201, 500, 3000])),
    () => "chunks",
    () => encodeURIComponent(g.text(1 + g.int(30), "./\\\u0000%~")),
    () => g.text(1 + g.int(30)),
  ])();
}

const CONTENT_TYPES = [
  "video/webm",
  "video/mp4",
  "application/json",
  "application/json; charset=utf-16",
  "multipart/form-data",
  "multipart/form-data; boundary=",
  'multipart/form-data; boundary="unterminated',
  "multipart/form-data; boundary=" + "b".repeat(300),
  "multipart/mixed; boundary=xyz",
  "text/plain",
  "application/octet-stream",
  "image/png",
  "a/b/c",
  ";;;",
  'video/webm; codecs="vp9"',
  "",
];

const BAD_INDEXES = [
  "-1",
  "1.5",
  "NaN",
  "Infinity",
  "99999999999999999999",
  "1000000001",
  "\u0663",
  "１",
  "one",
  "3,4",
  "+-2",
  "1 2",
  "",
];

/** Not whole decimal numbers either, but JavaScript's Number() reads them as one. */
const LENIENT_INDEXES = ["0x10", "1e3", "0b11", "0o17", "+5", "1E2", "5.0"];

interface Spec {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array<ArrayBuffer>;
  what: string;
}

function jsonBody(g: Gen): Uint8Array<ArrayBuffer> {
  // At least 8 bytes: a shorter start could still become an MP4 header.
  const nonMedia = btoa(String.fromCharCode(...g.bytes(8 + g.int(200))));
  return g.pick([
    () => g.bytes(g.int(300)),
    () => encoder.encode("{"),
    () => encoder.encode("[]"),
    () => encoder.encode("null"),
    () => encoder.encode('"blob_data"'),
    () => encoder.encode(JSON.stringify({ blob_data: 42 })),
    () => encoder.encode(JSON.stringify({ blob_data: "" })),
    () => encoder.encode(JSON.stringify({ blob_data: "!!!not base64!!!" })),
    () => encoder.encode(JSON.stringify({ blob_data: nonMedia })),
    () => encoder.encode(JSON.stringify({ blob_data: nonMedia, order: 0 })),
    () =>
      encoder.encode(
        JSON.stringify({ blob_data: nonMedia, last_chunk: true }),
      ),
    () =>
      encoder.encode(
        JSON.stringify({ blob_data: nonMedia, order: g.pick(BAD_INDEXES) }),
      ),
    () =>
      encoder.encode(
        JSON.stringify({ blob_data: nonMedia, order: g.pick([-1, 1.5, 1e20]) }),
      ),
    () => {
      // Invalid UTF-8 inside the JSON.
      const head = encoder.encode('{"blob_data": "');
      const tail = encoder.encode('", "order": 0}');
      const bad = new Uint8Array([0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80]);
      const out = new Uint8Array(head.length + bad.length + tail.length);
      out.set(head);
      out.set(bad, head.length);
      out.set(tail, head.length + bad.length);
      return out;
    },
    () => encoder.encode(`{"blob_data": "${"A".repeat(g.int(5000))}`),
  ])();
}

function multipartBody(g: Gen, boundary: string): Uint8Array<ArrayBuffer> {
  const part = (headers: string, content: Uint8Array) => {
    const head = encoder.encode(`--${boundary}\r\n${headers}\r\n\r\n`);
    const out = new Uint8Array(head.length + content.length + 2);
    out.set(head);
    out.set(content, head.length);
    out.set(encoder.encode("\r\n"), head.length + content.length);
    return out;
  };
  const file = (content: Uint8Array) =>
    part(
      'Content-Disposition: form-data; name="blob_data"; filename="c.webm"\r\nContent-Type: video/webm',
      content,
    );
  const concat = (...parts: Uint8Array[]) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  const end = encoder.encode(`--${boundary}--\r\n`);
  return g.pick([
    () => g.bytes(g.int(400)),
    () => concat(file(g.bytes(100))), // no closing boundary
    () => concat(file(g.bytes(100)), end), // not media at index 0
    () =>
      concat(
        part(
          'Content-Disposition: form-data; name="order"',
          encoder.encode(g.pick(BAD_INDEXES)),
        ),
        file(g.bytes(50)),
        end,
      ),
    () =>
      concat(
        part('Content-Disposition: form-data; name="other"', g.bytes(20)),
        end,
      ),
    () => concat(part("X-No-Disposition: 1", g.bytes(20)), end),
    () =>
      concat(
        part(
          `Content-Disposition: form-data; name="${"n".repeat(20_000)}"`,
          g.bytes(5),
        ),
        end,
      ),
    () => concat(encoder.encode(`--${boundary}x\r\n\r\n`), g.bytes(40), end),
    () =>
      concat(
        encoder.encode(
          `--${boundary}\r\nContent-Disposition: form-data; name="blob_data"\r\n`,
        ),
        g.bytes(30),
      ),
    () =>
      concat(encoder.encode(`--wrong-boundary\r\n`), file(g.bytes(10)), end),
    () => concat(file(new Uint8Array(0)), end),
  ])() as Uint8Array<ArrayBuffer>;
}

/** A malformed request to one of the API endpoints or an unknown path. */
function fuzzSpec(g: Gen, fuzzId: string, indexId: string): Spec {
  const headers: Record<string, string> = {};
  const maybeHeaders = () => {
    if (g.chance(0.3)) headers["content-type"] = g.pick(CONTENT_TYPES);
    if (g.chance(0.2)) headers["x-chunk-index"] = g.pick(BAD_INDEXES);
    if (g.chance(0.1)) headers["authorization"] = `Bearer ${g.text(g.int(60))}`;
    if (g.chance(0.1)) headers["x-upload-token"] = g.text(g.int(60));
    if (g.chance(0.1)) {
      headers["range"] = g.pick([
        "bytes=abc",
        "bytes=5-1",
        "bytes=-",
        "bytes=0-0,0-0,0-0",
        "items=0-1",
      ]);
    }
    if (g.chance(0.05)) headers["if-none-match"] = g.text(40);
    if (g.chance(0.05)) {
      headers["x-big"] = "b".repeat(g.pick([1000, 8000, 30_000]));
    }
    if (g.chance(0.05)) headers["cookie"] = g.text(200, "=;%a ");
  };
  const kind = g.int(14);
  const q = g.chance(0.15)
    ? `?index=${encodeURIComponent(g.pick(BAD_INDEXES))}`
    : "";
  const slash = g.chance(0.5) ? "/" : "";
  if (g.chance(0.03)) {
    // An index in a notation that is not a whole decimal number, to a session
    // of its own (so that one accepted by mistake does not spoil the others).
    const index = g.pick(LENIENT_INDEXES);
    const form = g.int(3);
    const bytes = g.bytes(1 + g.int(500));
    return {
      method: "POST",
      path: `/add_data/${indexId}/${
        form === 1 ? `?index=${encodeURIComponent(index)}` : ""
      }`,
      headers: form === 2 ? { "content-type": "application/json" } : {
        "content-type": "video/webm",
        ...(form === 0 ? { "x-chunk-index": index } : {}),
      },
      body: form === 2
        ? encoder.encode(
          JSON.stringify({
            blob_data: btoa(String.fromCharCode(...bytes)),
            order: index,
          }),
        )
        : bytes,
      what: `chunk index "${index}", not a whole decimal number`,
    };
  }
  switch (kind) {
    case 0:
    case 1:
    case 2: {
      // Chunks for the session under attack: always invalid.
      const form = g.int(5);
      let body: Uint8Array<ArrayBuffer>;
      if (form === 0) {
        headers["content-type"] = g.pick([
          "video/webm",
          "application/octet-stream",
          "text/plain",
          "image/png",
          "a/b/c",
        ]);
        if (g.chance(0.5)) {
          headers["x-chunk-index"] = g.pick([...BAD_INDEXES, "0", "00"]);
        }
        body = g.bytes(g.chance(0.2) ? 0 : 8 + g.int(3000));
      } else if (form === 1) {
        headers["content-type"] = g.pick([
          "application/json",
          "application/json; charset=utf-8",
        ]);
        body = jsonBody(g);
      } else if (form === 2) {
        const b = g.pick(["fuzzb", "----x", "a".repeat(70)]);
        headers["content-type"] = `multipart/form-data; boundary=${b}`;
        body = multipartBody(g, b);
      } else if (form === 3) {
        headers["content-type"] = g.pick(CONTENT_TYPES);
        headers["x-chunk-index"] = g.pick(BAD_INDEXES.filter(Boolean));
        body = g.bytes(g.int(500));
      } else {
        // A valid index in the body and a different one in the header.
        headers["content-type"] = "application/json";
        headers["x-chunk-index"] = String(1 + g.int(5));
        body = encoder.encode(JSON.stringify({
          blob_data: btoa(String.fromCharCode(...g.bytes(20))),
          order: 7 + g.int(5),
        }));
      }
      return {
        method: "POST",
        path: `/add_data/${fuzzId}${slash}${q}`,
        headers,
        body,
        what: "bad chunk for the attacked session",
      };
    }
    case 3: {
      maybeHeaders();
      return {
        method: g.pick(["POST", "POST", "PUT", "GET"]),
        path: `/add_data/${junkId(g)}${slash}${q}`,
        headers,
        body: g.chance(0.7) ? g.bytes(g.int(2000)) : undefined,
        what: "chunk for an unknown or malformed id",
      };
    }
    case 4: {
      maybeHeaders();
      const ep = g.pick(["check_status", "video"]);
      const method = g.pick(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]);
      // With the attacked session's id only the wrong methods are fuzzed.
      const id = method === "GET" || method === "HEAD" || g.chance(0.5)
        ? junkId(g)
        : fuzzId;
      return {
        method,
        path: `/${ep}/${id}${slash}`,
        headers,
        body: method === "GET" || method === "HEAD"
          ? undefined
          : g.bytes(g.int(100)),
        what: `${ep} with a junk id or method`,
      };
    }
    case 5: {
      maybeHeaders();
      const ep = g.pick(["complete_job", "retry_job"]);
      return {
        method: g.pick(["POST", "POST", "GET", "DELETE"]),
        path: `/${ep}/${g.chance(0.4) ? fuzzId : junkId(g)}${slash}`,
        headers,
        body: g.chance(0.5) ? g.bytes(g.int(300)) : undefined,
        what: `${ep} on a session with no data or a junk id`,
      };
    }
    case 6: {
      maybeHeaders();
      const id = g.chance(0.5) ? fuzzId : junkId(g);
      return {
        method: g.pick(["GET", "HEAD", "GET", "POST", "PUT"]),
        path: `/media/${id}/${junkName(g, id)}`,
        headers,
        what: "media of an unfinished session or a junk name",
      };
    }
    case 7: {
      maybeHeaders();
      return {
        method: g.pick(["GET", "PUT", "DELETE", "PATCH", "HEAD"]),
        path: `/create${slash}`,
        headers,
        what: "create with a wrong method",
      };
    }
    case 8: {
      maybeHeaders();
      return {
        method: g.pick([
          "GET",
          "POST",
          "PUT",
          "DELETE",
          "PROPFIND",
          "M-SEARCH",
          "FOO",
        ]),
        path: g.pick([
          () => `/${g.text(1 + g.int(30), "abcdefxyz0123456789-_.~")}`,
          () => `/api/v1/${g.text(10)}`,
          () => `/add_data`,
          () => `/add_data/${fuzzId}/extra/${g.text(5)}`,
          () => `/media/${fuzzId}`,
          () => `/media/${fuzzId}/${fuzzId}.mp4/more`,
          () => `/check_status`,
          () => `/create/${g.uuid()}`,
          () => `/%00`,
          () => `/%FF%FE`,
          () =>
            `/${encodeURIComponent(g.text(20, "\u0000\u00ff\uFFFD\u{1F600}"))}`,
        ])(),
        headers,
        body: g.chance(0.3) ? g.bytes(g.int(200)) : undefined,
        what: "unknown path",
      };
    }
    case 9: {
      maybeHeaders();
      return {
        method: g.pick(["GET", "GET", "HEAD", "POST", "DELETE"]),
        path: g.pick([
          () => `/videos/${junkId(g)}`,
          () => `/static/${junkName(g, g.uuid())}`,
          () => `/static/..%2f..%2ftapedeck.kv`,
          () => `/static/%2e%2e/%2e%2e/etc/passwd`,
          () => `/record/${g.text(4)}`,
          () =>
            `/?limit=${g.pick(["-1", "abc", "1e9", "%00"])}&cursor=${
              g.text(20)
            }`,
          () => `/videos/${fuzzId}/${g.text(5)}`,
        ])(),
        headers,
        body: undefined,
        what: "web page with junk",
      };
    }
    default: {
      // Random content types and bodies on random API endpoints.
      maybeHeaders();
      headers["content-type"] = g.pick(CONTENT_TYPES);
      const ep = g.pick(["add_data", "complete_job", "retry_job"]);
      const id = ep === "add_data" ? junkId(g) : g.pick([fuzzId, junkId(g)]);
      return {
        method: "POST",
        path: `/${ep}/${id}${slash}`,
        headers,
        body: g.bytes(g.int(1000)),
        what: `${ep} with a random content type`,
      };
    }
  }
}

/** Raw requests fetch will not send: bad request lines, bad header bytes, smuggling. */
function rawRequest(g: Gen, fuzzId: string): Uint8Array {
  const id = junkId(g).replace(/[^\x21-\x7e]/g, "x");
  const path = g.pick([
    `/check_status/${id}/`,
    `/add_data/${id}/`,
    `/add_data/${fuzzId}/`,
    `/media/${id}/x.mp4`,
    `/video/${id}/`,
    `/nothing-here`,
  ]);
  const text = g.pick([
    () => `${g.text(3 + g.int(10))}\r\n\r\n`,
    () => `GET\r\n\r\n`,
    () => `GET ${path} HTTP/9.9\r\nHost: t\r\n\r\n`,
    () => `GET ${path} HTTP/1.1 extra\r\nHost: t\r\n\r\n`,
    () => `G\x00T ${path} HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GE T ${path} HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GET /check_status/\x00${id} HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GET /check_status/\xff\xfe\xc0\xae HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GET /media/${fuzzId}/\xff\xfe.mp4 HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GET /add_data/../../tapedeck.kv HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GET /media/${id}/../../tapedeck.kv HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GET /static/../../tapedeck.kv HTTP/1.1\r\nHost: t\r\n\r\n`,
    () =>
      `GET /media/${fuzzId}/..%2f..%2ftapedeck.kv HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GET ${path} HTTP/1.1\r\nHost: t\r\nX-Bad\x00: y\r\n\r\n`,
    () => `GET ${path} HTTP/1.1\r\nHost: t\r\nX Bad: y\r\n\r\n`,
    () => `GET ${path} HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01\x7fb\r\n\r\n`,
    () => `GET ${path} HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n`,
    () => `GET ${path} HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n  b\r\n\r\n`,
    () => `GET ${path} HTTP/1.1\r\nHost: t\r\nX-CR: a\rb\r\n\r\n`,
    () =>
      `GET ${path} HTTP/1.1\r\nHost: t\r\nX-Big: ${
        "a".repeat(g.pick([70_000, 200_000]))
      }\r\n\r\n`,
    () =>
      `GET ${path} HTTP/1.1\r\nHost: t\r\n${
        Array.from({ length: 150 }, (_, i) => `X-H${i}: ${i}\r\n`).join("")
      }\r\n`,
    () =>
      `POST ${path} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    () =>
      `POST ${path} HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nabcde`,
    () => `POST ${path} HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n`,
    () => `POST ${path} HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n`,
    () =>
      `POST ${path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`,
    () =>
      `POST ${path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`,
    () =>
      `POST ${path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n`,
    () => `GET http://evil.example${path} HTTP/1.1\r\nHost: t\r\n\r\n`,
    () => `GET ${path} HTTP/1.0\r\n\r\n`,
    () => `\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n`,
  ])();
  // Latin-1: every code unit is one byte (invalid UTF-8 included).
  return Uint8Array.from(text, (ch) => ch.charCodeAt(0) & 0xff);
}

function isPagePath(path: string): boolean {
  return path === "/" || path.startsWith("/?") || path.startsWith("/videos") ||
    path.startsWith("/record") || path.startsWith("/static");
}

interface Tally {
  byStatus: Record<string, number>;
  failures: string[];
}

function note(t: Tally, key: string) {
  t.byStatus[key] = (t.byStatus[key] ?? 0) + 1;
}

/** A spec as raw HTTP/1.1 bytes, header values in UTF-8 as given. */
function specBytes(spec: Spec): Uint8Array {
  const headers = Object.entries(spec.headers)
    .map(([k, v]) => `${k}: ${v}\r\n`).join("");
  const head = encoder.encode(
    `${spec.method} ${spec.path} HTTP/1.1\r\nHost: t\r\n${headers}` +
      `Content-Length: ${spec.body?.length ?? 0}\r\nConnection: close\r\n\r\n`,
  );
  const out = new Uint8Array(head.length + (spec.body?.length ?? 0));
  out.set(head);
  if (spec.body) out.set(spec.body, head.length);
  return out;
}

async function sendFuzz(
  url: string,
  client: Deno.HttpClient,
  spec: Spec,
  t: Tally,
) {
  let res: Response;
  const target = new URL(spec.path, url);
  const seen = target.pathname + target.search;
  try {
    res = await fetch(target, {
      method: spec.method,
      headers: spec.headers,
      body: spec.body,
      client,
    } as RequestInit);
  } catch (err) {
    if (
      err instanceof TypeError && /invalid|header|method/i.test(err.message)
    ) {
      // fetch refuses to send it (a byte it forbids): send it over raw TCP.
      note(t, "refused by fetch, sent raw");
      await sendRaw(
        Number(target.port),
        specBytes(spec),
        t,
        `${spec.method} ${seen} (${spec.what})`,
      );
      return;
    }
    t.failures.push(`${spec.method} ${seen} (${spec.what}): no answer: ${err}`);
    return;
  }
  note(t, String(res.status));
  const type = res.headers.get("content-type") ?? "";
  const text = await res.text();
  const where = `${spec.method} ${seen.slice(0, 120)} (${spec.what})`;
  if (res.status >= 500) {
    t.failures.push(`${where}: ${res.status} ${text.slice(0, 200)}`);
    return;
  }
  if (isPagePath(target.pathname)) {
    if (text.includes("SQLite format")) {
      t.failures.push(`${where}: served the KV file`);
    }
    return;
  }
  if (res.status < 400) {
    // While junk chunk requests to the fuzz session are under way, a
    // complete_job of it is a real completion: it waits for them (and the
    // session then fails with no data).
    const completes = /^\/complete_job\//.test(target.pathname) &&
      res.status === 200 && /"Processing started"/.test(text);
    if (!completes) {
      t.failures.push(
        `${where}: ${res.status}, expected a 4xx: ${text.slice(0, 200)}`,
      );
    }
    return;
  }
  if (!type.startsWith("application/json")) {
    t.failures.push(`${where}: ${res.status} with content type "${type}"`);
    return;
  }
  if (spec.method === "HEAD") return;
  let body: { error?: unknown };
  try {
    body = JSON.parse(text);
  } catch {
    t.failures.push(
      `${where}: ${res.status} body is not JSON: ${text.slice(0, 200)}`,
    );
    return;
  }
  if (typeof body.error !== "string" || body.error.length < 10) {
    t.failures.push(
      `${where}: ${res.status} without an error sentence: ${
        text.slice(0, 200)
      }`,
    );
  } else if (/\n\s+at |file:\/\/|node_modules/.test(body.error)) {
    t.failures.push(
      `${where}: stack trace or path in the error: ${body.error}`,
    );
  }
}

async function sendRaw(
  port: number,
  bytes: Uint8Array,
  t: Tally,
  what: string,
) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let text = "";
  let outcome = "timeout";
  try {
    await conn.write(bytes).catch(() => {});
    const buf = new Uint8Array(16384);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const n = await Promise.race([
        conn.read(buf).catch(() => null),
        delay(deadline - Date.now()).then(() => "timeout" as const),
      ]);
      if (n === "timeout") break;
      if (n === null) {
        outcome = "closed";
        break;
      }
      text += new TextDecoder().decode(buf.subarray(0, n));
      if (/^HTTP\/1\.[01] \d{3}/.test(text) && text.includes("\r\n\r\n")) {
        outcome = "answered";
        break;
      }
    }
  } finally {
    conn.close();
  }
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
  if (outcome === "answered") {
    note(t, `raw ${status}`);
    if (status < 400 || status >= 500) {
      t.failures.push(
        `raw ${JSON.stringify(what.slice(0, 100))}: ${text.slice(0, 200)}`,
      );
    }
    if (text.includes("SQLite format")) {
      t.failures.push(`raw ${what}: served the KV file`);
    }
  } else if (outcome === "closed") {
    note(t, text ? "raw closed mid-answer" : "raw closed");
  } else {
    note(t, "raw no answer");
    t.failures.push(
      `raw ${
        JSON.stringify(what.slice(0, 100))
      }: no answer and no close in 5 s`,
    );
  }
}

Deno.test({
  name:
    "fuzz: thousands of malformed requests get 4xx JSON errors (never 5xx or HTML) while a real upload completes next to them",
  ignore: ffmpegMissing,
  async fn() {
    const seed = Number(Deno.env.get("FUZZ_SEED") ?? Date.now() % 1_000_000);
    console.log(`fuzz: seed ${seed} (replay with FUZZ_SEED=${seed})`);
    const g = new Gen(seededRandom(seed));
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-fuzz-" });
    const srcDir = await Deno.makeTempDir({ prefix: "tapedeck-fuzz-src-" });
    let server: ChildServer | undefined;
    const started = Date.now();
    try {
      server = await spawnServer(dataDir, {
        CREATE_RATE_PER_MINUTE: "0",
        BODY_IDLE_TIMEOUT_MS: "3000",
      });
      const url = server.url;
      const port = Number(new URL(url).port);
      const fuzzId = await createSession(url);
      const indexId = await createSession(url);

      const specs = Array.from(
        { length: FETCH_REQUESTS },
        () => fuzzSpec(g, fuzzId, indexId),
      );
      const raws = Array.from(
        { length: RAW_REQUESTS },
        () => rawRequest(g, fuzzId),
      );

      // The real upload, running next to the fuzzing.
      const srcPath = join(srcDir, "src.webm");
      const source = await makeRecording(srcPath, { seconds: 6 });
      const realUpload = (async () => {
        const id = await createSession(url);
        const pieces = splitBytes(source, [15_000, 25_000]);
        for (const [i, p] of pieces.entries()) {
          const res = await sendChunk(url, id, p, i);
          assert.equal(res.status, 200, `real chunk ${i}: ${await res.text()}`);
          await delay(150);
        }
        const done = await fetch(`${url}/complete_job/${id}/`, {
          method: "POST",
        });
        assert.equal(done.status, 200);
        await done.body?.cancel();
        const st = await waitForStatus(url, id, ["complete", "failed"], 90_000);
        assert.equal(st.status, "complete", JSON.stringify(st));
        const res = await fetch(`${url}/media/${id}/${id}.webm`);
        assert.equal(res.status, 200);
        const out = `${srcPath}.out.webm`;
        await Deno.writeFile(out, new Uint8Array(await res.arrayBuffer()));
        const same = JSON.stringify(await videoPacketHashes(out)) ===
          JSON.stringify(await videoPacketHashes(srcPath));
        await Deno.remove(out);
        return { id, same, pieces: pieces.length };
      })();
      let realError: unknown;
      realUpload.catch((err) => realError = err);

      const t: Tally = { byStatus: {}, failures: [] };
      const clients = Array.from(
        { length: 4 },
        () => Deno.createHttpClient({}),
      );
      let nextSpec = 0;
      let nextRaw = 0;
      await Promise.all([
        ...Array.from({ length: 12 }, async (_, w) => {
          while (nextSpec < specs.length) {
            const spec = specs[nextSpec++];
            await sendFuzz(url, clients[w % clients.length], spec, t);
          }
        }),
        ...Array.from({ length: 4 }, async () => {
          while (nextRaw < raws.length) {
            const raw = raws[nextRaw++];
            await sendRaw(
              port,
              raw,
              t,
              new TextDecoder().decode(raw.subarray(0, 100)),
            );
          }
        }),
      ]);
      for (const c of clients) c.close();
      if (realError) console.log(server.output());
      const real = await realUpload;

      // The attacked session took nothing; the server is still up and answers.
      const st = await (await fetch(`${url}/check_status/${fuzzId}/`)).json();
      const alive = await fetch(`${url}/check_status/${fuzzId}/`);
      assert.equal(alive.status, 200);
      await alive.body?.cancel();
      const output = server.output();
      const term = await server.stop("SIGTERM");
      server = undefined;
      const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
      let storedForFuzz = 0;
      const storedForIndex: number[] = [];
      try {
        for await (
          const _ of kv.list<ChunkEntry>({ prefix: chunkPrefix(fuzzId) })
        ) {
          storedForFuzz++;
        }
        for await (
          const e of kv.list<ChunkEntry>({ prefix: chunkPrefix(indexId) })
        ) storedForIndex.push(e.value.index);
      } finally {
        kv.close();
      }
      const total = specs.length + raws.length;
      const sentRaw = raws.length +
        (t.byStatus["refused by fetch, sent raw"] ?? 0);
      console.log(
        `fuzz figures: ${total} malformed requests (${
          total - sentRaw
        } over fetch, ${sentRaw} over raw TCP) in ${
          ((Date.now() - started) / 1000).toFixed(0)
        } s; answers: ${
          JSON.stringify(t.byStatus)
        }; failures: ${t.failures.length}; ` +
          `attacked session: ${st.chunks_received} chunks; real upload of ${real.pieces} chunks next to it: ${
            real.same ? "complete, same video packets" : "WRONG VIDEO"
          }`,
      );
      if (t.failures.length) {
        const groups = new Map<string, string[]>();
        for (const f of t.failures) {
          const key = f.startsWith("raw ")
            ? "raw"
            : (/\(([^)]*)\)/.exec(f)?.[1] ?? "other");
          groups.set(key, [...(groups.get(key) ?? []), f]);
        }
        for (const [key, list] of groups) {
          console.log(
            `failures, ${key}: ${list.length}, e.g.\n  ${
              list.slice(0, 4).join("\n  ")
            }`,
          );
        }
      }
      assert.equal(term.code, 0, "the server shut down normally");
      assert.ok(!/Uncaught|panicked/.test(output), output.slice(-2000));
      assert.equal(st.chunks_received, 0);
      assert.equal(storedForFuzz, 0, "no malformed chunk was stored");
      assert.deepEqual(
        storedForIndex,
        [],
        "chunks with indexes like 0x10 or 1e3 were stored (as these indexes)",
      );
      assert.ok(real.same, "the real upload came out byte-exact");
      assert.ok(total >= 3000);
      assert.deepEqual(
        t.failures.slice(0, 25),
        [],
        `${t.failures.length} bad answers`,
      );
    } finally {
      await server?.stop("SIGKILL");
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(srcDir, { recursive: true }).catch(() => {});
    }
  },
});
