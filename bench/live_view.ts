/// <reference lib="dom" />
/**
 * The `liveview` phase: how soon a chunk the server acknowledged is
 * playable in a viewer watching the recording live (issue 15).
 *
 * A VP8 recording (bench/media.ts `vp8Recording`, 1280x720 + Opus) is
 * uploaded in real time, one chunk per second of media (cut where a packet
 * starts), while headless Chromium shows its page `/videos/<id>`. The page
 * reports every growth of its live `<video>`'s buffered end. A chunk is
 * playable once the buffered end reaches the media time that the bytes up
 * to the chunk's end complete (for each track, the end of the last packet
 * wholly inside them; the lower of the two, since one SourceBuffer holds
 * both). Its latency is that moment minus the moment its `add_data`
 * answer arrived. Both clocks are this machine's.
 *
 * Run twice: without a live encode (LIVE_ENCODE_SLOTS=0: the page appends
 * `/media/<id>/source` through MSE; the page is open from the start) and
 * with one (HLS segments, 2 s each, through hls.js; the page is opened once
 * the playlist lists a segment, as by a viewer who comes a few seconds in,
 * since a page that started from the upload stays on it). Only chunks
 * acknowledged after the page showed its first media count.
 */

import { chromium } from "playwright-core";
import {
  CHROMIUM_PATH,
  HEADLESS_BROWSER_ARGS,
} from "../tests/browser_helpers.ts";
import { ffprobeEntries } from "../tests/helpers.ts";
import type { MediaFile } from "./media.ts";
import type { BenchSettings } from "./phases.ts";
import { startTapedeck } from "./servers.ts";
import { type LatencySummary, summarize } from "./stats.ts";

/** Debian's Chromium (CHROMIUM_PATH overrides). */
const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? CHROMIUM_PATH;
/** Media per chunk (s): a MediaRecorder timeslice of 1 s. */
const CHUNK_S = 1;
/** How far below the target media time the buffered end may be (s). */
const TOLERANCE_S = 0.1;
/** How long the page has, after the last chunk, to catch up (ms). */
const SETTLE_MS = 10_000;

/** One way of watching, measured. */
export interface LiveViewRun {
  /** `mse`: from the upload; `hls`: from the live encode. */
  mode: "mse" | "hls";
  /** What the page said it was doing (its `data-mode`). */
  pageMode: string;
  recordings: number;
  /** Chunks measured, and those never seen playable. */
  chunks: number;
  missed: number;
  /** Acknowledged to playable, ms. */
  latency: LatencySummary;
  /** How far behind the newest media the page said it was, at the end (s). */
  behindS: number | null;
}

/** One chunk of the plan: its bytes and the media time they complete. */
interface PlannedChunk {
  start: number;
  end: number;
  /** Media time (s) that the bytes [0, end) make playable. */
  playableS: number;
}

/** Cuts `path` into one chunk per {@link CHUNK_S} of media, where packets start. */
export async function planChunks(
  path: string,
  size: number,
): Promise<PlannedChunk[]> {
  const out = await ffprobeEntries(
    path,
    "packet=stream_index,pts_time,duration_time,pos,size",
  );
  const packets = out.trim().split("\n")
    .map((line) => {
      const [stream, pts, dur, s, pos] = line.split(",");
      return {
        stream: Number(stream),
        pts: Number(pts),
        end: Number(pts) + (Number(dur) || 0),
        pos: Number(pos),
        size: Number(s),
      };
    })
    .filter((p) => Number.isFinite(p.pts) && Number.isFinite(p.pos))
    .sort((a, b) => a.pos - b.pos);
  const streams = [...new Set(packets.map((p) => p.stream))];
  const cuts: number[] = [];
  for (let t = CHUNK_S;; t += CHUNK_S) {
    const first = packets.find((p) => p.pts >= t);
    if (!first) break;
    if (first.pos > (cuts.at(-1) ?? 0)) cuts.push(first.pos);
  }
  cuts.push(size);
  const chunks: PlannedChunk[] = [];
  let start = 0;
  for (const end of cuts) {
    const ends = streams.map((s) =>
      Math.max(
        0,
        ...packets.filter((p) => p.stream === s && p.pos + p.size <= end)
          .map((p) => p.end),
      )
    );
    chunks.push({ start, end, playableS: Math.min(...ends) });
    start = end;
  }
  return chunks;
}

/**
 * Sends chunk `index` of the plan as a VP8 + Opus MediaRecorder's add_data;
 * throws unless it is accepted.
 */
export async function sendPlanned(
  url: string,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  chunk: PlannedChunk,
  index: number,
): Promise<void> {
  const res = await fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    body: bytes.subarray(chunk.start, chunk.end),
    headers: {
      "Content-Type": "video/webm;codecs=vp8,opus",
      "X-Chunk-Index": String(index),
    },
  });
  await res.body?.cancel();
  if (!res.ok) throw new Error(`add_data ${index} answered ${res.status}`);
}

