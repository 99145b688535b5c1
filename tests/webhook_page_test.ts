/**
 * The recording page's webhook list without a browser: the plain class
 * (client/webhook_deliveries.ts) against a real server and receiver, and
 * the component's markup.
 */

import assert from "node:assert/strict";
import { signal } from "@preact/signals";
import { renderToString } from "preact-render-to-string";
import { WebhookDeliveries } from "../client/webhook_deliveries.ts";
import { WebhookList } from "../components/recording/webhook_list.tsx";
import type { WebhookDeliveryList } from "../common/webhook_view.ts";
import { eventually } from "./browser_helpers.ts";
import { startTestServer } from "./helpers.ts";
import { startReceiver } from "./support/webhook_receiver.ts";

Deno.test("webhook page: the list loads, polls while a delivery is pending, reloads on a status change, replays, and stops when closed", async () => {
  let answer = 500;
  const receiver = startReceiver(() => answer);
  const server = await startTestServer({
    WEBHOOK_URLS: receiver.url,
    WEBHOOK_BACKOFF_MS: "300",
    RUN_WORKER: "false",
  });
  try {
    const res = await fetch(`${server.url}/create/`, { method: "POST" });
    const id = (await res.json()).video_id;
    await receiver.waitFor(() => true);
    let fetches = 0;
    const recording = signal({ status: "recording" });
    const model = new WebhookDeliveries(id, {
      base: server.url,
      pollMs: 100,
      recording,
      fetch: (input, init) => {
        fetches++;
        return fetch(input, init);
      },
    });
    const close = model.open();
    try {
      await eventually(() => model.list.value !== null, 5_000, "loaded");
      assert.equal(model.list.value!.enabled, true);
      assert.equal(model.list.value!.deliveries[0].event, "recording.created");
      answer = 200;
      // Polled while pending, until delivered.
      await eventually(
        () => model.list.value!.deliveries[0].state === "delivered",
        10_000,
        "delivered",
      );
      const d = model.list.value!.deliveries[0];
      assert.equal(d.attempts, 2);

      // A status change loads the list again (the completed event).
      await fetch(`${server.url}/add_data/${id}/`, {
        method: "POST",
        body: new Uint8Array([
          0x1a,
          0x45,
          0xdf,
          0xa3,
          ...new Array(600).fill(1),
        ]),
      }).then((r) => r.body?.cancel());
      await fetch(`${server.url}/complete_job/${id}/`, { method: "POST" })
        .then((r) => r.body?.cancel());
      const before = fetches;
      recording.value = { status: "processing" };
      await eventually(() => fetches > before, 2_000, "reloaded");
      await eventually(
        () => model.list.value!.deliveries.length === 2,
        10_000,
        "the completed event listed",
      );

      await model.replay(d.id);
      assert.deepEqual(model.replays.value[d.id], {});
      await eventually(
        () =>
          model.list.value!.deliveries.find((x) => x.id === d.id)!.attempts ===
            3,
        10_000,
        "replayed",
      );
      await model.replay("00000000-0000-4000-8000-000000000000");
      assert.match(
        model.replays.value["00000000-0000-4000-8000-000000000000"].error ??
          "",
        /no webhook delivery/,
      );
    } finally {
      close();
    }
    const after = fetches;
    await new Promise((r) => setTimeout(r, 300));
    recording.value = { status: "complete" };
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(fetches, after, "nothing is fetched once closed");
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("webhook page: the list renders each delivery with its state, attempts, error and a Replay button; nothing when off", () => {
  const list: WebhookDeliveryList = {
    enabled: true,
    deliveries: [{
      id: "d1",
      event_id: "e1",
      event: "video.failed",
      video_id: "v",
      url: "https://hooks.example/in",
      state: "pending",
      attempts: 3,
      created_at: new Date(0).toISOString(),
      last_attempt_at: new Date(1000).toISOString(),
      next_attempt_at: new Date(61_000).toISOString(),
      last_status: 500,
      last_error: "HTTP 500: receiver says no",
      delivered_at: null,
      retry_until: new Date(86_400_000).toISOString(),
    }],
  };
  const html = renderToString(
    WebhookList({
      list,
      replays: {},
      now: 1000,
      ready: true,
      onReplay: () => {},
    })!,
  );
  assert.match(html, /data-state="pending"/);
  assert.match(html, /video\.failed/);
  assert.match(html, /HTTP 500: receiver says no/);
  assert.match(html, /next try in 60 s/);
  assert.match(html, /<td class="num">3<\/td>/);
  assert.match(html, /data-action="replay"/);
  assert.equal(
    WebhookList({
      list: { enabled: false, deliveries: [] },
      replays: {},
      now: 0,
      ready: true,
      onReplay: () => {},
    }),
    null,
  );
  assert.equal(
    WebhookList({
      list: null,
      replays: {},
      now: 0,
      ready: false,
      onReplay() {},
    }),
    null,
  );
});
