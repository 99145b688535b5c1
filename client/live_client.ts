/**
 * A WebSocket client for `/ws` and `/ws/<id>` that reconnects with backoff
 * after a dropped connection. Each connection starts with a fresh snapshot,
 * so a client that reconnects has caught up. Runs in browsers and in Deno.
 */

import type { LiveMessage } from "../common/recording_view.ts";

/** The server closes with this code when reconnecting cannot help (unknown id, bad cursor). */
const POLICY_VIOLATION = 1008;

/** Where a live connection stands. */
export type LiveState = "connecting" | "live" | "reconnecting" | "closed";

/** Whether a page follows live changes ("static" until it connects), for its indicator. */
export type LiveIndicatorState = LiveState | "static";

/** Callbacks and timing of {@link connectLive}. */
export interface LiveClientOptions {
  /** Called with every message, snapshots included. */
  onMessage(message: LiveMessage): void;
  /** Called whenever the state changes. */
  onState?(state: LiveState): void;
  /** First reconnect delay (ms); doubles per failed try. Default 500. */
  minDelayMs?: number;
  /** Longest reconnect delay (ms). Default 10,000. */
  maxDelayMs?: number;
}

/** A running live connection. */
export interface LiveClient {
  /** How many snapshots arrived (1 + successful reconnects). */
  readonly snapshots: number;
  /** Stops reconnecting and closes the socket; resolves once it is closed. */
  close(): Promise<void>;
}

/** Turns a page-relative path into a ws: or wss: URL for the page's origin. */
export function liveUrl(path: string, base: string): string {
  const url = new URL(path, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** Opens `url` and keeps it open until {@link LiveClient.close} is called. */
export function connectLive(
  url: string,
  options: LiveClientOptions,
): LiveClient {
  const minDelay = options.minDelayMs ?? 500;
  const maxDelay = options.maxDelayMs ?? 10_000;
  let socket: WebSocket | undefined;
  let socketClosed: Promise<void> = Promise.resolve();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let failures = 0;
  let snapshots = 0;
  let stopped = false;

  function report(state: LiveState) {
    options.onState?.(state);
  }

  function open() {
    timer = undefined;
    report(snapshots === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(url);
    socket = ws;
    socketClosed = new Promise((resolve) => {
      ws.addEventListener("close", () => resolve(), { once: true });
    });
    ws.onmessage = (event) => {
      let message: LiveMessage;
      try {
        message = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (message.type === "snapshot") {
        failures = 0;
        snapshots++;
        report("live");
      }
      options.onMessage(message);
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = undefined;
      if (event.code === POLICY_VIOLATION) {
        stopped = true;
        report("closed");
      } else if (!stopped) {
        scheduleReconnect();
      }
    };
  }

  function scheduleReconnect() {
    report("reconnecting");
    const base = Math.min(maxDelay, minDelay * 2 ** failures);
    failures++;
    timer = setTimeout(open, base * (0.8 + Math.random() * 0.4));
  }

  function reconnectNow() {
    if (stopped || socket || timer === undefined) return;
    clearTimeout(timer);
    open();
  }

  globalThis.addEventListener?.("online", reconnectNow);
  open();

  return {
    get snapshots() {
      return snapshots;
    },
    async close() {
      stopped = true;
      globalThis.removeEventListener?.("online", reconnectNow);
      clearTimeout(timer);
      timer = undefined;
      const ws = socket;
      socket = undefined;
      if (ws && ws.readyState !== WebSocket.CLOSED) {
        ws.close(1000, "client closed");
        await socketClosed;
      }
      report("closed");
    },
  };
}
