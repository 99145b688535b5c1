/**
 * The recorder SDK in a real browser, from another origin: the example page
 * (static/examples/recorder.html) is served by a second server and loads
 * `/sdk/recorder.js` from tapedeck; it records the fake camera and the
 * recording completes. Then the outbox: uploads are cut off mid-recording
 * (Playwright's routing refuses `add_data`), the page is reloaded, and the
 * SDK resumes from IndexedDB and completes the recording byte for byte.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import {
  eventually,
  launchBrowser,
  type RecordedChunks,
  watchRecordedChunks,
} from "./browser_helpers.ts";
import {
  missingTool,
  ROOT,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import { concatBytes } from "../common/bytes.ts";

const toolsMissing = await missingTool("chromium") ||
  await missingTool("ffmpeg");

/** Serves the example page from another origin than tapedeck's. */
async function serveExample(): Promise<{
  url: string;
  close(): Promise<void>;
}> {
  const html = await Deno.readTextFile(
    join(ROOT, "static", "examples", "recorder.html"),
  );
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response(html, {
        headers: { "content-type": "text/html; charset=utf-8" },
      }),
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    close: () => server.shutdown(),
  };
}

async function withExample(
  body: (
    browser: Browser,
    server: TestServer,
    pageUrl: string,
  ) => Promise<void>,
): Promise<void> {
  const browser = await launchBrowser();
  if (!browser) throw new Error("Chromium is missing");
  const server = await startTestServer({ CREATE_RATE_PER_MINUTE: "0" });
  const example = await serveExample();
  try {
    assert.notEqual(new URL(example.url).origin, new URL(server.url).origin);
    await body(
      browser,
      server,
      `${example.url}?server=${encodeURIComponent(server.url)}`,
    );
  } finally {
    await browser.close();
    await example.close();
    await server.close();
  }
}

/** Opens the example page and waits until its recorder is ready. */
async function openExample(
  context: BrowserContext,
  url: string,
  problems: string[],
): Promise<Page> {
  const page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  return page;
}

async function uploaded(page: Page): Promise<[number, number]> {
  return await page.evaluate(() => {
    const p = document.getElementById("progress")!.dataset;
    return [Number(p.uploaded ?? 0), Number(p.recorded ?? 0)];
  });
}

/**
 * The server's copy of a recording equals the chunks the page kept, in
 * order: those the test saw kept (every MediaRecorder blob it saw), then
 * `later` ones (kept as the page went away, read from the outbox).
 */
async function assertSameBytes(
  server: TestServer,
  id: string,
  recorded: RecordedChunks,
  later = new Map<number, Uint8Array>(),
): Promise<number> {
  const seen = recorded.kept(id);
  assert.deepEqual(
    concatBytes(
      [...seen.keys()].sort((a, b) => a - b).map((i) => seen.get(i)!),
    ),
    concatBytes(recorded.raw()),
    "every MediaRecorder blob seen was kept",
  );
  const kept = new Map([...seen, ...later]);
  const n = kept.size;
  assert.deepEqual(
    [...kept.keys()].sort((a, b) => a - b),
    Array.from({ length: n }, (_, i) => i),
  );
  const whole = concatBytes(Array.from({ length: n }, (_, i) => kept.get(i)!));
  const res = await fetch(`${server.url}/media/${id}/source`);
  assert.equal(res.status, 200);
  const source = new Uint8Array(await res.arrayBuffer());
  assert.equal(source.length, whole.length);
  assert.deepEqual(source, whole);
  return n;
}

Deno.test({
  name:
    "browser SDK: the example page on another origin records with /sdk/recorder.js and the recording completes",
  ignore: toolsMissing,
  async fn() {
    await withExample(async (browser, server, url) => {
      const problems: string[] = [];
      const context = await browser.newContext();
      const recorded = await watchRecordedChunks(context);
      const page = await openExample(context, url, problems);
      await page.click("#record");
      await page.waitForSelector('body[data-phase="recording"]', {
        timeout: 15_000,
      });
      const id = await page.getAttribute("body", "data-video-id");
      assert.ok(id);
      await page.waitForFunction(
        () =>
          Number(document.getElementById("progress")!.dataset.uploaded) >= 3,
        undefined,
        { timeout: 15_000 },
      );
      await page.click("#stop");
      await page.waitForSelector('body[data-processing="complete"]', {
        timeout: 60_000,
      });
      const status = await waitForStatus(server.url, id);
      assert.equal(status.status, "complete", JSON.stringify(status));
      const video = await (await fetch(`${server.url}/video/${id}/`)).json();
      assert.ok(
        (video.completed_videos as string[]).includes(`${id}.mp4`),
        JSON.stringify(video),
      );
      assert.match(
        (await page.textContent("#result")) ?? "",
        /Recording complete\. Watch it/,
      );
      assert.equal(
        await page.getAttribute("#result a", "href"),
        `${server.url}/videos/${id}`,
      );
      await assertSameBytes(server, id, recorded);
      assert.deepEqual(problems, []);
      await context.close();
    });
  },
});

