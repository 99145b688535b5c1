import assert from "node:assert/strict";
import type {
  Browser,
  BrowserContext,
  ConsoleMessage,
  Page,
} from "playwright-core";
import { missingTool, startTestServer, type TestServer } from "./helpers.ts";
import {
  artifactPath,
  launchBrowser,
  watchRecorderCalls,
} from "./browser_helpers.ts";

/** Chromium and ffmpeg: these tests record in the browser and process the result. */
const toolsMissing = await missingTool("chromium") ||
  await missingTool("ffmpeg");

const RECORD_MS = 4_000;

/** Console errors that mean the page broke (CSP violations, uncaught errors). */
function watchForBreakage(page: Page, problems: string[]): void {
  page.on(
    "pageerror",
    (err) => problems.push(`${page.url()}: uncaught ${err.message}`),
  );
  page.on("console", (msg: ConsoleMessage) => {
    const text = msg.text();
    if (
      msg.type() === "error" && /Content Security Policy|Refused to/i.test(text)
    ) {
      problems.push(`${page.url()}: ${text}`);
    }
  });
}

/** Opens a page and waits until its island is hydrated and (if live) connected. */
async function openIsland(
  context: BrowserContext,
  url: string,
  island: string,
  problems: string[],
  live = true,
): Promise<Page> {
  const page = await context.newPage();
  watchForBreakage(page, problems);
  const res = await page.goto(url);
  assert.equal(res?.status(), 200);
  await page.waitForSelector(`[data-island="${island}"][data-hydrated="true"]`);
  if (live) await page.waitForSelector('.live-state[data-live="live"]');
  await page.evaluate(() => {
    (globalThis as unknown as { notReloaded: boolean }).notReloaded = true;
  });
  return page;
}

async function stillSamePage(page: Page): Promise<boolean> {
  return await page.evaluate(() =>
    (globalThis as unknown as { notReloaded?: boolean }).notReloaded === true
  );
}

interface RecordedRun {
  id: string;
  recordedS: number;
  dashboard: Page;
  detail: Page;
  recorder: Page;
}

/**
 * Records from `/record` with the chosen source for about 4 s while the
 * dashboard and the recording's page are open in other tabs, then stops.
 */
async function recordThroughUi(
  context: BrowserContext,
  server: TestServer,
  source: "camera" | "tab",
  problems: string[],
): Promise<RecordedRun> {
  const calls = await watchRecorderCalls(context);
  const dashboard = await openIsland(
    context,
    `${server.url}/`,
    "dashboard",
    problems,
  );
  const recorder = await openIsland(
    context,
    `${server.url}/record`,
    "recorder",
    problems,
    false,
  );
  await recorder.waitForSelector('[data-ready="true"]');
  await recorder.check(`#source-${source}`);
  assert.equal(await recorder.isChecked("#mic"), true);

  await recorder.click("#start");
  await recorder.waitForSelector('.recorder[data-phase="recording"]', {
    timeout: 15_000,
  });
  const startedAt = Date.now();
  const link = await recorder.waitForSelector(
    '#recorder-status a[href^="/videos/"]',
  );
  const id = (await link.getAttribute("href"))!.split("/").pop()!;

  const detail = await openIsland(
    context,
    `${server.url}/videos/${id}`,
    "recording_detail",
    problems,
  );
  assert.equal(
    await detail.getAttribute("article.detail", "data-status"),
    "recording",
  );
  await recorder.bringToFront();

  const row = `tr[data-id="${id}"]`;
  await dashboard.waitForSelector(`${row}[data-status="recording"]`, {
    timeout: 5_000,
  });
  await dashboard.waitForFunction(
    (sel) =>
      Number(
        document.querySelector(`${sel} [data-field="chunks"]`)?.textContent,
      ) >= 2,
    row,
    { timeout: 5_000 },
  );
  await detail.waitForFunction(
    () =>
      Number(document.querySelector('[data-field="chunks"]')?.textContent) >= 2,
    undefined,
    { timeout: 5_000 },
  );

  const lag = await recorder.waitForSelector("#upload-lag");
  assert.match(
    (await lag.textContent()) ?? "",
    /Uploaded \d+ \/ recorded \d+ chunks/,
  );

  await recorder.waitForTimeout(
    Math.max(0, RECORD_MS - (Date.now() - startedAt)),
  );
  await recorder.click("#stop");
  await recorder.waitForURL(`**/videos/${id}`, { timeout: 30_000 });
  assert.ok(
    calls.start && calls.stop,
    "MediaRecorder start() and stop() were not called",
  );
  const recordedS = (calls.stop - calls.start) / 1000;

  await dashboard.waitForSelector(`${row}[data-status="complete"]`, {
    timeout: 30_000,
  });
  await detail.waitForSelector('article.detail[data-status="complete"]', {
    timeout: 30_000,
  });
  assert.equal(
    await stillSamePage(dashboard),
    true,
    "the dashboard was reloaded",
  );
  assert.equal(
    await stillSamePage(detail),
    true,
    "the recording page was reloaded",
  );
  return { id, recordedS, dashboard, detail, recorder };
}

