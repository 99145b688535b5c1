/**
 * Helpers for the stop-race, tus concatenation, browser-extension and log
 * tests (issue 11): tool availability for `Deno.test({ ignore })`, request
 * bodies held open mid-send, a TCP proxy that cuts one tus PATCH mid-body,
 * the dashboard's list of recordings, media durations measured by ffprobe,
 * a page server on a second origin and the log lines of a child server.
 */

import assert from "node:assert/strict";
import {
  CHROMIUM_PATH,
  openSocket,
  type TestSocket,
  wsUrl,
} from "./browser_helpers.ts";
import { ffprobeEntries, IN_CI } from "./helpers.ts";

async function commandWorks(name: string): Promise<boolean> {
  try {
    const out = await new Deno.Command(name, {
      args: ["-version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Whether tests that need ffmpeg and ffprobe run: true when both are
 * installed, and always true in CI (a missing tool then fails the test that
 * needs it instead of hiding it). Elsewhere a missing tool makes those tests
 * show as ignored, with a notice.
 */
export const HAVE_FFMPEG: boolean = await (async () => {
  const found = await commandWorks("ffmpeg") && await commandWorks("ffprobe");
  if (!found && !IN_CI) {
    console.warn(
      "ffmpeg/ffprobe not installed: tests that need them are ignored",
    );
  }
  return found || IN_CI;
})();

/** Like {@link HAVE_FFMPEG}, for the Debian Chromium of the browser tests. */
export const HAVE_CHROMIUM: boolean = await (async () => {
  let found = false;
  try {
    found = (await Deno.stat(CHROMIUM_PATH)).isFile;
  } catch {
    found = false;
  }
  if (!found && !IN_CI) {
    console.warn(
      `Chromium not installed at ${CHROMIUM_PATH}: browser tests are ignored`,
    );
  }
  return found || IN_CI;
})();

/** A message of the live sockets (typed through the browser helpers). */
export type LiveMessage = Awaited<ReturnType<TestSocket["next"]>>;
/** A `change` message of the live sockets. */
export type ChangeMessage = Extract<LiveMessage, { type: "change" }>;
/** The first message of `/ws`: a page of recordings. */
/** A predicate for socket.until: a change of recording `id` that passes `match`. */
export function changeOf(
  id: string,
  match: (m: ChangeMessage) => boolean,
): (m: LiveMessage) => boolean {
  return (m) => m.type === "change" && m.recording.id === id && match(m);
}

export type ListSnapshotMessage = Extract<LiveMessage, { recordings: unknown }>;

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves with the promise's value, or with `undefined` after `ms`. */
export async function within<T>(
  promise: Promise<T>,
  ms: number,
): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A request body that sends `first` at once and the rest only when
 * `finish` is called: a chunk whose request is in flight (headers and part
 * of the body arrived, the rest still coming).
 */
export function heldBody(first: Uint8Array<ArrayBuffer>): {
  body: ReadableStream<Uint8Array<ArrayBuffer>>;
  finish(rest: Uint8Array<ArrayBuffer>): void;
} {
  let controller!: ReadableStreamDefaultController<Uint8Array<ArrayBuffer>>;
  const body = new ReadableStream<Uint8Array<ArrayBuffer>>({
    start(c) {
      controller = c;
    },
  });
  controller.enqueue(first);
  let finished = false;
  return {
    body,
    finish(rest) {
      if (finished) return;
      finished = true;
      if (rest.length > 0) controller.enqueue(rest);
      controller.close();
    },
  };
}

/** Concatenates byte arrays. */

/** Asserts two byte arrays are equal, saying where they first differ. */
export function assertSameBytes(
  actual: Uint8Array,
  expected: Uint8Array,
  what: string,
): void {
  if (actual.length === expected.length) {
    let i = 0;
    while (i < actual.length && actual[i] === expected[i]) i++;
    if (i === actual.length) return;
    assert.fail(
      `${what}: ${actual.length} bytes as expected, but byte ${i} differs`,
    );
  }
  assert.fail(
    `${what}: got ${actual.length} bytes, expected ${expected.length} (${
      expected.length - actual.length
    } missing)`,
  );
}

/** GETs `/media/<id>/source` and returns its bytes (asserting 200). */
export async function fetchSource(
  url: string,
  id: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const res = await fetch(`${url}/media/${id}/source`);
  if (res.status !== 200) {
    assert.fail(
      `/media/${id}/source answered ${res.status}: ${await res.text()}`,
    );
  }
  return new Uint8Array(await res.arrayBuffer());
}

/** GETs `/check_status/<id>/` and returns its status code and JSON. */
export async function checkStatus(
  url: string,
  id: string,
): Promise<{ code: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}/check_status/${id}/`);
  return { code: res.status, body: await res.json() };
}

/** Ids the dashboard lists: the first `/ws` snapshot (up to 200, newest first). */
export async function listedIds(url: string): Promise<string[]> {
  const socket = await openSocket(wsUrl(url, "/ws?limit=200"));
  try {
    const snap = await socket.next() as ListSnapshotMessage;
    assert.equal(snap.type, "snapshot");
    return snap.recordings.map((r) => r.id);
  } finally {
    await socket.close();
  }
}

/**
 * The media duration of a file in seconds as ffprobe measures it from its
 * packets (the end of the last packet of any stream), which works for live
 * WebM recordings that carry no duration in their header.
 */
export async function packetDurationS(path: string): Promise<number> {
  const out = await ffprobeEntries(path, "packet=pts_time,duration_time");
  let end = 0;
  for (const line of out.split("\n")) {
    const [pts, dur] = line.split(",").map(Number);
    if (Number.isFinite(pts)) {
      end = Math.max(end, pts + (Number.isFinite(dur) ? dur : 0));
    }
  }
  return end;
}

/** The container duration ffprobe reports for a finished file. */
export async function formatDurationS(path: string): Promise<number> {
  return Number((await ffprobeEntries(path, "format=duration")).trim());
}

/** Downloads a finished file of a recording to `path`. */
export async function downloadTo(
  url: string,
  id: string,
  name: string,
  path: string,
): Promise<void> {
  const res = await fetch(`${url}/media/${id}/${name}`);
  assert.equal(res.status, 200, `/media/${id}/${name}`);
  await Deno.writeFile(path, new Uint8Array(await res.arrayBuffer()));
}

/** One PATCH request the proxy saw. */
export interface SeenPatch {
  path: string;
  offset: number;
  /** Whether the proxy cut this one mid-body. */
  cut: boolean;
}

/**
 * A TCP proxy in front of a server that cuts the connection carrying the
 * `patchNumber`-th PATCH request (1-based, counted over all connections)
 * after `afterBodyBytes` bytes of its body, once; new connections in the
 * next `outageMs` are closed at once so the client's HTTP stack cannot hide
 * the drop. Records every PATCH it forwards (path and Upload-Offset).
 */
export function startPatchCuttingProxy(
  target: URL,
  options: { patchNumber: number; afterBodyBytes: number; outageMs?: number },
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const outageMs = options.outageMs ?? 300;
  const patches: SeenPatch[] = [];
  let cuts = 0;
  let outageUntil = 0;
  const conns = new Set<Deno.Conn>();
  const latin1 = new TextDecoder("latin1");
  const closeConn = (c: Deno.Conn) => {
    try {
      c.close();
    } catch {
      // already closed
    }
    conns.delete(c);
  };
  const handle = async (client: Deno.Conn) => {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({
        hostname: target.hostname,
        port: Number(target.port),
      });
    } catch {
      closeConn(client);
      return;
    }
    conns.add(upstream);
    // Request bytes are scanned for PATCH request heads; `text` holds the
    // not yet scanned tail, starting at stream position `textStart`.
    let text = "";
    let textStart = 0;
    let total = 0;
    let cutAt = Infinity;
    let cutPatch: SeenPatch | undefined;
    const up = (async () => {
      const buf = new Uint8Array(16 * 1024);
      while (true) {
        const n = await client.read(buf).catch(() => null);
        if (n === null) break;
        const before = total;
        total += n;
        if (cutAt === Infinity) {
          text += latin1.decode(buf.subarray(0, n));
          for (;;) {
            const m = /PATCH (\S+) HTTP\/1\.[01]\r\n/.exec(text);
            if (!m) {
              const keep = Math.min(text.length, 512);
              textStart += text.length - keep;
              text = text.slice(text.length - keep);
              break;
            }
            const end = text.indexOf("\r\n\r\n", m.index);
            if (end < 0) break;
            const head = text.slice(m.index, end);
            const offset = Number(
              /\r\nupload-offset:\s*(\d+)/i.exec(head)?.[1] ?? NaN,
            );
            const seen: SeenPatch = { path: m[1], offset, cut: false };
            patches.push(seen);
            const bodyStart = textStart + end + 4;
            if (cuts === 0 && patches.length === options.patchNumber) {
              cutAt = bodyStart + options.afterBodyBytes;
              cutPatch = seen;
            }
            textStart = bodyStart;
            text = text.slice(end + 4);
            if (cutAt !== Infinity) break;
          }
        }
        if (total > cutAt) {
          cuts++;
          cutPatch!.cut = true;
          outageUntil = Date.now() + outageMs;
          const keep = Math.max(0, cutAt - before);
          await upstream.write(buf.subarray(0, keep)).catch(() => 0);
          break;
        }
        let written = 0;
        while (written < n) {
          const w = await upstream.write(buf.subarray(written, n)).catch(
            () => -1,
          );
          if (w < 0) break;
          written += w;
        }
      }
    })();
    const down = (async () => {
      const buf = new Uint8Array(16 * 1024);
      while (true) {
        const n = await upstream.read(buf).catch(() => null);
        if (n === null) break;
        let written = 0;
        while (written < n) {
          const w = await client.write(buf.subarray(written, n)).catch(() =>
            -1
          );
          if (w < 0) break;
          written += w;
        }
      }
    })();
    await Promise.race([up, down]);
    closeConn(client);
    closeConn(upstream);
    await Promise.allSettled([up, down]);
  };
  const serve = (async () => {
    for await (const client of listener) {
      if (Date.now() < outageUntil) {
        client.close();
        continue;
      }
      conns.add(client);
      handle(client);
    }
  })();
  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${port}`,
    patches,
    cuts: () => cuts,
    async close() {
      listener.close();
      for (const c of [...conns]) closeConn(c);
      await serve.catch(() => {});
    },
  };
}

/** A tiny web server for a page on another origin than the API's. */
export function servePage(html: string): {
  url: string;
  close(): Promise<void>;
} {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response(html, {
        headers: { "content-type": "text/html; charset=utf-8" },
      }),
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    close: () => server.shutdown(),
  };
}

/** The JSON objects among a process's output lines (other lines skipped). */
export function jsonLines(output: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of output.split("\n")) {
    const t = line.trim();
    if (!t.startsWith("{")) continue;
    try {
      const v = JSON.parse(t);
      if (v && typeof v === "object" && !Array.isArray(v)) out.push(v);
    } catch {
      // not a JSON line
    }
  }
  return out;
}

/** Lines of a process's output that contain `needle`. */
export function linesWith(output: string, needle: string): string[] {
  return output.split("\n").filter((l) => l.includes(needle));
}

/** Polls `read` until `check` holds on its value; returns the last value. */
export async function waitFor<T>(
  read: () => T | Promise<T>,
  check: (value: T) => boolean,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (check(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    }
    await sleep(50);
  }
}
