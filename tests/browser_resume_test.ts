/**
 * Recordings survive the page: the recorder keeps every chunk in IndexedDB
 * until the server acknowledged it, and resumes (and finishes) whatever a
 * reloaded, crashed or offline page left behind. Also the dashboard's and
 * the recording page's Finish and Retry processing buttons. Real Chromium
 * with fake camera and microphone, real server, real ffmpeg.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type {
  Browser,
  BrowserContext,
  ConsoleMessage,
  Page,
} from "playwright-core";
import { CHUNKS_STORE, DB_NAME, RECORDINGS_STORE } from "../client/outbox.ts";
import {
  createSession,
  ffprobeEntries,
  makeRecording,
  mediaBytes,
  missingTool,
  sendChunk,
  splitBytes,
  startTestServer,
  type TestServer,
  videoFrameMd5,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";
import {
  artifactPath,
  eventually,
  indexedDbCounts,
  launchBrowser,
  watchRecordedChunks,
  watchText,
} from "./browser_helpers.ts";
import { concatBytes } from "../common/bytes.ts";

/** Chromium and ffmpeg: these tests record in the browser and process the result. */
const toolsMissing = await missingTool("chromium") ||
  await missingTool("ffmpeg");

async function withBrowser(
  env: Record<string, string>,
  body: (browser: Browser, server: TestServer) => Promise<void>,
): Promise<void> {
  const browser = await launchBrowser();
  if (!browser) throw new Error("Chromium is missing");
  const server = await startTestServer(env);
  try {
    await body(browser, server);
  } finally {
    await browser.close();
    await server.close();
  }
}

/** Uncaught errors and CSP violations of a page. */
function watchForBreakage(page: Page, problems: string[]): void {
  page.on(
    "pageerror",
    (err) => problems.push(`${page.url()}: uncaught ${err.message}`),
  );
  page.on("console", (msg: ConsoleMessage) => {
    if (
      msg.type() === "error" &&
      /Content Security Policy|Refused to/i.test(msg.text())
    ) {
      problems.push(`${page.url()}: ${msg.text()}`);
    }
  });
}

