/**
 * The video library in Chromium: three recordings (one over tus with a
 * filename) appear live with titles and thumbnails, search and status
 * filter (in the URL, and without JavaScript), a rename seen by another
 * open dashboard, the share link copied, the upload picture growing while
 * recording, the embed played in a frame of an origin EMBED_ORIGINS allows
 * and refused in one it does not, a delete that every dashboard sees and
 * whose files answer 404, and axe-core run in the pages (no serious or
 * critical violations), at desktop and phone widths. Screenshots go to
 * tests/artifacts/library-*.png.
 *
 * Longer than most files: it is one scenario in one browser, whose steps
 * build on each other (the same recordings and the same open dashboards).
 */

import assert from "node:assert/strict";
import axe from "axe-core";
import type { BrowserContext, ConsoleMessage, Page } from "playwright-core";
import {
  makeRecording,
  missingTool,
  splitBytes,
  startTestServer,
  type TestServer,
  tusPatch,
  waitForStatus,
} from "./helpers.ts";
import { artifactPath, freePort, launchBrowser } from "./browser_helpers.ts";

const toolsMissing = await missingTool("chromium") ||
  await missingTool("ffmpeg");

const KEY = "library-key";
const keyHeaders = { "x-api-key": KEY };

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

/** Logs the context in through /login (the session cookie). */
async function logIn(context: BrowserContext, url: string): Promise<void> {
  const page = await context.newPage();
  await page.goto(`${url}/login`);
  await page.fill('input[name="key"]', KEY);
  await Promise.all([
    page.waitForURL(`${url}/`),
    page.click('button[type="submit"]'),
  ]);
  await page.close();
}

async function openIsland(
  context: BrowserContext,
  url: string,
  island: string,
  problems: string[],
): Promise<Page> {
  const page = await context.newPage();
  watchForBreakage(page, problems);
  const res = await page.goto(url);
  assert.equal(res?.status(), 200, url);
  await page.waitForSelector(`[data-island="${island}"][data-hydrated="true"]`);
  await page.waitForSelector('.live-state[data-live="live"]');
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

/** Runs axe-core in the page; fails on serious or critical violations. */
async function checkAccessibility(page: Page, name: string): Promise<void> {
  await page.evaluate(axe.source);
  const violations = await page.evaluate(async () => {
    const result = await (globalThis as unknown as {
      axe: {
        run(
          context: Document,
          options: unknown,
        ): Promise<
          {
            violations: {
              id: string;
              impact: string;
              help: string;
              nodes: { target: string[] }[];
            }[];
          }
        >;
      };
    }).axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      targets: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
    }));
  });
  const bad = violations.filter((v) =>
    v.impact === "serious" || v.impact === "critical"
  );
  assert.deepEqual(bad, [], `${name}: accessibility violations`);
}

