/**
 * Webhooks across processes and instances: deliveries survive kill -9 of
 * the server (between attempts and during one), two instances on one
 * shared KV deliver each event once (and the other takes over when the
 * holder stops), and a receiver that hangs does not slow ingest.
 */

import assert from "node:assert/strict";
import type { WebhookDeliveryList } from "../common/webhook_view.ts";
import {
  type ChildServer,
  mediaBytes,
  sendChunk,
  spawnServer,
  startTestServer,
} from "./helpers.ts";
import { needsPostgres, startPostgres } from "./support/postgres.ts";
import { startReceiver } from "./support/webhook_receiver.ts";

async function create(url: string): Promise<string> {
  const res = await fetch(`${url}/create/`, { method: "POST" });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.video_id;
}

async function deliveriesUntil(
  url: string,
  id: string,
  done: (list: WebhookDeliveryList) => boolean,
  timeoutMs = 20_000,
): Promise<WebhookDeliveryList> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const res = await fetch(`${url}/api/recordings/${id}/webhooks`);
    const list: WebhookDeliveryList = await res.json();
    if (done(list)) return list;
    if (Date.now() > deadline) {
      throw new Error(`deliveries never matched: ${JSON.stringify(list)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("webhooks: kill -9 of the server between two attempts still delivers the event", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-hook-kill-" });
  let answer = 500;
  const receiver = startReceiver(() => answer);
  const env = {
    WEBHOOK_URLS: receiver.url,
    WEBHOOK_SECRET: "s",
    WEBHOOK_BACKOFF_MS: "2000",
  };
  let server: ChildServer | undefined;
  try {
    server = await spawnServer(dataDir, env);
    const id = await create(server.url);
    const first = await receiver.waitFor((h) => h.status === 500);
    // The failed attempt is recorded: the next one is due in 2 s.
    await deliveriesUntil(
      server.url,
      id,
      (l) => l.deliveries[0]?.last_status === 500,
    );
    await server.stop("SIGKILL");
    server = undefined;
    assert.equal(receiver.received.length, 1, "killed before the retry");
    answer = 200;
    server = await spawnServer(dataDir, env);
    const again = await receiver.waitFor((h) => h.status === 200, 20_000);
    assert.equal(again.json.id, first.json.id, "the same event");
    assert.equal(again.json.data.video_id, id);
    const list = await deliveriesUntil(
      server.url,
      id,
      (l) => l.deliveries[0]?.state === "delivered",
    );
    assert.equal(list.deliveries[0].attempts, 2);
    assert.equal(receiver.received.length, 2);
  } finally {
    await server?.stop("SIGKILL");
    await receiver.close();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});

Deno.test("webhooks: kill -9 during an attempt: the event is sent again after the restart", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-hook-kill-" });
  let answer: number | "hang" = "hang";
  const receiver = startReceiver(() => answer);
  const env = {
    WEBHOOK_URLS: receiver.url,
    WEBHOOK_TIMEOUT_MS: "1500",
    WEBHOOK_BACKOFF_MS: "300",
  };
  let server: ChildServer | undefined;
  try {
    server = await spawnServer(dataDir, env);
    const id = await create(server.url);
    const first = await receiver.waitFor(() => true);
    await server.stop("SIGKILL");
    server = undefined;
    answer = 200;
    server = await spawnServer(dataDir, env);
    const again = await receiver.waitFor((h) => h.status === 200, 20_000);
    assert.equal(again.json.id, first.json.id);
    await deliveriesUntil(
      server.url,
      id,
      (l) => l.deliveries[0]?.state === "delivered",
    );
  } finally {
    await server?.stop("SIGKILL");
    await receiver.close();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});

Deno.test({
  name:
    "webhooks: two instances on one shared KV (PostgreSQL) deliver each event once; the other takes over when the holder stops",
  ...needsPostgres(),
  async fn() {
    const pg = await startPostgres({ fast: true });
    const receiver = startReceiver();
    const env = {
      KV_PATH: pg.url,
      SHARED_KV: "true",
      WEBHOOK_URLS: receiver.url,
      WEBHOOK_LEASE_MS: "2000",
    };
    const a = await startTestServer(env);
    const b = await startTestServer({ ...env, DATA_DIR: a.dataDir });
    const open = new Set([a, b]);
    try {
      const ids = await Promise.all(
        Array.from({ length: 12 }, (_, i) => create(i % 2 ? b.url : a.url)),
      );
      const seen = () =>
        new Set(receiver.received.map((h) => h.json?.data?.video_id));
      const deadline = Date.now() + 20_000;
      while (ids.some((id) => !seen().has(id)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(ids.every((id) => seen().has(id)), "every event arrived");
      // Time for a duplicate to show up, were there one.
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(receiver.received.length, 12, "each event once");
      const holders = [a, b].filter((s) => s.service.webhooks?.holding);
      assert.equal(holders.length, 1, "one instance holds the worker lease");

      // The holder stops (releasing its lease): the other one delivers.
      const holder = holders[0];
      const other = holder === a ? b : a;
      open.delete(holder);
      await holder.close();
      const late = await create(other.url);
      await receiver.waitFor((h) => h.json?.data?.video_id === late, 10_000);
      assert.ok(other.service.webhooks?.holding);
      assert.equal(receiver.received.length, 13);
    } finally {
      for (const s of open) await s.close().catch(() => {});
      await receiver.close();
      await pg.stop();
    }
  },
});

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

/** add_data latencies (ms) of 5 recordings x 30 chunks of 64 KiB sent at once. */
async function ingestLatencies(url: string): Promise<number[]> {
  const chunk = mediaBytes(64 * 1024, 7);
  const ids = await Promise.all([1, 2, 3, 4, 5].map(() => create(url)));
  // Let the deliveries of the creates start (and hang).
  await new Promise((r) => setTimeout(r, 300));
  const times: number[] = [];
  await Promise.all(ids.map(async (id) => {
    for (let i = 0; i < 30; i++) {
      const started = performance.now();
      const res = await sendChunk(url, id, chunk, i);
      const text = await res.text();
      assert.equal(res.status, 200, text);
      times.push(performance.now() - started);
    }
  }));
  return times.sort((x, y) => x - y);
}

Deno.test("webhooks: ingest latency is unchanged while the receiver hangs", async () => {
  const receiver = startReceiver(() => "hang");
  const results: Record<string, number[]> = {};
  try {
    for (const mode of ["none", "hanging"] as const) {
      const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-hook-lat-" });
      const server = await spawnServer(
        dataDir,
        mode === "none" ? {} : {
          WEBHOOK_URLS: receiver.url,
          WEBHOOK_TIMEOUT_MS: "1500",
          WEBHOOK_BACKOFF_MS: "100",
          // Room for an attempt per recording (10), all of them hanging.
          WEBHOOK_CONCURRENCY: "16",
        },
      );
      try {
        await ingestLatencies(server.url); // warm-up
        results[mode] = await ingestLatencies(server.url);
      } finally {
        await server.stop("SIGKILL");
        await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      }
    }
    const hangingNow = receiver.received.length;
    const line = (mode: string) => {
      const t = results[mode];
      return `${mode}: p50 ${percentile(t, 0.5).toFixed(1)} ms, p95 ${
        percentile(t, 0.95).toFixed(1)
      } ms, max ${t.at(-1)!.toFixed(1)} ms (${t.length} chunks)`;
    };
    console.log(
      `add_data latency, 5 recordings x 30 chunks of 64 KiB at once\n  ${
        line("none")
      }\n  ${
        line("hanging")
      }\n  attempts left hanging at the receiver: ${hangingNow}`,
    );
    assert.ok(hangingNow >= 10, "the receiver really was hanging on attempts");
    const none = results.none;
    const hanging = results.hanging;
    assert.ok(
      percentile(hanging, 0.5) <= percentile(none, 0.5) * 3 + 25,
      "median within a generous bound",
    );
    assert.ok(
      percentile(hanging, 0.95) <= percentile(none, 0.95) * 3 + 100,
      "p95 within a generous bound",
    );
  } finally {
    await receiver.close();
  }
});
