/**
 * Issue 11 in a real browser: a page written the naive way the public Chrome
 * extension does it (every `dataavailable` blob POSTed without awaiting and
 * without an index, `complete_job` sent from `onstop` at once) loses
 * nothing. Each recording's `/media/<id>/source` must equal every blob the
 * page recorded, and its MP4 must last as long as those blobs.
 */

import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { BASE_BROWSER_ARGS, CHROMIUM_PATH } from "./browser_helpers.ts";
import {
  haveFfmpeg,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import {
  downloadTo,
  fetchSource,
  formatDurationS,
  HAVE_CHROMIUM,
  HAVE_FFMPEG,
  packetDurationS,
  servePage,
} from "./stop_helpers.ts";

/** Tabs (one timeslice each) and rounds: every tab records once per round, one tab at a time. */
const TABS = 3;
const ROUNDS = 4;
/**
 * How long each recording lasts: at least 150 ms away from every
 * timeslice's boundary (2250 is 150 ms past 7 x 300, 150 ms before 6 x 400
 * and 250 ms from 4 x 500). A stop right on a boundary makes Chrome emit two
 * blobs at once, whose requests reach the server in either order: no server
 * can see an order the client never sent (docs/api.md, "Chunk index"), so
 * that race is not what this test is about; the stop racing the last blob's
 * add_data is.
 */
const RECORD_MS = 2_250;
/** Timeslices the tabs use (ms), one per tab. */
const TIMESLICES = [300, 400, 500];

/** The extension's page: nothing but a place on another origin to run in. */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>naive recorder</title></head>
<body><p>recorder page on another origin</p></body></html>`;

/** What one recording in the page made. */
interface PageRecording {
  id: string;
  /** Every blob the page recorded, concatenated, base64. */
  recorded: string;
  blobSizes: number[];
  /** add_data requests sent and complete_job's answer, for messages. */
  answers: string[];
}

/**
 * Records `ms` of the fake camera and microphone in the page exactly as the
 * extension does, and returns every blob it recorded.
 */
async function recordNaively(
  page: Page,
  api: string,
  ms: number,
  timeslice: number,
): Promise<PageRecording> {
  return await page.evaluate(async ({ api, ms, timeslice }) => {
    const answers: string[] = [];
    const created = await (await fetch(`${api}/create/`, { method: "POST" }))
      .json();
    const id: string = created.video_id;
    const addDataUrl = `${api}/add_data/${id}/`;
    const completeUrl = `${api}/complete_job/${id}/`;
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: 320, height: 240, frameRate: 15 },
      audio: true,
    });
    // Test set-up, not the extension: wait until the camera gives frames.
    const video = document.createElement("video");
    video.muted = true;
    video.srcObject = stream;
    document.body.append(video);
    await video.play();
    await new Promise<void>((resolve) => {
      const frames = () =>
        video.currentTime > 0.1 ? resolve() : setTimeout(frames, 20);
      frames();
    });
    const mimeType = "video/webm;codecs=vp9,opus";
    const recorder = new MediaRecorder(stream, { mimeType });
    const blobs: Blob[] = [];
    const stopped = new Promise<void>((resolve) => {
      // The extension's handlers, as written: no await, no index.
      recorder.ondataavailable = (e) => {
        blobs.push(e.data);
        fetch(addDataUrl, {
          method: "POST",
          body: e.data,
          headers: { "Content-Type": mimeType },
        }).then(
          async (r) => answers.push(`add_data ${r.status} ${await r.text()}`),
          (err) => answers.push(`add_data failed: ${err}`),
        );
      };
      recorder.onstop = () => {
        fetch(completeUrl, { method: "POST" }).then(
          async (r) =>
            answers.push(`complete_job ${r.status} ${await r.text()}`),
          (err) => answers.push(`complete_job failed: ${err}`),
        );
        resolve();
      };
    });
    recorder.start(timeslice);
    await new Promise((r) => setTimeout(r, ms));
    recorder.stop();
    await stopped;
    for (const track of stream.getTracks()) track.stop();
    video.remove();
    const all = new Blob(blobs);
    const recorded = await new Promise<string>((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => {
        const url = String(reader.result);
        resolve(url.slice(url.indexOf(",") + 1));
      };
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(all);
    });
    // Let the requests in flight answer, for the failure messages.
    await new Promise((r) => setTimeout(r, 1500));
    return { id, recorded, blobSizes: blobs.map((b) => b.size), answers };
  }, { api, ms, timeslice });
}

function fromBase64(b64: string): Uint8Array {
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** What went wrong with one recording, or null when it is whole. */
async function check(
  server: TestServer,
  rec: PageRecording,
  dir: string,
): Promise<string | null> {
  const recorded = fromBase64(rec.recorded);
  const context = `blobs ${rec.blobSizes.join(",")}; answers: ${
    rec.answers.join(" | ")
  }`;
  let st: Record<string, unknown>;
  try {
    st = await waitForStatus(
      server.url,
      rec.id,
      ["complete", "failed"],
      30_000,
    );
  } catch (err) {
    return `${(err as Error).message}; ${context}`;
  }
  if (st.status !== "complete") {
    return `${rec.id} is ${st.status}: ${JSON.stringify(st)}; ${context}`;
  }
  const source = await fetchSource(server.url, rec.id);
  if (
    source.length !== recorded.length ||
    source.some((b, i) => b !== recorded[i])
  ) {
    return `${rec.id}: the server holds ${source.length} bytes, the page recorded ${recorded.length} (${
      recorded.length - source.length
    } lost); ${context}`;
  }
  await Deno.writeFile(`${dir}/${rec.id}.webm`, recorded);
  await downloadTo(server.url, rec.id, `${rec.id}.mp4`, `${dir}/${rec.id}.mp4`);
  const recordedS = await packetDurationS(`${dir}/${rec.id}.webm`);
  const mp4S = await formatDurationS(`${dir}/${rec.id}.mp4`);
  if (Math.abs(mp4S - recordedS) > 0.15) {
    return `${rec.id}: the MP4 lasts ${mp4S} s, the recorded blobs ${recordedS} s`;
  }
  return null;
}

Deno.test({
  name:
    "browser extension: a naive MediaRecorder page (unawaited add_data per blob, complete_job from onstop) loses no blob in 12 recordings",
  ignore: !HAVE_CHROMIUM || !HAVE_FFMPEG,
  async fn() {
    await haveFfmpeg(); // fails with a clear message in CI when missing
    await Deno.stat(CHROMIUM_PATH).catch(() => {
      throw new Error(`Chromium is required but ${CHROMIUM_PATH} is missing`);
    });
    // The tabs record at once: none of them may be throttled as hidden.
    const browser: Browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [
        ...BASE_BROWSER_ARGS,
        "--use-fake-ui-for-media-stream",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
      ],
    });
    const server = await startTestServer({ CREATE_RATE_PER_MINUTE: "0" });
    const origin = servePage(PAGE);
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-ext-" });
    try {
      assert.notEqual(new URL(origin.url).origin, new URL(server.url).origin);
      const pages: Page[] = [];
      for (let i = 0; i < TABS; i++) {
        const context = await browser.newContext();
        await context.grantPermissions(["camera", "microphone"], {
          origin: origin.url,
        });
        const page = await context.newPage();
        await page.goto(origin.url);
        pages.push(page);
      }
      // One recording at a time: a user records one thing at once, and on
      // a busy 2-core machine three recording tabs delay Chrome's blob
      // uploads enough to send some after the next blob's (the server keeps
      // unindexed chunks in the order their requests arrive).
      const recordings: PageRecording[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        for (const [i, page] of pages.entries()) {
          recordings.push(
            await recordNaively(page, server.url, RECORD_MS, TIMESLICES[i]),
          );
        }
      }
      for (const page of pages) await page.context().close();
      assert.equal(recordings.length, TABS * ROUNDS);
      const problems = (await Promise.all(
        recordings.map((rec) => check(server, rec, dir)),
      )).filter((p): p is string => p !== null);
      if (problems.length > 0) {
        assert.fail(
          `${problems.length} of ${recordings.length} recordings lost data:\n${
            problems.join("\n")
          }`,
        );
      }
    } finally {
      await browser.close();
      await origin.close();
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
