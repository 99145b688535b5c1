/**
 * Helpers for the live dashboard tests: a headless Debian Chromium through
 * playwright-core, a WebSocket client that queues messages, and servers on a
 * chosen port (so a test can stop one and start another where it was).
 */

import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium } from "playwright-core";
import type { Service } from "../main.ts";
import { type GuardedServer, serveGuarded } from "../lib/http/slow_guard.ts";
import type { LiveMessage } from "../common/recording_view.ts";
import { CHROMIUM_PATH, IN_CI, ROOT } from "./helpers.ts";

export { CHROMIUM_PATH };

/** Flags of a quiet headless Chromium on this machine (the bench's too). */
export const HEADLESS_BROWSER_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Flags every test browser runs with. */
export const BASE_BROWSER_ARGS = [
  ...HEADLESS_BROWSER_ARGS,
  "--use-fake-device-for-media-stream",
];

/** Where screenshots are saved (git-ignored). */
export const ARTIFACTS_DIR = join(ROOT, "tests", "artifacts");

/**
 * Launches headless Chromium: with fake media devices and permission prompts
 * accepted, or (`tabCapture`) with real capture of the page's own tab.
 * Returns null with a visible notice when Chromium is missing, unless in CI
 * where that is a failure.
 */
export async function launchBrowser(
  options: { tabCapture?: boolean } = {},
): Promise<Browser | null> {
  try {
    await Deno.stat(CHROMIUM_PATH);
  } catch {
    if (IN_CI) {
      throw new Error(
        `Chromium is required in CI but ${CHROMIUM_PATH} is missing`,
      );
    }
    console.warn(`SKIPPED: Chromium is not installed at ${CHROMIUM_PATH}`);
    return null;
  }
  const args = [
    ...BASE_BROWSER_ARGS,
    ...(options.tabCapture
      ? ["--auto-accept-this-tab-capture"]
      : ["--use-fake-ui-for-media-stream"]),
  ];
  return await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args,
  });
}

/** The path of a test artifact, creating the folder. */
export async function artifactPath(name: string): Promise<string> {
  await mkdir(ARTIFACTS_DIR, { recursive: true });
  return join(ARTIFACTS_DIR, name);
}

/** A WebSocket whose messages are queued for the test to take in order. */
export interface TestSocket {
  /** Every message received so far, with the local time it arrived. */
  received: { message: LiveMessage; at: number }[];
  /** Waits for the next message not yet taken. */
  next(timeoutMs?: number): Promise<LiveMessage>;
  /** Takes messages until one matches; returns it (earlier ones stay in `received`). */
  until(
    match: (m: LiveMessage) => boolean,
    timeoutMs?: number,
  ): Promise<LiveMessage>;
  /** Resolves with the close event's code when the socket closes. */
  closed: Promise<number>;
  /** Closes the socket and waits until it is closed. */
  close(): Promise<void>;
}

/** Opens a WebSocket and waits until it is open. */
export async function openSocket(url: string): Promise<TestSocket> {
  const ws = new WebSocket(url);
  const received: { message: LiveMessage; at: number }[] = [];
  let taken = 0;
  let wake: (() => void) | undefined;
  const closed = new Promise<number>((resolve) => {
    ws.addEventListener("close", (e) => {
      resolve(e.code);
      wake?.();
    });
  });
  ws.onmessage = (e) => {
    received.push({ message: JSON.parse(String(e.data)), at: Date.now() });
    wake?.();
  };
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = (e) =>
      reject(
        new Error(`WebSocket ${url} failed: ${(e as ErrorEvent).message}`),
      );
  });
  ws.onerror = null;

  async function next(timeoutMs = 10_000): Promise<LiveMessage> {
    const deadline = Date.now() + timeoutMs;
    while (taken >= received.length) {
      if (ws.readyState === WebSocket.CLOSED) {
        throw new Error("socket closed while waiting");
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${timeoutMs} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      wake = undefined;
    }
    return received[taken++].message;
  }

  return {
    received,
    next,
    async until(match, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const message = await next(Math.max(1, deadline - Date.now()));
        if (match(message)) return message;
      }
    },
    closed,
    async close() {
      if (ws.readyState !== WebSocket.CLOSED) ws.close(1000);
      await closed;
    },
  };
}

/** A ws:// URL for a path on an http:// server. */
export function wsUrl(httpUrl: string, path: string): string {
  return httpUrl.replace(/^http/, "ws") + path;
}

/** A port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Serves a service's app on a given port with main.ts's listener (node:http,
 * or plain `Deno.serve` on Deno before 2.8); `shutdown` closes its live
 * sockets too (1001), which `Deno.serve`'s own does not on Deno 2.5.
 */
export function serveOnPort(
  service: Service,
  port: number,
): Promise<GuardedServer> {
  return serveGuarded({
    hostname: "127.0.0.1",
    port,
    headerTimeoutMs: 20_000,
    bodyMinBytesPerS: 0,
    bodyRateWindowMs: 30_000,
    bodyTimeoutMs: 0,
    shutdownGraceMs: 1_000,
  }, service.app.fetch);
}

/** Polls `check` until it returns true or the time is up. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`${what} did not hold within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** When the page called MediaRecorder `start()` and `stop()` (ms, the page's clock). */
export interface RecorderCalls {
  start?: number;
  onstart?: number;
  stop?: number;
}

/**
 * Reports every page's MediaRecorder `start()` and `stop()` calls and its
 * `start` event to the test, stamped with the page's own clock (so IPC
 * delays do not count, and the times survive the navigation that follows a
 * stop). Observes only: the calls go through unchanged.
 */