async function openPage(
  context: BrowserContext,
  url: string,
  island: string,
  problems: string[],
): Promise<Page> {
  const page = await context.newPage();
  watchForBreakage(page, problems);
  const res = await page.goto(url);
  assert.equal(res?.status(), 200);
  await page.waitForSelector(`[data-island="${island}"][data-hydrated="true"]`);
  return page;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/**
 * A file's video stream: codec, packet sizes and hashes (copied), and the
 * hash of every decoded frame. Chromium writes H.264 into WebM with Annex B
 * start codes, which any remux rewrites as length prefixes of the same
 * size: for H.264 the packet bytes differ, the sizes and frames do not.
 */
async function videoFrames(path: string): Promise<
  { codec: string; sizes: string[]; packets: string[]; decoded: string[] }
> {
  const codec = await ffprobeEntries(path, "stream=codec_name", {
    stream: "v:0",
  });
  const copied = await videoFrameMd5(path, ["-c", "copy"]);
  const decoded = await videoFrameMd5(path, ["-fps_mode", "passthrough"]);
  const field = (l: string, i: number) =>
    l.split(",").map((f) => f.trim()).at(i)!;
  return {
    codec: codec.trim(),
    sizes: copied.map((l) => field(l, -2)),
    packets: copied.map((l) => field(l, -1)),
    decoded: decoded.map((l) => field(l, -1)),
  };
}

async function getJson(url: string): Promise<Record<string, unknown>> {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  return await res.json();
}

async function lagCounts(page: Page): Promise<[number, number]> {
  return await page.evaluate(() => {
    const lag = document.querySelector<HTMLElement>("#upload-lag");
    return [
      Number(lag?.dataset.uploaded ?? 0),
      Number(lag?.dataset.recorded ?? 0),
    ];
  });
}

/**
 * The finished recording holds exactly the browser's chunks: the ledger
 * lists indexes 0..n-1 and nothing missing, the uploaded source is their
 * concatenation, and every finished video whose video stream was copied
 * has the same video packets.
 */
async function assertWholeRecording(
  server: TestServer,
  id: string,
  chunks: Map<number, Uint8Array>,
  /**
   * Chunks the page may have kept after the test last saw its chunks (a
   * reload that takes longer than a timeslice): they must follow the known
   * ones, and the videos are compared with everything the server holds.
   */
  unseenAfter = 0,
): Promise<string> {
  assert.ok(chunks.size > 0);
  assert.deepEqual(
    [...chunks.keys()].sort((a, b) => a - b),
    Array.from({ length: chunks.size }, (_, i) => i),
    "the page's chunk indexes are 0..n-1",
  );
  const seen = concatBytes(
    Array.from({ length: chunks.size }, (_, i) => chunks.get(i)!),
  );
  const ledger = await getJson(`${server.url}/chunks/${id}/`);
  const n = ledger.next_index as number;
  assert.ok(
    n >= chunks.size && n <= chunks.size + unseenAfter,
    `the server holds ${n} chunks, the page kept ${chunks.size}`,
  );
  assert.deepEqual(ledger.received, [[0, n - 1]]);
  assert.deepEqual(ledger.missing, []);
  assert.equal(ledger.chunks_received, n);

  const source = await fetch(`${server.url}/media/${id}/source`);
  assert.equal(source.status, 200);
  const uploaded = new Uint8Array(await source.arrayBuffer());
  assert.equal(ledger.bytes_received, uploaded.length);
  if (n === chunks.size) assert.equal(uploaded.length, seen.length);
  assert.equal(
    await sha256(uploaded.subarray(0, seen.length)),
    await sha256(seen),
    "the page's chunks, in order, begin the upload",
  );
  const whole = uploaded;

  const dir = await Deno.makeTempDir({ prefix: "tapedeck-resume-" });
  try {
    const original = join(dir, "browser.webm");
    await Deno.writeFile(original, whole);
    const expected = await videoFrames(original);
    assert.ok(
      expected.sizes.length > 10,
      `only ${expected.sizes.length} video packets`,
    );
    const files = await getJson(`${server.url}/video/${id}/`);
    const names = files.completed_videos as string[];
    assert.ok(names.length >= 2, `finished files: ${names}`);
    for (const name of names) {
      const res = await fetch(`${server.url}/media/${id}/${name}`);
      assert.equal(res.status, 200);
      const path = join(dir, name);
      await Deno.writeFile(path, new Uint8Array(await res.arrayBuffer()));
      const got = await videoFrames(path);
      assert.deepEqual(got.sizes, expected.sizes, `packet sizes of ${name}`);
      assert.deepEqual(got.decoded, expected.decoded, `frames of ${name}`);
      if (expected.codec !== "h264") {
        assert.deepEqual(
          await videoPacketHashes(path),
          expected.packets,
          `video packets of ${name}`,
        );
      }
    }
    return expected.codec;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "browser resume: a recording cut off offline and then reloaded is resumed by the reloaded page, uploaded whole and finished",
  ignore: toolsMissing,
  async fn() {
    await withBrowser({}, async (browser, server) => {
      const problems: string[] = [];
      const context = await browser.newContext({
        viewport: { width: 1000, height: 900 },
      });
      const recorded = await watchRecordedChunks(context);
      // The page reaches the server through a front the test owns: while
      // the network is cut, it refuses every chunk request, so none reaches
      // the server. Chromium's offline emulation alone was not enough: in
      // two CI runs every chunk the page recorded reached the server while
      // it was offline (around the reload), though the page, which sends
      // one chunk at a time, had seen only three acknowledged. The
      // browser-side cut stays, for the page's own view of the network.
      // Once back online chunks are slowed a little so the resume is seen.
      let cut = false;
      let slow = false;
      let pastTheBrowser = 0;
      await using front = Deno.serve(
        { port: 0, hostname: "127.0.0.1", onListen() {} },
        async (req) => {
          if (cut && new URL(req.url).pathname.startsWith("/add_data/")) {
            pastTheBrowser++;
            await req.body?.cancel();
            return new Response(null, { status: 503 });
          }
          return await server.service.app.fetch(req);
        },
      );
      const pageUrl = `http://127.0.0.1:${front.addr.port}`;
      await context.route("**/add_data/**", async (route) => {
        if (cut) return await route.abort("internetdisconnected");
        if (slow) await new Promise((r) => setTimeout(r, 250));
        await route.continue();
      });
      const headlines = await watchText(context, "#resume-headline");
      // Record VP9, as a browser without H.264 in WebM would: the finished
      // file is then a WebM whose video packets are the browser's own bytes.
      await context.addInitScript(() => {
        const supported = MediaRecorder.isTypeSupported.bind(MediaRecorder);
        MediaRecorder.isTypeSupported = (type: string) =>
          !/h264|avc1/i.test(type) && supported(type);
      });
      const page = await openPage(
        context,
        `${pageUrl}/record`,
        "recorder",
        problems,
      );
      // Leaving a recording page asks first; the test says yes, as a user would.
      page.on("dialog", (dialog) => dialog.accept());
      await page.waitForSelector('.recorder[data-ready="true"]');
      await page.click("#start");
      await page.waitForSelector('.recorder[data-phase="recording"]', {
        timeout: 15_000,
      });
      const link = await page.waitForSelector(
        '#recorder-status a[href^="/videos/"]',
      );
      const id = (await link.getAttribute("href"))!.split("/").pop()!;

      // About 3 s online: chunks are sent and acknowledged as they come.
      await page.waitForFunction(
        () =>
          Number(
            document.querySelector<HTMLElement>("#upload-lag")?.dataset
              .uploaded,
          ) >= 3,
        undefined,
        { timeout: 15_000 },
      );

      // About 3 s offline while still recording: chunks pile up in IndexedDB.
      cut = true;
      await context.setOffline(true);
      await page.waitForSelector("#offline-notice");
      await page.waitForFunction(
        () => {
          const lag = document.querySelector<HTMLElement>("#upload-lag");
          return Number(lag?.dataset.recorded) -
              Number(lag?.dataset.uploaded) >= 3;
        },
        undefined,
        { timeout: 15_000 },
      );
      await page.waitForSelector("#kept-chunks");
      await page.screenshot({
        path: await artifactPath("resume-offline.png"),
        fullPage: true,
      });

      // Reload right after a chunk was kept (the next one is ~1 s away), so
      // everything the MediaRecorder produced is in IndexedDB. Offline, the
      // page is replaced by the browser's error page: the recorder dies with
      // it, still recording.
      const keptBefore = recorded.kept(id).size;
      await eventually(
        () => {
          const raw = recorded.raw().reduce((n, b) => n + b.length, 0);
          const kept = [...recorded.kept(id).values()].reduce(
            (n, b) => n + b.length,
            0,
          );
          return recorded.kept(id).size > keptBefore && raw === kept;
        },
        5_000,
        "a fresh chunk kept",
      );
      const [uploadedAtReload, recordedAtReload] = await lagCounts(page);
      await page.reload({ timeout: 10_000 }).then(
        () => assert.fail("the reload should fail while offline"),
        (err: Error) => assert.match(err.message, /ERR_INTERNET_DISCONNECTED/),
      );
      await eventually(
        () =>
          page.evaluate(() =>
            document.readyState === "complete" &&
            !document.querySelector(".recorder")
          ).catch(() => false),
        10_000,
        "the recorder page to be replaced by the offline error page",
      );
      const whileGone = await getJson(`${server.url}/chunks/${id}/`);
      const lastHeld = (whileGone.received as [number, number][]).at(-1)?.[1] ??
        -1;
      assert.ok(
        lastHeld + 1 < recordedAtReload,
        `the server holds chunks up to ${lastHeld}; ${recordedAtReload} were recorded (${uploadedAtReload} acknowledged; ${pastTheBrowser} chunk requests got past the browser's offline mode)`,
      );
      assert.equal(
        (await getJson(`${server.url}/check_status/${id}/`)).status,
        "recording",
      );

      // Back online, the page opens again and resumes by itself.
      await context.setOffline(false);
      cut = false;
      slow = true;
      await page.goto(`${pageUrl}/record`);
      await page.waitForSelector(
        '[data-island="recorder"][data-hydrated="true"]',
      );
      const item = `#resume-status li[data-id="${id}"]`;
      await page.waitForSelector(`${item}[data-kind="interrupted"]`);
      await page.waitForSelector(`${item}[data-state="done"]`, {
        timeout: 30_000,
      });
      const resuming = headlines.filter((t) =>
        /^Resuming 1 recording: [1-9]\d* chunks? left/.test(t)
      );
      assert.ok(
        resuming.length > 0,
        `headlines seen: ${headlines.join(" | ")}`,
      );
      assert.match(
        (await page.textContent(item)) ?? "",
        /Done: every chunk is on the server/,
      );
      assert.match(
        (await page.textContent("#resume-headline")) ?? "",
        /^Resumed 1 recording: every kept chunk is on the server/,
      );
      await page.screenshot({
        path: await artifactPath("resume-done.png"),
        fullPage: true,
      });

      const status = await waitForStatus(server.url, id);
      assert.equal(status.status, "complete", JSON.stringify(status));
      const video = await getJson(`${server.url}/video/${id}/`);
      assert.deepEqual(
        (video.completed_videos as string[]).sort(),
        [`${id}.mp4`, `${id}.webm`],
        "VP9 makes a WebM",
      );
      const kept = recorded.kept(id);
      assert.ok(kept.size >= 6, `only ${kept.size} chunks were recorded`);
      assert.equal(kept.size, recordedAtReload);
      assert.deepEqual(
        await sha256(concatBytes(recorded.raw())),
        await sha256(
          concatBytes(
            Array.from({ length: kept.size }, (_, i) => kept.get(i)!),
          ),
        ),
        "every MediaRecorder blob is in the indexed chunks, in order",
      );
      assert.equal(
        // The recorder ran on while the reload failed: under load it may
        // have kept one more chunk after the test last heard from it.
        await assertWholeRecording(server, id, kept, 1),
        "vp9",
        "exact packet hashes were compared",
      );
      assert.deepEqual(
        await indexedDbCounts(page, DB_NAME, [RECORDINGS_STORE, CHUNKS_STORE]),
        { [RECORDINGS_STORE]: 0, [CHUNKS_STORE]: 0 },
        "nothing is left in IndexedDB",
      );
      await context.close();
      assert.deepEqual(problems, []);
    });
  },
});

Deno.test({
  name:
    "browser resume: a stopped recording's kept chunks are checked against the server's ledger, only the missing ones are sent, then it is finished",
  ignore: toolsMissing,
  async fn() {
    await withBrowser({}, async (browser, server) => {
      const problems: string[] = [];
      const dir = await Deno.makeTempDir({ prefix: "tapedeck-resume-" });
      const bytes = await makeRecording(join(dir, "in.webm"), { seconds: 2 });
      await Deno.remove(dir, { recursive: true });
      const pieces = splitBytes(bytes, [Math.ceil(bytes.length / 6)]);
      assert.equal(pieces.length, 6);
      const id = await createSession(server.url);
      for (const i of [0, 1, 2]) {
        const res = await sendChunk(server.url, id, pieces[i], i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }

      const context = await browser.newContext();
      const page = await openPage(
        context,
        `${server.url}/record`,
        "recorder",
        problems,
      );
      await page.waitForSelector('.recorder[data-ready="true"]');
      // What a page that died after stop() but before its last acks leaves:
      // chunks 1 and 2 (acknowledged, not yet dropped) and 3 to 5.
      await page.evaluate(
        async ([db, recordings, chunks, videoId, parts]) => {
          const open = await new Promise<IDBDatabase>((resolve, reject) => {
            const req = indexedDB.open(db);
            req.onsuccess = () => resolve(req.result);
            req.onerror = () => reject(req.error);
          });
          const tx = open.transaction([recordings, chunks], "readwrite");
          const now = Date.now();
          tx.objectStore(recordings).put({
            videoId,
            mimeType: "video/webm",
            createdAt: now,
            updatedAt: now,
            started: true,
            stopped: true,
          });
          for (const [index, b64] of parts) {
            const blob = new Blob([
              Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)),
            ], { type: "video/webm" });
            tx.objectStore(chunks).put({
              videoId,
              index,
              size: blob.size,
              blob,
            });
          }
          await new Promise<void>((resolve, reject) => {
            tx.oncomplete = () => resolve();
            tx.onerror = () => reject(tx.error);
          });
          open.close();
        },
        [
          DB_NAME,
          RECORDINGS_STORE,
          CHUNKS_STORE,
          id,
          [1, 2, 3, 4, 5].map((i) =>
            [i, btoa(String.fromCharCode(...pieces[i]))] as [number, string]
          ),
        ] as const,
      );

      const sent: number[] = [];
      page.on("request", (req) => {
        if (req.url().includes(`/add_data/${id}`)) {
          sent.push(Number(req.headers()["x-chunk-index"]));
        }
      });
      await page.reload();
      const item = `#resume-status li[data-id="${id}"]`;
      await page.waitForSelector(`${item}[data-state="done"]`, {
        timeout: 30_000,
      });
      assert.equal(await page.getAttribute(item, "data-kind"), "stopped");
      assert.deepEqual(sent, [3, 4, 5]);
      assert.match(
        (await page.textContent(item)) ?? "",
        /Done: every chunk is on the server \(3 sent now\)/,
      );
      const status = await waitForStatus(server.url, id);
      assert.equal(status.status, "complete", JSON.stringify(status));
      await assertWholeRecording(
        server,
        id,
        new Map(pieces.map((p, i) => [i, p])),
      );
      assert.deepEqual(
        await indexedDbCounts(page, DB_NAME, [RECORDINGS_STORE, CHUNKS_STORE]),
        { [RECORDINGS_STORE]: 0, [CHUNKS_STORE]: 0 },
      );
      await context.close();
      assert.deepEqual(problems, []);
    });
  },
});

