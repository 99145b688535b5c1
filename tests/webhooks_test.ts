/**
 * Webhooks against a real receiver (tests/support/webhook_receiver.ts):
 * every event with its payload and a signature that verifies, retries
 * after a 500 and after a timeout, giving up after the retry window,
 * replay, the deliveries API, and nothing written when webhooks are off.
 */

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { webhookByRecordingPrefix, webhookDuePrefix } from "../lib/kv/keys.ts";
import { signWebhook, verifyWebhook } from "../lib/webhooks/signature.ts";
import type { WebhookDeliveryList } from "../common/webhook_view.ts";
import {
  makeRecording,
  mediaBytes,
  missingTool,
  sendChunk,
  splitBytes,
  startTestServer,
  waitForStatus,
} from "./helpers.ts";
import {
  type ReceivedHook,
  startReceiver,
} from "./support/webhook_receiver.ts";

const ffmpegMissing = await missingTool("ffmpeg");
const SECRET = "test-webhook-secret";

async function create(url: string): Promise<{ id: string; token: string }> {
  const res = await fetch(`${url}/create/`, { method: "POST" });
  assert.equal(res.status, 200);
  const body = await res.json();
  return { id: body.video_id, token: body.upload_token };
}

async function post(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: "POST", headers });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function deliveriesOf(
  url: string,
  id: string,
  headers: Record<string, string> = {},
): Promise<WebhookDeliveryList> {
  const res = await fetch(`${url}/api/recordings/${id}/webhooks`, { headers });
  assert.equal(res.status, 200);
  return await res.json();
}

