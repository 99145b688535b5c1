/**
 * The `livemp4` phase (issue 15): a VP8 720p recording (5 minutes; 40 s in
 * quick mode) uploaded at real-time pace, one chunk per second of media, to
 * a server with one live-encode slot, while N=50 simulated browsers upload
 * too (open loop, as the `reencode` phase). Measured in one run:
 *
 * - time from `complete_job` until `GET /video/<id>/` lists the WebM (the
 *   first playable file) and the MP4 (target < 5 s);
 * - add_data latency of the N=50 load while the live encode runs (target
 *   p99 < 50 ms);
 * - the CPU the server's children (the live encode's ffmpeg: nothing else
 *   runs ffmpeg while the recording is recorded) used per recorded minute;
 * - whether the live encode kept up: its playlist ended
 *   (`#EXT-X-ENDLIST`), so the MP4 is its segments remuxed.
 */

import { planLoad, runOpenLoop } from "./load.ts";
import type { MediaFile } from "./media.ts";
import { type BenchSettings, log, settleDisk, warmUp } from "./phases.ts";
import { ProcSampler, type ProcSummary, readProc } from "./proc_stats.ts";
import { startTapedeck } from "./servers.ts";
import { type LatencySummary, summarize } from "./stats.ts";
import { apiClient } from "./upload_clients.ts";
import { planChunks, sendPlanned } from "./live_view.ts";

/** What the phase measured. */
export interface LiveMp4Run {
  /** Seconds of the recording, and its bytes. */
  videoS: number;
  bytes: number;
  chunks: number;
  /** From the complete_job answer until the file was listed (s); null: never. */
  webmAfterStopS: number | null;
  mp4AfterStopS: number | null;
  /** Whether the live encode ended whole (its playlist has #EXT-X-ENDLIST). */
  liveEncodeDone: boolean;
  /** add_data latency of the N=50 load while the recording was uploaded. */
  ingestDuringLive: LatencySummary;
  ingestErrors: number;
  /** CPU seconds of the server's children per recorded minute (the live encode). */
  liveCpuSPerMin: number;
  /** CPU of the server's children over the recording, % of one core. */
  liveCpuPercent: number;
  server: ProcSummary;
}

/** Polls `/video/<id>/` until the MP4 is listed; when each file first was. */
async function watchListing(
  url: string,
  id: string,
  from: number,
  timeoutMs: number,
): Promise<{ webm: number | null; mp4: number | null }> {
  const seen: { webm: number | null; mp4: number | null } = {
    webm: null,
    mp4: null,
  };
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const body = await (await fetch(`${url}/video/${id}/`)).json();
    const names = (body.completed_videos ?? []) as string[];
    const now = (performance.now() - from) / 1000;
    if (seen.webm === null && names.some((n) => /\.(webm|mkv)$/.test(n))) {
      seen.webm = now;
    }
    if (names.includes(`${id}.mp4`)) {
      seen.mp4 = now;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return seen;
}

/** Runs the phase (see the module's description). */
export async function liveMp4Phase(
  settings: BenchSettings,
  source: Uint8Array<ArrayBuffer>,
  vp8: MediaFile,
): Promise<LiveMp4Run> {
  const bytes = await Deno.readFile(vp8.path);
  const plan = await planChunks(vp8.path, bytes.length);
  const dataDir = await Deno.makeTempDir({
    dir: settings.dataRoot,
    prefix: "livemp4-",
  });
  await settleDisk();
  const server = await startTapedeck(dataDir, { LIVE_ENCODE_SLOTS: "1" });
  let sampler: ProcSampler | undefined;
  try {
    await warmUp(server, settings.warmUpSource);
    sampler = new ProcSampler(server.pid, 500);
    const url = server.url;
    const client = apiClient(url);
    const { video_id: id } = await (await fetch(`${url}/create/`, {
      method: "POST",
    })).json();
    const recordS = plan.length;
    const load = planLoad({ slots: 50, durationS: recordS, seed: 500 });
    const latencies: { at: number; ms: number }[] = [];
    const childCpu0 = readProc(server.pid, true)?.childCpuS ?? NaN;
    const t0 = performance.now();
    const upload = (async () => {
      for (const [i, chunk] of plan.entries()) {
        const due = t0 + (i + 1) * 1000;
        await new Promise((r) =>
          setTimeout(r, Math.max(0, due - performance.now()))
        );
        await sendPlanned(url, id, bytes, chunk, i);
      }
    })();
    const [loadResult] = await Promise.all([
      runOpenLoop(client, load, source, {
        complete: false,
        onSample: (at, ms) => latencies.push({ at, ms }),
      }),
      upload,
    ]);
    const uploadedAt = performance.now();
    const childCpu1 = readProc(server.pid, true)?.childCpuS ?? NaN;
    const done = await fetch(
      `${url}/complete_job/${id}/?last_chunk=${plan.length - 1}`,
      { method: "POST" },
    );
    await done.body?.cancel();
    const stoppedAt = performance.now();
    const listed = await watchListing(url, id, stoppedAt, 1_800_000);
    const playlist = await fetch(`${url}/media/${id}/live.m3u8`);
    const liveEncodeDone = playlist.ok &&
      /^#EXT-X-ENDLIST$/m.test(await playlist.text());
    if (!playlist.ok) await playlist.body?.cancel();
    const cpuS = childCpu1 - childCpu0;
    const wallS = (uploadedAt - t0) / 1000;
    const run: LiveMp4Run = {
      videoS: vp8.durationS,
      bytes: bytes.length,
      chunks: plan.length,
      webmAfterStopS: listed.webm,
      mp4AfterStopS: listed.mp4,
      liveEncodeDone,
      ingestDuringLive: summarize(
        latencies.filter((l) => l.at < uploadedAt).map((l) => l.ms),
      ),
      ingestErrors: loadResult.errors,
      liveCpuSPerMin: cpuS / (vp8.durationS / 60),
      liveCpuPercent: 100 * cpuS / wallS,
      server: sampler.stop(),
    };
    log(
      `live MP4: ${vp8.durationS} s VP8 720p at real-time pace; WebM listed ${
        run.webmAfterStopS?.toFixed(2) ?? "never"
      } s, MP4 ${
        run.mp4AfterStopS?.toFixed(2) ?? "never"
      } s after complete_job (live encode ${
        liveEncodeDone ? "done" : "not done"
      }); ingest p99 ${
        run.ingestDuringLive.p99.toFixed(0)
      } ms at N=50; live encode ${
        run.liveCpuSPerMin.toFixed(1)
      } CPU s per recorded minute`,
    );
    return run;
  } catch (err) {
    sampler?.stop();
    const out = server.output().split("\n").slice(-20).join("\n");
    throw new Error(
      `${(err as Error).message}\n--- tapedeck output ---\n${out}`,
    );
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}