Deno.test({
  name:
    "browser resume: Finish on the dashboard and on a recording's page makes a video of what was received; Retry processing requeues a failed one",
  ignore: toolsMissing,
  async fn() {
    await withBrowser({ JOB_MAX_ATTEMPTS: "1" }, async (browser, server) => {
      const problems: string[] = [];
      const dir = await Deno.makeTempDir({ prefix: "tapedeck-resume-" });
      const bytes = await makeRecording(join(dir, "in.webm"), { seconds: 1 });
      await Deno.remove(dir, { recursive: true });
      const open: string[] = [];
      for (let i = 0; i < 2; i++) {
        const id = await createSession(server.url);
        const res = await sendChunk(server.url, id, bytes, 0);
        assert.equal(res.status, 200);
        await res.body?.cancel();
        open.push(id);
      }
      // A recording that fails: a WebM header, then nothing ffmpeg can read.
      const broken = await createSession(server.url);
      await (await sendChunk(server.url, broken, mediaBytes(4096, 7), 0)).body
        ?.cancel();
      await (await fetch(`${server.url}/complete_job/${broken}/`, {
        method: "POST",
      })).body?.cancel();
      assert.equal((await waitForStatus(server.url, broken)).status, "failed");

      const context = await browser.newContext({
        viewport: { width: 1200, height: 900 },
      });
      const dashboard = await openPage(
        context,
        `${server.url}/`,
        "dashboard",
        problems,
      );
      await dashboard.waitForSelector('.live-state[data-live="live"]');
      const row = (id: string) => `tr[data-id="${id}"]`;

      // Finish: the chunk is seconds old, so the page asks first.
      await dashboard.click(`${row(open[0])} button[data-action="finish"]`);
      await dashboard.waitForSelector(
        `${row(open[0])} button[data-action="confirm-finish"]`,
      );
      assert.match(
        (await dashboard.textContent(`${row(open[0])} .row-actions`)) ?? "",
        /may still be recording\. Finish anyway\?/,
      );
      await dashboard.screenshot({
        path: await artifactPath("resume-dashboard-confirm.png"),
      });
      const finished = dashboard.waitForResponse((res) =>
        res.url().endsWith(`/complete_job/${open[0]}/`)
      );
      await dashboard.click(
        `${row(open[0])} button[data-action="confirm-finish"]`,
      );
      assert.equal((await finished).status(), 200);
      await dashboard.waitForSelector(
        `${row(open[0])}[data-status="complete"]`,
        {
          timeout: 30_000,
        },
      );
      assert.equal(
        await dashboard.$(`${row(open[0])} button[data-action="finish"]`),
        null,
      );

      // Retry processing: back to processing, then (still broken) failed.
      const statuses: string[] = [];
      const retried = dashboard.waitForResponse((res) =>
        res.url().endsWith(`/retry_job/${broken}/`)
      );
      await dashboard.click(`${row(broken)} button[data-action="retry"]`);
      const retry = await retried;
      assert.equal(retry.status(), 200);
      assert.equal((await retry.json()).message, "Processing queued again");
      await eventually(
        async () => {
          const status = String(
            (await getJson(`${server.url}/check_status/${broken}/`)).status,
          );
          if (statuses.at(-1) !== status) statuses.push(status);
          return status === "failed";
        },
        20_000,
        "the retried recording to fail again",
      );
      await dashboard.waitForSelector(
        `${row(broken)}[data-status="failed"] button[data-action="retry"]`,
      );
      await dashboard.screenshot({
        path: await artifactPath("resume-dashboard-actions.png"),
        fullPage: true,
      });

      // Finish from the recording's own page.
      const detail = await openPage(
        context,
        `${server.url}/videos/${open[1]}`,
        "recording_detail",
        problems,
      );
      await detail.waitForSelector('.live-state[data-live="live"]');
      await detail.click('#actions button[data-action="finish"]');
      await detail.click('#actions button[data-action="confirm-finish"]');
      await detail.waitForSelector('article.detail[data-status="complete"]', {
        timeout: 30_000,
      });
      await detail.waitForSelector("video#player");
      await dashboard.waitForSelector(
        `${row(open[1])}[data-status="complete"]`,
        {
          timeout: 30_000,
        },
      );
      await context.close();
      assert.deepEqual(problems, []);
    });
  },
});