/** Polls a recording's deliveries until `done` accepts them. */
async function deliveriesUntil(
  url: string,
  id: string,
  done: (list: WebhookDeliveryList) => boolean,
  timeoutMs = 20_000,
): Promise<WebhookDeliveryList> {
  const deadline = Date.now() + timeoutMs;
  let list = await deliveriesOf(url, id);
  while (!done(list)) {
    if (Date.now() > deadline) {
      throw new Error(`deliveries never matched: ${JSON.stringify(list)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
    list = await deliveriesOf(url, id);
  }
  return list;
}

function assertSigned(hook: ReceivedHook): void {
  const ts = hook.headers.get("x-tapedeck-timestamp");
  const sig = hook.headers.get("x-tapedeck-signature");
  assert.match(sig ?? "", /^v1=[0-9a-f]{64}$/);
  assert.ok(
    verifyWebhook(SECRET, ts, hook.body, sig),
    "the signature verifies with the secret",
  );
  assert.ok(!verifyWebhook("another-secret", ts, hook.body, sig));
  assert.ok(!verifyWebhook(SECRET, ts, hook.body + " ", sig));
  assert.equal(hook.headers.get("content-type"), "application/json");
  assert.equal(hook.headers.get("x-tapedeck-event"), hook.json.type);
  assert.equal(hook.headers.get("x-tapedeck-event-id"), hook.json.id);
  assert.match(
    hook.headers.get("x-tapedeck-delivery") ?? "",
    /^[0-9a-f-]{36}$/,
  );
  assert.ok(!Number.isNaN(Date.parse(hook.json.created_at)));
}

function eventFor(type: string, id: string) {
  return (h: ReceivedHook) =>
    h.json?.type === type && h.json?.data?.video_id === id;
}

Deno.test("webhooks: the signature is HMAC-SHA256 of timestamp.body and expires", () => {
  const body = '{"id":"x","type":"recording.created"}';
  const ts = Math.floor(Date.now() / 1000);
  const sig = signWebhook("s3cret", ts, body);
  // The recipe of docs/webhooks.md.
  assert.equal(
    sig,
    `v1=${
      createHmac("sha256", "s3cret").update(`${ts}.${body}`).digest("hex")
    }`,
  );
  assert.ok(verifyWebhook("s3cret", String(ts), body, sig));
  assert.ok(verifyWebhook("s3cret", String(ts), body, `v1=00, ${sig}`));
  assert.ok(!verifyWebhook("s3cret", String(ts - 301), body, sig));
  assert.ok(!verifyWebhook("s3cret", null, body, sig));
  assert.ok(!verifyWebhook("s3cret", String(ts), body, null));
});

Deno.test({
  name:
    "webhooks: every event arrives once, signed, with its payload (created, completed, video.ready, video.failed, deleted)",
  ignore: ffmpegMissing,
  async fn() {
    const receiver = startReceiver();
    const server = await startTestServer({
      WEBHOOK_URLS: receiver.url,
      WEBHOOK_SECRET: SECRET,
      PUBLIC_URL: "https://tapedeck.example",
      JOB_MAX_ATTEMPTS: "1",
    });
    try {
      const dir = await Deno.makeTempDir();
      const bytes = await makeRecording(`${dir}/a.webm`, { seconds: 2 });
      await Deno.remove(dir, { recursive: true });

      // A good recording: created, completed, video.ready, then deleted.
      const good = await create(server.url);
      const created = await receiver.waitFor(
        eventFor("recording.created", good.id),
      );
      for (const [i, piece] of splitBytes(bytes, [40_000]).entries()) {
        const res = await sendChunk(server.url, good.id, piece, i);
        assert.equal(res.status, 200, await res.text());
      }
      assert.equal(
        (await post(`${server.url}/complete_job/${good.id}/`)).status,
        200,
      );
      const completed = await receiver.waitFor(
        eventFor("recording.completed", good.id),
      );
      const ready = await receiver.waitFor(
        eventFor("video.ready", good.id),
        60_000,
      );
      const del = await fetch(`${server.url}/files/${good.id}`, {
        method: "DELETE",
        headers: { "Tus-Resumable": "1.0.0", "X-Upload-Token": good.token },
      });
      assert.equal(del.status, 204, await del.text());
      const deleted = await receiver.waitFor(
        eventFor("recording.deleted", good.id),
      );

      // A recording that is not one: created, completed, video.failed.
      const bad = await create(server.url);
      const res = await sendChunk(server.url, bad.id, mediaBytes(4096), 0);
      assert.equal(res.status, 200, await res.text());
      await post(`${server.url}/complete_job/${bad.id}/`);
      await waitForStatus(server.url, bad.id, ["failed"]);
      const failed = await receiver.waitFor(
        eventFor("video.failed", bad.id),
      );

      for (const hook of [created, completed, ready, deleted, failed]) {
        assertSigned(hook);
      }
      const d = (h: ReceivedHook) => h.json.data;
      assert.equal(d(created).status, "recording");
      assert.equal(
        d(created).urls.status,
        `https://tapedeck.example/check_status/${good.id}/`,
      );
      assert.equal(d(completed).status, "processing");
      assert.equal(d(completed).expired, false);
      assert.equal(d(completed).bytes_received, bytes.length);
      assert.ok(Date.parse(d(completed).completed_at) > 0);

      const r = d(ready);
      assert.equal(r.status, "complete");
      assert.ok(r.duration_s > 1.5 && r.duration_s < 2.5, `${r.duration_s}`);
      assert.ok(r.processing_s >= 0);
      const names = r.files.map((f: { name: string }) => f.name).sort();
      assert.deepEqual(names, [`${good.id}.mp4`, `${good.id}.webm`]);
      for (const f of r.files) {
        assert.equal(
          f.url,
          `https://tapedeck.example/media/${good.id}/${f.name}`,
        );
        assert.ok(f.size > 1000);
        assert.equal(f.duration_s, r.duration_s);
      }
      assert.equal(r.poster.name, `${good.id}.jpg`);
      assert.equal(d(deleted).status, "deleted");
      assert.equal(d(failed).status, "failed");
      assert.match(d(failed).error, /\S/);

      // Each event once, each with its own id.
      const mine = receiver.received.filter((h) =>
        [good.id, bad.id].includes(h.json?.data?.video_id)
      );
      assert.equal(
        mine.length,
        7,
        JSON.stringify(mine.map((h) => h.json.type)),
      );
      assert.equal(new Set(mine.map((h) => h.json.id)).size, 7);

      // The deliveries API lists them, newest first, delivered.
      const list = await deliveriesOf(server.url, bad.id);
      assert.equal(list.enabled, true);
      assert.deepEqual(
        list.deliveries.map((x) => [x.event, x.state, x.attempts]),
        [
          ["video.failed", "delivered", 1],
          ["recording.completed", "delivered", 1],
          ["recording.created", "delivered", 1],
        ],
      );
      assert.equal(list.deliveries[0].url, receiver.url);
      assert.equal(list.deliveries[0].last_status, 200);
      // Deleted recordings keep their deliveries' history.
      assert.equal(
        (await deliveriesOf(server.url, good.id)).deliveries.length,
        4,
      );
    } finally {
      await server.close();
      await receiver.close();
    }
  },
});

