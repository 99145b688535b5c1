/**
 * Helpers for the live dashboard tests: a headless Debian Chromium through
 * playwright-core, a WebSocket client that queues messages, and servers on a
 * chosen port (so a test can stop one and start another where it was).
 */

import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium } from "playwright-core";
import type { Service } from "../main.ts";
import type { LiveMessage } from "../lib/recording_view.ts";
import { IN_CI, ROOT } from "./helpers.ts";

/** The Debian Chromium binary (the /usr/bin wrapper prints a shell error). */
export const CHROMIUM_PATH = "/usr/lib/chromium/chromium";

/** Flags every test browser runs with. */
export const BASE_BROWSER_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
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

/** Serves a service's app on a given port; `shutdown` closes its sockets too. */
export function serveOnPort(service: Service, port: number): Deno.HttpServer {
  return Deno.serve(
    { hostname: "127.0.0.1", port, onListen() {} },
    service.app.fetch,
  );
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
