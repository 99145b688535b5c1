/**
 * Issue 12, finding 1 in a real browser: with the defaults, a page on
 * another origin can use the API (create, add_data, check_status) as
 * recorders on other origins do, but cannot read the pages, the media files
 * or the live sockets; and a page reached through a rebound name (DNS
 * rebinding, played with Chromium's --host-resolver-rules) gets a 421
 * instead of the dashboard. Also: the dashboard goes live in Chromium when
 * served by main.ts's listener (lib/http/slow_guard.ts, node:http).
 */

import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { loadConfig } from "../lib/core/config.ts";
import { serveGuarded } from "../lib/http/slow_guard.ts";
import { startService } from "../main.ts";
import { BASE_BROWSER_ARGS, CHROMIUM_PATH } from "./browser_helpers.ts";
import {
  mediaBytes,
  missingTool,
  sendChunk,
  startTestServer,
} from "./helpers.ts";
import { servePage } from "./stop_helpers.ts";

const chromiumMissing = await missingTool("chromium");

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>another site</title></head>
<body><p>a page on another origin</p></body></html>`;

/** What the page on the other origin could do, each step's outcome. */
interface Probe {
  create: string;
  addData: string;
  checkStatus: string;
  dashboard: string;
  recordingPage: string;
  media: string;
  socket: string;
}

Deno.test({
  name:
    "browser cross-origin: another site's page can call the API but cannot read pages, media or live sockets",
  ignore: chromiumMissing,
  async fn() {
    const server = await startTestServer({ RUN_WORKER: "false" });
    const other = servePage(PAGE);
    const browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: BASE_BROWSER_ARGS,
    });
    try {
      assert.notEqual(new URL(other.url).origin, new URL(server.url).origin);
      // A recording with data, so its source file can be served.
      const seeded = await (await fetch(`${server.url}/create/`, {
        method: "POST",
      })).json();
      await (await sendChunk(server.url, seeded.video_id, mediaBytes(2000), 0))
        .body?.cancel();
      const page = await browser.newPage();
      await page.goto(other.url);
      const probe: Probe = await page.evaluate(
        async ({ api, seeded }) => {
          const outcome = async (run: () => Promise<string>) => {
            try {
              return await run();
            } catch (err) {
              return `blocked: ${(err as Error).name}`;
            }
          };
          let id = "";
          const create = await outcome(async () => {
            const res = await fetch(`${api}/create/`, { method: "POST" });
            id = (await res.json()).video_id;
            return `read ${res.status}`;
          });
          const blob = new Blob([new Uint8Array([0x1a, 0x45, 0xdf, 0xa3, 1])], {
            type: "video/webm",
          });
          const addData = await outcome(async () => {
            const res = await fetch(`${api}/add_data/${id}/`, {
              method: "POST",
              body: blob,
              headers: { "Content-Type": "video/webm" },
            });
            return `read ${res.status} ${(await res.json()).message}`;
          });
          const checkStatus = await outcome(async () => {
            const res = await fetch(`${api}/check_status/${id}/`);
            return `read ${res.status} ${(await res.json()).status}`;
          });
          const readText = (path: string) =>
            outcome(async () => {
              const res = await fetch(`${api}${path}`);
              return `read ${res.status} ${(await res.text()).length} chars`;
            });
          const dashboard = await readText("/");
          const recordingPage = await readText(`/videos/${seeded}`);
          const media = await readText(`/media/${seeded}/source`);
          const socket = await new Promise<string>((resolve) => {
            const ws = new WebSocket(`${api.replace(/^http/, "ws")}/ws`);
            ws.onmessage = (e) => {
              resolve(`read ${String(e.data).slice(0, 20)}`);
              ws.close();
            };
            ws.onerror = () => resolve("blocked: error");
            setTimeout(() => resolve("blocked: timeout"), 5000);
          });
          return {
            create,
            addData,
            checkStatus,
            dashboard,
            recordingPage,
            media,
            socket,
          };
        },
        { api: server.url, seeded: seeded.video_id },
      );
      console.log(`cross-origin probe: ${JSON.stringify(probe)}`);
      assert.equal(probe.create, "read 200");
      assert.equal(probe.addData, "read 200 Chunk received");
      assert.equal(probe.checkStatus, "read 200 recording");
      assert.match(probe.dashboard, /^blocked/);
      assert.match(probe.recordingPage, /^blocked/);
      assert.match(probe.media, /^blocked/);
      assert.match(probe.socket, /^blocked/);
    } finally {
      await browser.close();
      await other.close();
      await server.close();
    }
  },
});

Deno.test({
  name:
    "browser cross-origin: a page reached through a rebound name (DNS rebinding) gets 421, not the dashboard",
  ignore: chromiumMissing,
  async fn() {
    const server = await startTestServer({ RUN_WORKER: "false" });
    const port = new URL(server.url).port;
    const browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [
        ...BASE_BROWSER_ARGS,
        // The attacker's name, now pointing at the victim's server.
        "--host-resolver-rules=MAP rebind.attacker.example 127.0.0.1",
      ],
    });
    try {
      const page = await browser.newPage();
      const res = await page.goto(`http://rebind.attacker.example:${port}/`);
      assert.equal(res?.status(), 421);
      const body = await page.evaluate(() => document.body.innerText);
      assert.match(body, /ALLOWED_HOSTS/);
      // Its scripts, on that origin, read nothing useful either.
      const api = await page.evaluate(async () => {
        const r = await fetch(
          "/check_status/0b9d6f3e-2c1a-4f59-9a8e-7d2f4c1b3a10/",
        );
        return r.status;
      });
      assert.equal(api, 421);
      // The same server by its address works.
      const own = await page.goto(`${server.url}/`);
      assert.equal(own?.status(), 200);
    } finally {
      await browser.close();
      await server.close();
    }
  },
});

Deno.test({
  name:
    "browser cross-origin: the dashboard goes live over /ws when served by the slow-client guard, and new rows appear",
  ignore: chromiumMissing,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-guard-ui-" });
    const service = await startService(loadConfig({
      DATA_DIR: dataDir,
      MIN_FREE_BYTES: "0",
      RUN_WORKER: "false",
      LOG_LEVEL: "error",
    }));
    const server = await serveGuarded({
      hostname: "127.0.0.1",
      port: 0,
      headerTimeoutMs: 2000,
      bodyMinBytesPerS: 1024,
      bodyRateWindowMs: 30_000,
      bodyTimeoutMs: 0,
    }, service.app.fetch);
    const url = `http://127.0.0.1:${server.addr.port}`;
    const browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: BASE_BROWSER_ARGS,
    });
    try {
      assert.equal(server.guarded, true);
      const page = await browser.newPage();
      await page.goto(`${url}/`);
      await page.waitForSelector(
        '[data-island="dashboard"][data-hydrated="true"]',
      );
      await page.waitForSelector('.live-state[data-live="live"]');
      // Past the head timeout: the live socket is not cut.
      await new Promise((r) => setTimeout(r, 3000));
      const id = await (await fetch(`${url}/create/`, { method: "POST" }))
        .json().then((j) => j.video_id as string);
      await page.waitForSelector(`tr[data-id="${id}"]`, {
        timeout: 10_000,
      });
      assert.equal(
        await page.getAttribute(".live-state", "data-live"),
        "live",
      );
    } finally {
      await browser.close();
      await server.shutdown();
      await service.close();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