Deno.test({
  name:
    "browser SDK: uploads cut off mid-recording, the example page reloaded: the SDK resumes from its outbox and completes the recording byte for byte",
  ignore: toolsMissing,
  async fn() {
    await withExample(async (browser, server, url) => {
      const problems: string[] = [];
      const context = await browser.newContext();
      const recorded = await watchRecordedChunks(context);
      let cut = false;
      let refused = 0;
      await context.route("**/add_data/**", async (route) => {
        if (cut) {
          refused++;
          return await route.abort("internetdisconnected");
        }
        await route.continue();
      });
      const page = await openExample(context, url, problems);
      await page.click("#record");
      await page.waitForSelector('body[data-phase="recording"]', {
        timeout: 15_000,
      });
      const id = (await page.getAttribute("body", "data-video-id"))!;
      await page.waitForFunction(
        () =>
          Number(document.getElementById("progress")!.dataset.uploaded) >= 2,
        undefined,
        { timeout: 15_000 },
      );

      // Uploads fail from now on; chunks pile up in IndexedDB.
      cut = true;
      await page.waitForFunction(
        () => {
          const p = document.getElementById("progress")!.dataset;
          return Number(p.recorded) - Number(p.uploaded) >= 3;
        },
        undefined,
        { timeout: 20_000 },
      );
      // Reload right after a chunk was kept, when every blob is kept.
      const keptBefore = recorded.kept(id).size;
      await eventually(
        () => {
          const raw = recorded.raw().reduce((n, b) => n + b.length, 0);
          const kept = [...recorded.kept(id).values()]
            .reduce((n, b) => n + b.length, 0);
          return recorded.kept(id).size > keptBefore && raw === kept;
        },
        5_000,
        "a fresh chunk kept",
      );
      const [acknowledged, made] = await uploaded(page);
      const held = await (await fetch(`${server.url}/chunks/${id}/`)).json();
      assert.ok(
        held.chunks_received < made,
        `the server holds ${held.chunks_received} of ${made} chunks (${acknowledged} acknowledged)`,
      );
      assert.ok(refused > 0, "uploads were refused");

      await page.reload();
      await page.waitForSelector('body[data-ready="true"]');
      await page.waitForSelector(`#pending li[data-id="${id}"]`, {
        timeout: 15_000,
      });
      // What the outbox holds past the chunks the test saw kept: blobs kept
      // as the page went away (the recorder's last one when it stopped).
      const seen = recorded.kept(id).size;
      const later = new Map(
        (await page.evaluate(async ([videoId, from]) => {
          const db = await new Promise<IDBDatabase>((resolve, reject) => {
            const req = indexedDB.open("tapedeck-uploads");
            req.onsuccess = () => resolve(req.result);
            req.onerror = () => reject(req.error);
          });
          const chunks = await new Promise<
            { videoId: string; index: number; blob: Blob }[]
          >((resolve, reject) => {
            const req = db.transaction("chunks").objectStore("chunks")
              .getAll();
            req.onsuccess = () => resolve(req.result);
            req.onerror = () => reject(req.error);
          });
          db.close();
          const out: [number, number[]][] = [];
          for (const c of chunks) {
            if (c.videoId !== videoId || c.index < from) continue;
            out.push([
              c.index,
              Array.from(new Uint8Array(await c.blob.arrayBuffer())),
            ]);
          }
          return out;
        }, [id, seen] as const)).map(([i, b]) => [i, Uint8Array.from(b)]),
      );
      cut = false;
      await page.waitForSelector(
        `#pending li[data-id="${id}"][data-state="done"]`,
        { timeout: 60_000 },
      );
      const status = await waitForStatus(server.url, id);
      assert.equal(status.status, "complete", JSON.stringify(status));
      const n = await assertSameBytes(server, id, recorded, later);
      assert.ok(n >= made, `${n} chunks in the recording, ${made} were made`);
      const ledger = await (await fetch(`${server.url}/chunks/${id}/`)).json();
      assert.deepEqual(ledger.received, [[0, n - 1]]);
      assert.deepEqual(ledger.missing, []);
      // The outbox is empty once the recording is complete.
      const left = await page.evaluate(() =>
        new Promise<number>((resolve, reject) => {
          const req = indexedDB.open("tapedeck-uploads");
          req.onsuccess = () => {
            const count = req.result.transaction("chunks").objectStore(
              "chunks",
            ).count();
            count.onsuccess = () => resolve(count.result);
            count.onerror = () => reject(count.error);
          };
          req.onerror = () => reject(req.error);
        })
      );
      assert.equal(left, 0);
      assert.deepEqual(problems, []);
      await context.close();
    });
  },
});