/** Plays the recording's `<video>`, seeks to 2 s and returns its duration. */
async function playAndSeek(
  page: Page,
): Promise<{ duration: number; at: number }> {
  await page.waitForSelector("video#player source[type='video/mp4']", {
    state: "attached",
  });
  return await page.evaluate(async () => {
    const video = document.querySelector<HTMLVideoElement>("video#player")!;
    video.muted = true;
    if (video.readyState < 1) {
      await new Promise((resolve, reject) => {
        video.addEventListener("loadedmetadata", resolve, { once: true });
        video.addEventListener(
          "error",
          () => reject(new Error("video error")),
          { once: true },
        );
        video.load();
      });
    }
    await video.play();
    await new Promise<void>((resolve) => {
      const check = () =>
        video.currentTime > 0.2 ? resolve() : setTimeout(check, 50);
      check();
    });
    video.pause();
    const seeked = new Promise((resolve) =>
      video.addEventListener("seeked", resolve, { once: true })
    );
    video.currentTime = 2;
    await seeked;
    return { duration: video.duration, at: video.currentTime };
  });
}

async function checkPlayback(
  run: RecordedRun,
  server: TestServer,
  shotPrefix: string,
) {
  const status = await (await fetch(`${server.url}/check_status/${run.id}/`))
    .json();
  assert.equal(status.status, "complete");
  const { duration, at } = await playAndSeek(run.detail);
  assert.ok(
    Math.abs(duration - run.recordedS) <= 0.5,
    `video duration ${duration} s vs recorded ${run.recordedS} s`,
  );
  assert.ok(Math.abs(at - 2) < 0.1, `seeked to ${at} s instead of 2 s`);
  assert.ok(
    Math.abs(status.duration_s - duration) < 0.1,
    `server duration ${status.duration_s} s vs the player's ${duration} s`,
  );
  await run.dashboard.screenshot({
    path: await artifactPath(`${shotPrefix}-dashboard.png`),
    fullPage: true,
  });
  await run.detail.screenshot({
    path: await artifactPath(`${shotPrefix}-player.png`),
    fullPage: true,
  });
}

async function withBrowser(
  options: { tabCapture?: boolean },
  body: (browser: Browser, server: TestServer) => Promise<void>,
): Promise<void> {
  const browser = await launchBrowser(options);
  if (!browser) throw new Error("Chromium is missing");
  const server = await startTestServer();
  try {
    await body(browser, server);
  } finally {
    await browser.close();
    await server.close();
  }
}

Deno.test({
  name:
    "browser: camera recording goes live from recording to complete on the dashboard and its page, then plays and seeks",
  ignore: toolsMissing,
  async fn() {
    await withBrowser({}, async (browser, server) => {
      const problems: string[] = [];
      const context = await browser.newContext({
        viewport: { width: 1200, height: 900 },
      });
      let aborted = 0;
      await context.route("**/add_data/**", async (route) => {
        if (
          route.request().headers()["x-chunk-index"] === "1" && aborted === 0
        ) {
          aborted++;
          await route.abort("connectionreset");
        } else {
          await route.continue();
        }
      });

      const run = await recordThroughUi(context, server, "camera", problems);
      assert.equal(aborted, 1, "the test should have dropped one chunk upload");

      const status =
        await (await fetch(`${server.url}/check_status/${run.id}/`))
          .json();
      assert.ok(
        status.chunks_received >= 4,
        `only ${status.chunks_received} chunks arrived`,
      );
      const facts = await run.detail.textContent("#media-facts");
      assert.match(facts ?? "", /Duration/);
      assert.match(facts ?? "", /h264|vp9|vp8/);
      assert.match(facts ?? "", /opus/);
      const downloads = await run.detail.$$eval(
        "ul.files a[download]",
        (links) => links.map((a) => a.getAttribute("href")),
      );
      assert.ok(
        downloads.some((h) => h?.endsWith(".mp4")),
        `downloads: ${downloads}`,
      );
      await checkPlayback(run, server, "camera");

      const noJs = await browser.newContext({ javaScriptEnabled: false });
      const plain = await noJs.newPage();
      await plain.goto(`${server.url}/videos/${run.id}`);
      assert.equal(await plain.locator("video#player source").count(), 2);
      await plain.goto(`${server.url}/`);
      assert.equal(
        await plain.getAttribute(`tr[data-id="${run.id}"]`, "data-status"),
        "complete",
      );
      await noJs.close();
      await context.close();
      assert.deepEqual(problems, []);
    });
  },
});

Deno.test({
  name:
    "browser: recording this tab with real tab capture goes live to complete, then plays and seeks",
  ignore: toolsMissing,
  async fn() {
    await withBrowser({ tabCapture: true }, async (browser, server) => {
      const problems: string[] = [];
      const context = await browser.newContext({
        viewport: { width: 1000, height: 800 },
      });
      await context.grantPermissions(["microphone", "camera"], {
        origin: server.url,
      });
      const run = await recordThroughUi(context, server, "tab", problems);
      const facts = await run.detail.textContent("#media-facts");
      assert.match(facts ?? "", /1000 × 800|\d+ × \d+/);
      await checkPlayback(run, server, "tab");
      await context.close();
      assert.deepEqual(problems, []);
    });
  },
});