async function createTitled(
  server: TestServer,
  title?: string,
): Promise<string> {
  const res = await fetch(`${server.url}/create/`, {
    method: "POST",
    headers: { ...keyHeaders, "content-type": "application/json" },
    body: JSON.stringify(title === undefined ? {} : { title }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).video_id;
}

async function sendPieces(
  server: TestServer,
  id: string,
  pieces: Uint8Array<ArrayBuffer>[],
  from = 0,
): Promise<void> {
  for (const [i, piece] of pieces.entries()) {
    const res = await fetch(`${server.url}/add_data/${id}/`, {
      method: "POST",
      body: piece,
      headers: { "x-chunk-index": String(from + i) },
    });
    assert.equal(res.status, 200, await res.text());
  }
}

/** A page on another origin that frames `/embed/<id>`. */
function embeddingSite(port: number, server: TestServer): Deno.HttpServer {
  return Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, (req) => {
    const id = new URL(req.url).searchParams.get("id") ?? "";
    return new Response(
      `<!DOCTYPE html><html lang="en"><head><title>Another site</title></head><body><h1>Another site</h1><iframe id="player-frame" src="${server.url}/embed/${id}" title="Recording" width="640" height="360" allow="autoplay; fullscreen"></iframe></body></html>`,
      { headers: { "content-type": "text/html; charset=utf-8" } },
    );
  });
}

Deno.test({
  name:
    "browser library: titles and thumbnails live, search and filter, rename, share, upload picture, embed allowed and refused, delete, accessibility",
  ignore: toolsMissing,
  async fn() {
    const allowedPort = freePort();
    const deniedPort = freePort();
    const server = await startTestServer({
      API_KEYS: KEY,
      EMBED_ORIGINS: `http://127.0.0.1:${allowedPort}`,
    });
    const allowedSite = embeddingSite(allowedPort, server);
    const deniedSite = embeddingSite(deniedPort, server);
    const browser = await launchBrowser();
    if (!browser) throw new Error("Chromium is missing");
    const problems: string[] = [];
    try {
      const dir = await Deno.makeTempDir({ prefix: "tapedeck-library-" });
      const bytes = await makeRecording(`${dir}/in.webm`, { seconds: 3 });
      await Deno.remove(dir, { recursive: true });
      const pieces = splitBytes(bytes, [40_000]);

      const a = await browser.newContext({
        viewport: { width: 1280, height: 900 },
      });
      const b = await browser.newContext({
        viewport: { width: 1100, height: 900 },
      });
      await a.grantPermissions(["clipboard-read", "clipboard-write"], {
        origin: server.url,
      });
      await logIn(a, server.url);
      await logIn(b, server.url);
      const dashA = await openIsland(
        a,
        `${server.url}/`,
        "dashboard",
        problems,
      );
      const dashB = await openIsland(
        b,
        `${server.url}/`,
        "dashboard",
        problems,
      );

      // 1. A titled recording over the API, processed to the end.
      const quarterly = await createTitled(server, "Quarterly review");
      // 2. A tus upload with a filename (completes when its length is reached).
      const tusCreate = await fetch(`${server.url}/files/`, {
        method: "POST",
        headers: {
          ...keyHeaders,
          "tus-resumable": "1.0.0",
          "upload-length": String(bytes.length),
          "upload-metadata": `filename ${btoa("Design walkthrough.webm")}`,
        },
      });
      assert.equal(tusCreate.status, 201);
      await tusCreate.body?.cancel();
      const design = tusCreate.headers.get("x-video-id")!;
      // 3. One without a title, still recording.
      const untitled = await createTitled(server);

      for (const dash of [dashA, dashB]) {
        await dash.waitForSelector(`tr[data-id="${untitled}"]`);
        for (
          const [id, title] of [
            [quarterly, "Quarterly review"],
            [design, "Design walkthrough"],
          ]
        ) {
          await dash.waitForFunction(
            ([sel, t]) =>
              document.querySelector(sel)?.textContent?.trim() === t,
            [`tr[data-id="${id}"] [data-field="title"]`, title],
          );
        }
      }
      // The untitled one is called by its creation time, in local time.
      const untitledText = await dashA.textContent(
        `tr[data-id="${untitled}"] [data-field="title"]`,
      );
      assert.match(untitledText ?? "", /^Recording \S/);
      assert.doesNotMatch(untitledText ?? "", /UTC/);

      await sendPieces(server, quarterly, pieces);
      const done = await fetch(
        `${server.url}/complete_job/${quarterly}/?last_chunk=${
          pieces.length - 1
        }`,
        { method: "POST" },
      );
      assert.equal(done.status, 200);
      await done.body?.cancel();
      const patch = await tusPatch(`${server.url}/files/${design}`, bytes);
      assert.equal(patch.status, 204);
      await sendPieces(server, untitled, pieces.slice(0, 3));

      // Placeholders while recording, posters once processed: live.
      await dashA.waitForSelector(
        `tr[data-id="${untitled}"] .thumb-placeholder.thumb-recording`,
      );
      for (const id of [quarterly, design]) {
        await waitForStatus(server.url, id, ["complete"]);
        for (const dash of [dashA, dashB]) {
          await dash.waitForFunction(
            (sel) => {
              const img = document.querySelector<HTMLImageElement>(sel);
              return !!img && img.complete && img.naturalWidth > 0;
            },
            `tr[data-id="${id}"] img.thumb[data-thumb="poster"]`,
            { timeout: 20_000 },
          );
        }
      }
      const thumbWidth = await dashA.getAttribute(
        `tr[data-id="${quarterly}"] img.thumb`,
        "width",
      );
      assert.equal(thumbWidth, "128");
      assert.equal(
        await dashA.getAttribute(
          `tr[data-id="${quarterly}"] img.thumb`,
          "loading",
        ),
        "lazy",
      );
      await dashA.screenshot({
        path: await artifactPath("library-dashboard.png"),
        fullPage: true,
      });
      await checkAccessibility(dashA, "dashboard");

      // Search and filter through the form: the view is in the URL.
      const search = await a.newPage();
      watchForBreakage(search, problems);
      await search.goto(`${server.url}/`);
      await search.fill("#search-q", "design");
      await Promise.all([
        search.waitForURL(/\?q=design/),
        search.press("#search-q", "Enter"),
      ]);
      await search.waitForSelector('[data-island="dashboard"][data-hydrated]');
      assert.deepEqual(
        await search.$$eval(
          "tr[data-id]",
          (rows) => rows.map((r) => r.getAttribute("data-id")),
        ),
        [design],
      );
      await search.fill("#search-q", "");
      await search.selectOption("#search-status", "recording");
      await Promise.all([
        search.waitForURL(/status=recording/),
        search.click('#library-search button[type="submit"]'),
      ]);
      assert.deepEqual(
        await search.$$eval(
          "tr[data-id]",
          (rows) => rows.map((r) => r.getAttribute("data-id")),
        ),
        [untitled],
      );
      await search.close();
      // The first page works without JavaScript, search included.
      const noJs = await browser.newContext({ javaScriptEnabled: false });
      await logIn(noJs, server.url);
      const plain = await noJs.newPage();
      await plain.goto(`${server.url}/`);
      await plain.fill("#search-q", "quarter");
      await Promise.all([
        plain.waitForURL(/\?q=quarter/),
        plain.press("#search-q", "Enter"),
      ]);
      assert.deepEqual(
        await plain.$$eval(
          "tr[data-id]",
          (rows) => rows.map((r) => r.getAttribute("data-id")),
        ),
        [quarterly],
      );
      assert.equal(
        await plain.getAttribute(
          `tr[data-id="${quarterly}"] img.thumb`,
          "src",
        ),
        `/media/${quarterly}/${quarterly}.jpg`,
      );
      await plain.goto(`${server.url}/videos/${quarterly}`);
      assert.equal(await plain.locator("svg.upload-svg").count(), 1);
      await noJs.close();

      // Rename in place; the other open dashboard follows without reload.
      const detail = await openIsland(
        a,
        `${server.url}/videos/${quarterly}`,
        "recording_detail",
        problems,
      );
      assert.equal(
        (await detail.textContent("h1#title"))?.trim(),
        "Quarterly review",
      );
      await detail.focus("#rename");
      await detail.keyboard.press("Enter");
      await detail.waitForSelector("#title-input:focus");
      await detail.fill("#title-input", "Quarterly review (final cut)");
      await detail.keyboard.press("Enter");
      await detail.waitForFunction(() =>
        document.querySelector("h1#title")?.textContent?.trim() ===
          "Quarterly review (final cut)"
      );
      await detail.waitForSelector("#rename:focus");
      await dashB.waitForFunction(
        (sel) =>
          document.querySelector(sel)?.textContent?.trim() ===
            "Quarterly review (final cut)",
        `tr[data-id="${quarterly}"] [data-field="title"]`,
      );
      assert.equal(await stillSamePage(dashB), true, "dashboard B reloaded");

      // Copy the share link.
      await detail.click("#copy-link");
      await detail.waitForSelector("#copy-link-status:has-text('Copied')");
      assert.equal(
        await detail.evaluate(() => navigator.clipboard.readText()),
        `${server.url}/videos/${quarterly}`,
      );
      const embedCode = await detail.inputValue("#embed-code");
      assert.match(
        embedCode,
        new RegExp(
          `^<iframe src="${server.url}/embed/${quarterly}" title="Quarterly review \\(final cut\\)"`,
        ),
      );
      assert.match(
        (await detail.getAttribute(
          `ul.files a[href$=".mp4"]`,
          "download",
        )) ?? "",
        /\.mp4$/,
      );
      await detail.screenshot({
        path: await artifactPath("library-recording.png"),
        fullPage: true,
      });
      await checkAccessibility(detail, "recording page");

      // The upload picture grows while recording.
      const growing = await openIsland(
        a,
        `${server.url}/videos/${untitled}`,
        "recording_detail",
        problems,
      );
      assert.match(
        (await growing.textContent("#upload-summary")) ?? "",
        /^3 chunks/,
      );
      await sendPieces(server, untitled, pieces.slice(3, 5), 3);
      await growing.waitForFunction(
        () =>
          /^5 chunks/.test(
            document.querySelector("#upload-summary")?.textContent ?? "",
          ),
        undefined,
        { timeout: 10_000 },
      );
      assert.equal(await stillSamePage(growing), true);
      await growing.close();

      // The embed: played in a frame of an allowed origin...
      const host = await browser.newContext();
      const allowed = await host.newPage();
      await allowed.goto(`http://127.0.0.1:${allowedPort}/?id=${design}`);
      const frame = await (await allowed.waitForSelector("#player-frame"))
        .contentFrame();
      assert.ok(frame);
      await frame.waitForSelector("video#player source[type='video/mp4']", {
        state: "attached",
      });
      const played = await frame.evaluate(async () => {
        const video = document.querySelector<HTMLVideoElement>("video")!;
        video.muted = true;
        await video.play();
        await new Promise<void>((resolve) => {
          const check = () =>
            video.currentTime > 0.3 ? resolve() : setTimeout(check, 50);
          check();
        });
        video.pause();
        return { time: video.currentTime, src: video.currentSrc };
      });
      assert.ok(played.time > 0.3);
      assert.match(played.src, new RegExp(`/media/${design}/${design}\\.mp4$`));
      await allowed.screenshot({
        path: await artifactPath("library-embed.png"),
      });
      // ...and refused in a frame of another origin.
      const deniedPage = await host.newPage();
      const refusals: string[] = [];
      deniedPage.on("console", (m) => {
        if (/frame-ancestors/.test(m.text())) refusals.push(m.text());
      });
      await deniedPage.goto(`http://127.0.0.1:${deniedPort}/?id=${design}`);
      const deniedFrame = await (await deniedPage.waitForSelector(
        "#player-frame",
      )).contentFrame();
      await deniedPage.waitForTimeout(1000);
      assert.equal(
        await deniedFrame?.$("video").catch(() => null) ?? null,
        null,
        "the embed was shown on an origin EMBED_ORIGINS does not list",
      );
      assert.ok(refusals.length > 0, "Chromium did not report the refusal");
      await host.close();
      // The embed page itself, for axe.
      const embedPage = await a.newPage();
      watchForBreakage(embedPage, problems);
      await embedPage.goto(`${server.url}/embed/${design}`);
      await embedPage.waitForSelector("video#player");
      await checkAccessibility(embedPage, "embed page");
      await embedPage.close();

      // Delete the tus recording from its page: a confirmation that says
      // what goes, then every dashboard drops it and its files are gone.
      const doomed = await openIsland(
        a,
        `${server.url}/videos/${design}`,
        "recording_detail",
        problems,
      );
      await doomed.click("#delete");
      await doomed.waitForSelector("#cancel-delete:focus");
      const warning = await doomed.textContent("#confirm-delete-text");
      assert.match(warning ?? "", /3 finished files/);
      assert.match(warning ?? "", /uploaded chunk/);
      assert.match(warning ?? "", /cannot be undone/);
      await checkAccessibility(doomed, "delete confirmation");
      await doomed.keyboard.press("Escape");
      await doomed.waitForSelector("#confirm-delete", { state: "detached" });
      await doomed.click("#delete");
      await Promise.all([
        doomed.waitForURL(`${server.url}/`),
        doomed.click("#confirm-delete-button"),
      ]);
      for (const dash of [dashA, dashB]) {
        await dash.waitForSelector(`tr[data-id="${design}"]`, {
          state: "detached",
        });
        assert.equal(await stillSamePage(dash), true);
      }
      for (const name of [`${design}.mp4`, `${design}.webm`, `${design}.jpg`]) {
        const res = await fetch(`${server.url}/media/${design}/${name}`);
        assert.equal(res.status, 404, name);
        await res.body?.cancel();
      }

      // A phone's width: the same pages, readable and accessible.
      const phone = await browser.newContext({
        viewport: { width: 390, height: 844 },
        isMobile: true,
        hasTouch: true,
      });
      await logIn(phone, server.url);
      const phoneDash = await openIsland(
        phone,
        `${server.url}/`,
        "dashboard",
        problems,
      );
      const overflow = await phoneDash.evaluate(() =>
        document.documentElement.scrollWidth - innerWidth
      );
      assert.ok(overflow <= 1, `the list is ${overflow} px too wide`);
      await phoneDash.screenshot({
        path: await artifactPath("library-dashboard-phone.png"),
        fullPage: true,
      });
      await checkAccessibility(phoneDash, "dashboard (phone)");
      const phoneDetail = await openIsland(
        phone,
        `${server.url}/videos/${quarterly}`,
        "recording_detail",
        problems,
      );
      const detailOverflow = await phoneDetail.evaluate(() =>
        document.documentElement.scrollWidth - innerWidth
      );
      assert.ok(
        detailOverflow <= 1,
        `the page is ${detailOverflow} px too wide`,
      );
      await phoneDetail.screenshot({
        path: await artifactPath("library-recording-phone.png"),
        fullPage: true,
      });
      await checkAccessibility(phoneDetail, "recording page (phone)");
      await phone.close();
      await a.close();
      await b.close();
      assert.deepEqual(problems, []);
    } finally {
      await browser.close();
      await allowedSite.shutdown();
      await deniedSite.shutdown();
      await server.close();
    }
  },
});