/** Starts recording on a `/record` page; returns the recording's id. */
async function startRecording(page: Page): Promise<string> {
  await page.waitForSelector('.recorder[data-ready="true"]');
  await page.click("#start");
  await page.waitForSelector('.recorder[data-phase="recording"]', {
    timeout: 15_000,
  });
  const link = await page.waitForSelector(
    '#recorder-status a[href^="/videos/"]',
  );
  return (await link.getAttribute("href"))!.split("/").pop()!;
}

Deno.test({
  name:
    "browser resume: after the recording tab crashes, the recorder opened again uploads what the crashed tab kept (with its upload token) and finishes it",
  ignore: toolsMissing,
  async fn() {
    await withBrowser(
      { REQUIRE_UPLOAD_TOKEN: "true" },
      async (browser, server) => {
        const problems: string[] = [];
        const context = await browser.newContext();
        const recorded = await watchRecordedChunks(context);
        // Acknowledgements never reach the page: everything stays kept.
        let refuse = true;
        await context.route("**/add_data/**", async (route) => {
          if (refuse) return await route.abort("failed");
          // Slow enough to choose "Don't finish it" while it uploads.
          await new Promise((r) => setTimeout(r, 400));
          await route.continue();
        });
        const page = await openPage(
          context,
          `${server.url}/record`,
          "recorder",
          problems,
        );
        const id = await startRecording(page);
        await eventually(
          () => recorded.kept(id).size >= 4,
          15_000,
          "4 chunks kept",
        );
        const keptBefore = recorded.kept(id).size;
        await eventually(
          () => recorded.kept(id).size > keptBefore,
          5_000,
          "a fresh chunk kept",
        );
        const cdp = await context.newCDPSession(page);
        const crashed = new Promise<void>((resolve) =>
          page.once("crash", () => resolve())
        );
        cdp.send("Page.crash").catch(() => {});
        await crashed;
        const atCrash = new Map(recorded.kept(id));
        assert.equal(
          (await getJson(`${server.url}/chunks/${id}/`)).chunks_received,
          0,
        );

        refuse = false;
        await page.close();

        // The dashboard says this browser holds chunks that are not uploaded.
        const dashboard = await openPage(
          context,
          `${server.url}/`,
          "dashboard",
          problems,
        );
        await dashboard.waitForSelector("#kept-uploads");
        assert.match(
          (await dashboard.textContent("#kept-uploads")) ?? "",
          /keeps chunks of 1 recording that are not all on the server yet.*Open the recorder/,
        );
        await dashboard.close();
        const again = await openPage(
          context,
          `${server.url}/record`,
          "recorder",
          problems,
        );
        const item = `#resume-status li[data-id="${id}"]`;
        await again.waitForSelector(`${item}[data-kind="interrupted"]`);
        assert.match(
          (await again.textContent(item)) ?? "",
          /Was still recording when the page closed, so it cannot record any more\./,
        );
        // Offered, and done by default: finishing it after the upload. Declined.
        await again.click(`${item} button[data-action="leave-open"]`);
        await again.waitForSelector(`${item}[data-state="left-open"]`, {
          timeout: 30_000,
        });
        assert.equal(
          (await getJson(`${server.url}/check_status/${id}/`)).status,
          "recording",
        );
        assert.deepEqual(
          await indexedDbCounts(again, DB_NAME, [
            RECORDINGS_STORE,
            CHUNKS_STORE,
          ]),
          { [RECORDINGS_STORE]: 1, [CHUNKS_STORE]: 0 },
          "every chunk is acknowledged; the recording is remembered, left open",
        );
        await again.screenshot({
          path: await artifactPath("resume-left-open.png"),
          fullPage: true,
        });
        await again.click(`${item} button[data-action="finish-now"]`);
        await again.waitForSelector(`${item}[data-state="done"]`, {
          timeout: 30_000,
        });
        const status = await waitForStatus(server.url, id);
        assert.equal(status.status, "complete", JSON.stringify(status));
        assert.deepEqual(
          recorded.kept(id),
          atCrash,
          "no chunk came after the crash",
        );
        await assertWholeRecording(server, id, atCrash);
        assert.deepEqual(
          await indexedDbCounts(again, DB_NAME, [
            RECORDINGS_STORE,
            CHUNKS_STORE,
          ]),
          { [RECORDINGS_STORE]: 0, [CHUNKS_STORE]: 0 },
        );
        await context.close();
        assert.deepEqual(problems, []);
      },
    );
  },
});

