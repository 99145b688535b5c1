/**
 * The recording page in Chromium: its webhook deliveries appear (pending
 * with the receiver's error, then delivered after the retry), and the
 * Replay button sends the event again.
 */

import assert from "node:assert/strict";
import { artifactPath, eventually, launchBrowser } from "./browser_helpers.ts";
import { missingTool, startTestServer } from "./helpers.ts";
import { startReceiver } from "./support/webhook_receiver.ts";

const chromiumMissing = await missingTool("chromium");

Deno.test({
  name:
    "webhook page: a recording's page lists its deliveries with state, attempts and last error, and Replay sends the event again",
  ignore: chromiumMissing,
  async fn() {
    const receiver = startReceiver((n) => (n === 0 ? 500 : 200));
    const server = await startTestServer({
      WEBHOOK_URLS: receiver.url,
      WEBHOOK_SECRET: "s",
      WEBHOOK_BACKOFF_MS: "4000",
      RUN_WORKER: "false",
    });
    const browser = await launchBrowser();
    try {
      const page = await browser!.newPage();
      await page.goto(`${server.url}/`); // builds the bundle first
      const res = await fetch(`${server.url}/create/`, { method: "POST" });
      const id = (await res.json()).video_id;
      await receiver.waitFor(() => true);
      await page.goto(`${server.url}/videos/${id}`);
      const row = page.locator("#webhooks tr[data-delivery]");
      await row.first().waitFor({ timeout: 15_000 });
      // The first attempt failed: pending, with the receiver's answer.
      assert.equal(await row.count(), 1);
      const text = await row.first().innerText();
      assert.match(text, /recording\.created/);
      assert.match(text, /HTTP 500: receiver says no/);
      // The retry is delivered; the page follows while it is pending.
      await row.first().and(page.locator('[data-state="delivered"]')).waitFor({
        timeout: 15_000,
      });
      assert.match(await row.first().innerText(), /\b2\b/);
      await page.screenshot({
        path: await artifactPath("webhook_deliveries.png"),
        fullPage: true,
      });
      await row.first().locator('[data-action="replay"]').click();
      await eventually(
        () => receiver.received.length === 3,
        10_000,
        "replayed",
      );
      assert.equal(receiver.received[2].json.id, receiver.received[0].json.id);
      await eventually(
        async () =>
          /\b3\b/.test(
            await row.first().locator("td.num").innerText(),
          ),
        10_000,
        "the page shows the third attempt",
      );
    } finally {
      await browser?.close();
      await server.close();
      await receiver.close();
    }
  },
});