export async function watchRecorderCalls(
  context: BrowserContext,
): Promise<RecorderCalls> {
  const calls: RecorderCalls = {};
  await context.exposeFunction(
    "reportRecorderCall",
    (name: keyof RecorderCalls, at: number) => {
      calls[name] = at;
    },
  );
  await context.addInitScript(() => {
    const report = (name: string) =>
      (globalThis as unknown as {
        reportRecorderCall(n: string, at: number): void;
      })
        .reportRecorderCall(name, performance.timeOrigin + performance.now());
    const proto = MediaRecorder.prototype;
    const start = proto.start;
    const stop = proto.stop;
    proto.start = function (this: MediaRecorder, timeslice?: number) {
      report("start");
      this.addEventListener("start", () => report("onstart"), { once: true });
      return start.call(this, timeslice);
    };
    proto.stop = function (this: MediaRecorder) {
      report("stop");
      return stop.call(this);
    };
  });
  return calls;
}

/**
 * What a page recorded, seen from the test: every MediaRecorder
 * `dataavailable` blob in order, and every chunk the recorder kept with its
 * index (its `tapedeck:chunk` event). Reported as they happen, so they
 * survive reloads of the page.
 */
export interface RecordedChunks {
  /** MediaRecorder blobs of every page load, in order (empty ones included). */
  raw(): Uint8Array[];
  /** The kept chunks of a recording by index. */
  kept(videoId: string): Map<number, Uint8Array>;
}

/** Starts collecting {@link RecordedChunks} for every page of the context. */
export async function watchRecordedChunks(
  context: BrowserContext,
): Promise<RecordedChunks> {
  const raw: { origin: number; seq: number; bytes: Uint8Array }[] = [];
  const kept = new Map<string, Map<number, Uint8Array>>();
  const decode = (b64: string) =>
    Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  await context.exposeFunction(
    "reportRawChunk",
    (origin: number, seq: number, b64: string) => {
      raw.push({ origin, seq, bytes: decode(b64) });
    },
  );
  await context.exposeFunction(
    "reportKeptChunk",
    (videoId: string, index: number, b64: string) => {
      if (!kept.has(videoId)) kept.set(videoId, new Map());
      kept.get(videoId)!.set(index, decode(b64));
    },
  );
  await context.addInitScript(() => {
    const g = globalThis as unknown as {
      reportRawChunk(origin: number, seq: number, b64: string): void;
      reportKeptChunk(id: string, index: number, b64: string): void;
    };
    const toBase64 = (blob: Blob) =>
      new Promise<string>((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => {
          const url = String(reader.result);
          resolve(url.slice(url.indexOf(";base64,") + 8));
        };
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(blob);
      });
    let seq = 0;
    const start = MediaRecorder.prototype.start;
    MediaRecorder.prototype.start = function (
      this: MediaRecorder,
      timeslice?: number,
    ) {
      this.addEventListener("dataavailable", (event) => {
        const n = seq++;
        toBase64(event.data).then((b64) =>
          g.reportRawChunk(performance.timeOrigin, n, b64)
        );
      });
      return start.call(this, timeslice);
    };
    addEventListener("tapedeck:chunk", (event) => {
      const detail = (event as CustomEvent).detail as {
        videoId: string;
        index: number;
        blob: Blob;
      };
      toBase64(detail.blob).then((b64) =>
        g.reportKeptChunk(detail.videoId, detail.index, b64)
      );
    });
  });
  return {
    raw: () =>
      raw.slice().sort((a, b) => a.origin - b.origin || a.seq - b.seq)
        .map((r) => r.bytes),
    kept: (videoId) => kept.get(videoId) ?? new Map(),
  };
}

/**
 * Records every distinct text the element matching `selector` shows, in
 * every page of the context (a MutationObserver reports each change), so a
 * test can check a status that was on screen only briefly.
 */
export async function watchText(
  context: BrowserContext,
  selector: string,
): Promise<string[]> {
  const seen: string[] = [];
  const name = `reportText${seen.length}${
    selector.replace(/[^A-Za-z0-9]/g, "")
  }`;
  await context.exposeFunction(name, (text: string) => {
    if (seen.at(-1) !== text) seen.push(text);
  });
  await context.addInitScript(([sel, fn]) => {
    const report =
      (globalThis as unknown as Record<string, (t: string) => void>)[fn];
    let last: string | null = null;
    const check = () => {
      const text = document.querySelector(sel)?.textContent ?? null;
      if (text !== null && text !== last) report(text);
      last = text;
    };
    const observe = () =>
      new MutationObserver(check).observe(document.documentElement, {
        subtree: true,
        childList: true,
        characterData: true,
      });
    if (document.documentElement) observe();
    else addEventListener("DOMContentLoaded", observe);
  }, [selector, name] as const);
  return seen;
}

/** How many records each object store of an IndexedDB database holds, seen from a page. */
export async function indexedDbCounts(
  page: import("playwright-core").Page,
  database: string,
  stores: string[],
): Promise<Record<string, number>> {
  return await page.evaluate(async ([name, names]) => {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const req = indexedDB.open(name);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    const counts: Record<string, number> = {};
    for (const store of names) {
      counts[store] = await new Promise<number>((resolve, reject) => {
        const req = db.transaction(store, "readonly").objectStore(store)
          .count();
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
    }
    db.close();
    return counts;
  }, [database, stores] as const);
}
