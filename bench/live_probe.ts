/**
 * Measures the delay from a recording change to its WebSocket message on
 * `/ws`: the server stamps each change with `updatedAt` (Date.now() just
 * before the commit) and the bench runs on the same machine and clock, so
 * the delay is the receipt time minus `updatedAt`.
 */

import { type LatencySummary, summarize } from "./stats.ts";

interface LiveRecording {
  id: string;
  status: string;
  updatedAt: number;
}

/** A connected `/ws` observer. */
export interface LiveProbe {
  /** Delays of every change message, ms. */
  delays: number[];
  /** Delays of the messages that carried a new status, ms. */
  statusDelays: number[];
  /** Resolves with the receipt time (performance.now()) of `status` for `id`. */
  waitForStatus(id: string, status: string, timeoutMs: number): Promise<number>;
  close(): Promise<void>;
}

/** Summary of a probe's delays. */
export interface LiveSummary {
  changes: LatencySummary;
  statusChanges: LatencySummary;
}

/** Summarizes what a probe saw. */
export function summarizeProbe(probe: LiveProbe): LiveSummary {
  return {
    changes: summarize(probe.delays),
    statusChanges: summarize(probe.statusDelays),
  };
}

/**
 * Connects to `<baseUrl>/ws` and waits for its snapshot; resolves null when
 * the server has no `/ws` (or sends no snapshot within `timeoutMs`).
 */
export async function openLiveProbe(
  baseUrl: string,
  timeoutMs = 3000,
): Promise<LiveProbe | null> {
  let ws: WebSocket;
  try {
    ws = new WebSocket(`${baseUrl.replace(/^http/, "ws")}/ws`);
  } catch {
    return null;
  }
  const delays: number[] = [];
  const statusDelays: number[] = [];
  const statuses = new Map<string, string>();
  const waiters = new Map<string, (t: number) => void>();
  const closed = new Promise<void>((resolve) =>
    ws.addEventListener("close", () => resolve(), { once: true })
  );
  const snapshot = Promise.withResolvers<boolean>();
  const timer = setTimeout(() => snapshot.resolve(false), timeoutMs);
  ws.addEventListener("error", () => snapshot.resolve(false));
  ws.addEventListener("close", () => snapshot.resolve(false));
  ws.addEventListener("message", (event) => {
    const receivedAt = Date.now();
    const now = performance.now();
    let message: {
      type?: string;
      recording?: LiveRecording;
      recordings?: LiveRecording[];
    };
    try {
      message = JSON.parse(String(event.data));
    } catch {
      return;
    }
    if (message.type === "snapshot") {
      for (const r of message.recordings ?? []) statuses.set(r.id, r.status);
      snapshot.resolve(true);
      return;
    }
    const rec = message.recording;
    if (message.type !== "change" || !rec) return;
    const delay = receivedAt - rec.updatedAt;
    delays.push(delay);
    if (statuses.get(rec.id) !== rec.status) {
      statusDelays.push(delay);
      statuses.set(rec.id, rec.status);
    }
    waiters.get(`${rec.id} ${rec.status}`)?.(now);
  });
  const ok = await snapshot.promise;
  clearTimeout(timer);
  if (!ok) {
    try {
      ws.close();
    } catch {
      // not open
    }
    return null;
  }
  return {
    delays,
    statusDelays,
    waitForStatus(id, status, waitMs) {
      return new Promise((resolve, reject) => {
        const key = `${id} ${status}`;
        const t = setTimeout(() => {
          waiters.delete(key);
          reject(new Error(`no ${status} message for ${id} in ${waitMs} ms`));
        }, waitMs);
        waiters.set(key, (at) => {
          clearTimeout(t);
          waiters.delete(key);
          resolve(at);
        });
      });
    },
    async close() {
      if (ws.readyState === WebSocket.OPEN) ws.close(1000, "bench done");
      await Promise.race([closed, new Promise((r) => setTimeout(r, 1000))]);
    },
  };
}