Deno.test("webhooks: a receiver that answers 500 gets the event again, and replay sends it once more", async () => {
  const receiver = startReceiver((n) => (n === 0 ? 500 : 200));
  const server = await startTestServer({
    WEBHOOK_URLS: receiver.url,
    WEBHOOK_SECRET: SECRET,
    WEBHOOK_BACKOFF_MS: "200",
  });
  try {
    const { id } = await create(server.url);
    await receiver.waitFor((h) => h.status === 200, 10_000, "the retry");
    const [first, second] = receiver.received;
    assert.equal(first.status, 500);
    assert.equal(first.json.id, second.json.id, "the same event");
    assert.equal(first.body, second.body, "the same body");
    assert.ok(second.at - first.at >= 150, `${second.at - first.at} ms apart`);
    assertSigned(second);
    const list = await deliveriesUntil(
      server.url,
      id,
      (l) => l.deliveries[0]?.state === "delivered",
    );
    const delivery = list.deliveries[0];
    assert.equal(delivery.attempts, 2);
    assert.equal(delivery.last_error, null);

    // Replay: the same event, sent again.
    const replay = await post(
      `${server.url}/api/webhooks/${delivery.id}/replay`,
    );
    assert.equal(replay.status, 200);
    assert.equal(replay.body.state, "pending");
    await receiver.waitFor(
      (h) => receiver.received.indexOf(h) === 2,
      10_000,
      "the replay",
    );
    assert.equal(receiver.received[2].json.id, first.json.id);
    await deliveriesUntil(
      server.url,
      id,
      (l) =>
        l.deliveries[0].state === "delivered" &&
        l.deliveries[0].attempts === 3,
    );
    const one = await fetch(`${server.url}/api/webhooks/${delivery.id}`);
    assert.equal((await one.json()).attempts, 3);

    const missing = await post(
      `${server.url}/api/webhooks/00000000-0000-4000-8000-000000000000/replay`,
    );
    assert.equal(missing.status, 404);
    assert.equal(
      (await post(`${server.url}/api/webhooks/nope/replay`)).status,
      404,
    );
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("webhooks: a receiver that never answers times out, is retried, and is given up after the retry window", async () => {
  const receiver = startReceiver(() => "hang");
  const server = await startTestServer({
    WEBHOOK_URLS: receiver.url,
    WEBHOOK_TIMEOUT_MS: "300",
    WEBHOOK_BACKOFF_MS: "100",
    WEBHOOK_RETRY_S: "2",
  });
  try {
    const { id } = await create(server.url);
    const list = await deliveriesUntil(
      server.url,
      id,
      (l) => l.deliveries[0]?.state === "failed",
      15_000,
    );
    const d = list.deliveries[0];
    assert.ok(d.attempts >= 3, `${d.attempts} attempts`);
    assert.match(d.last_error ?? "", /no answer within 300 ms/);
    assert.equal(d.next_attempt_at, null);
    const attemptsSeen = receiver.received.length;
    assert.equal(attemptsSeen, d.attempts);
    // Nothing is pending any more.
    const due = await Array.fromAsync(
      server.service.ctx.kv.list({ prefix: webhookDuePrefix() }),
    );
    assert.equal(due.length, 0);
  } finally {
    await receiver.close();
    await server.close();
  }
});

Deno.test("webhooks: the API needs a key when API_KEYS is set; off without WEBHOOK_URLS", async () => {
  const receiver = startReceiver();
  const keyed = await startTestServer({
    WEBHOOK_URLS: receiver.url,
    API_KEYS: "k1",
  });
  const off = await startTestServer();
  try {
    const res = await fetch(`${keyed.url}/create/`, {
      method: "POST",
      headers: { Authorization: "Bearer k1" },
    });
    const id = (await res.json()).video_id;
    const anon = await fetch(`${keyed.url}/api/recordings/${id}/webhooks`);
    assert.equal(anon.status, 401);
    await anon.body?.cancel();
    const withKey = await deliveriesOf(keyed.url, id, { "X-API-Key": "k1" });
    assert.equal(withKey.deliveries.length, 1);
    const replayAnon = await post(
      `${keyed.url}/api/webhooks/${withKey.deliveries[0].id}/replay`,
    );
    assert.equal(replayAnon.status, 401);

    // Webhooks off: nothing is written, the list says so, replay is a 409.
    const plain = await create(off.url);
    const offList = await deliveriesOf(off.url, plain.id);
    assert.deepEqual(offList, { enabled: false, deliveries: [] });
    const kv = off.service.ctx.kv;
    assert.equal(
      (await Array.fromAsync(
        kv.list({ prefix: webhookByRecordingPrefix(plain.id) }),
      )).length,
      0,
    );
    assert.equal(off.service.webhooks, undefined);
  } finally {
    await keyed.close();
    await off.close();
    await receiver.close();
  }
});