/** Records every growth of the live player's buffered end, in the page. */
function collectBufferedEnds() {
  const g = globalThis as unknown as { bufferedEnds: [number, number][] };
  g.bufferedEnds = [];
  let last = 0;
  setInterval(() => {
    const video = document.querySelector<HTMLVideoElement>("#live-player");
    const ranges = video?.buffered;
    if (!ranges?.length) return;
    const end = ranges.end(ranges.length - 1);
    if (end > last) {
      last = end;
      g.bufferedEnds.push([Date.now(), end]);
    }
  }, 10);
}

/**
 * Uploads one recording in real time and watches it: from the start
 * (`mse`), or once the live encode lists a segment (`hls`, as a viewer who
 * comes a few seconds in). Returns the latency (ms) of each chunk
 * acknowledged after the viewer showed its first media (NaN: never seen
 * playable).
 */
async function watchOne(
  url: string,
  bytes: Uint8Array<ArrayBuffer>,
  plan: PlannedChunk[],
  mode: "mse" | "hls",
): Promise<{ latencies: number[]; pageMode: string; behindS: number | null }> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      ...HEADLESS_BROWSER_ARGS,
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
  try {
    const { video_id: id } = await (await fetch(`${url}/create/`, {
      method: "POST",
    })).json();
    const acks: number[] = [];
    const t0 = Date.now();
    const upload = (async () => {
      for (const [i, chunk] of plan.entries()) {
        // Sent once its second of media is "recorded".
        const due = t0 + (i + 1) * CHUNK_S * 1000;
        await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
        await sendPlanned(url, id, bytes, chunk, i);
        acks.push(Date.now());
      }
    })();
    let uploaded = false;
    upload.then(() => uploaded = true, () => uploaded = true);
    if (mode === "hls") {
      for (;;) {
        const res = await fetch(`${url}/media/${id}/live.m3u8`, {
          method: "HEAD",
        });
        if (res.ok) break;
        if (uploaded) throw new Error("the live encode listed no segment");
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    const page = await browser.newPage();
    await page.addInitScript(collectBufferedEnds);
    await page.goto(`${url}/videos/${id}`);
    await upload;
    const state = await page.evaluate(() => ({
      mode: document.querySelector("#live-view")?.getAttribute("data-mode") ??
        "none",
      behind: document.querySelector("#live-behind")?.getAttribute(
        "data-behind",
      ),
    }));
    // The stop: the last segments of a live encode come with it.
    const done = await fetch(
      `${url}/complete_job/${id}/?last_chunk=${plan.length - 1}`,
      { method: "POST" },
    );
    await done.body?.cancel();
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const seen = await page.evaluate(() =>
      (globalThis as unknown as { bufferedEnds: [number, number][] })
        .bufferedEnds
    );
    const readyAt = seen[0]?.[0] ?? Infinity;
    const latencies = plan.flatMap((chunk, i) => {
      if (acks[i] < readyAt) return [];
      const at = seen.find(([, end]) => end >= chunk.playableS - TOLERANCE_S);
      return [at ? Math.max(0, at[0] - acks[i]) : NaN];
    });
    return {
      latencies,
      pageMode: state.mode,
      behindS: state.behind == null ? null : Number(state.behind),
    };
  } finally {
    await browser.close();
  }
}

/**
 * Measures "chunk acknowledged to playable in a viewer" without and with
 * a live encode, `settings.quick ? 1 : 3` recordings of `media` each.
 */
export async function liveViewPhase(
  settings: BenchSettings,
  media: MediaFile,
): Promise<LiveViewRun[]> {
  const bytes = await Deno.readFile(media.path);
  const plan = await planChunks(media.path, bytes.length);
  const runs: LiveViewRun[] = [];
  for (const mode of ["mse", "hls"] as const) {
    const dataDir = await Deno.makeTempDir({
      dir: settings.dataRoot,
      prefix: `liveview-${mode}-`,
    });
    const server = await startTapedeck(dataDir, {
      LIVE_ENCODE_SLOTS: mode === "mse" ? "0" : "1",
    });
    try {
      // The first page builds the bundle; not part of what is measured.
      await (await fetch(`${server.url}/`)).body?.cancel();
      const latencies: number[] = [];
      let pageMode = "none";
      let behindS: number | null = null;
      const recordings = settings.quick ? 1 : 3;
      for (let r = 0; r < recordings; r++) {
        const one = await watchOne(server.url, bytes, plan, mode);
        latencies.push(...one.latencies);
        pageMode = one.pageMode;
        behindS = one.behindS;
      }
      const playable = latencies.filter((l) => Number.isFinite(l));
      runs.push({
        mode,
        pageMode,
        recordings,
        chunks: latencies.length,
        missed: latencies.length - playable.length,
        latency: summarize(playable),
        behindS,
      });
    } finally {
      await server.stop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  }
  return runs;
}