Deno.test({
  name:
    "browser resume: a recording finished elsewhere while this page records it stops here, and the chunks the server can no longer take are explained and can be discarded",
  ignore: toolsMissing,
  async fn() {
    await withBrowser({}, async (browser, server) => {
      const problems: string[] = [];
      const context = await browser.newContext();
      const page = await openPage(
        context,
        `${server.url}/record`,
        "recorder",
        problems,
      );
      const id = await startRecording(page);
      await page.waitForFunction(
        () =>
          Number(
            document.querySelector<HTMLElement>("#upload-lag")?.dataset
              .uploaded,
          ) >= 2,
        undefined,
        { timeout: 15_000 },
      );
      const done = await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      });
      assert.equal(done.status, 200);
      await done.body?.cancel();

      await page.waitForSelector('.recorder[data-phase="error"]', {
        timeout: 10_000,
      });
      assert.match(
        (await page.textContent("#recorder-error")) ?? "",
        /^The upload stopped: Recording [0-9a-f-]+ is (processing|complete), no longer recording/,
      );
      const item = `#resume-status li[data-id="${id}"]`;
      await page.waitForSelector(`${item}[data-state="error"]`, {
        timeout: 10_000,
      });
      assert.match(
        (await page.textContent(item)) ?? "",
        /Its upload stopped on this page\..*The server already finished this recording \(\w+\), so the \d+ chunks? kept in this browser can no longer be added\./,
      );
      assert.match(
        (await page.textContent("#resume-headline")) ?? "",
        /^1 recording could not be resumed/,
      );
      await page.screenshot({
        path: await artifactPath("resume-rejected.png"),
        fullPage: true,
      });
      await page.click(`${item} button[data-action="discard"]`);
      await page.waitForSelector(item, { state: "detached" });
      assert.deepEqual(
        await indexedDbCounts(page, DB_NAME, [RECORDINGS_STORE, CHUNKS_STORE]),
        { [RECORDINGS_STORE]: 0, [CHUNKS_STORE]: 0 },
      );
      assert.equal((await waitForStatus(server.url, id)).status, "complete");
      await context.close();
      assert.deepEqual(problems, []);
    });
  },
});
