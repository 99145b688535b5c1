/**
 * Fault: `kill -9` of the server while a recording is being processed
 * (GitHub issue #4, "Faults to survive").
 *
 * A 30 s VP8 recording (re-encoded to H.264, so processing takes seconds)
 * is processed by a real `deno run main.ts` child that is SIGKILLed in each
 * processing step: while the work folder is filled (chunks assembled, head
 * probed), as soon as ffmpeg starts writing the WebM and MP4, several times
 * while it writes them, while the poster ffmpeg runs (next to them) and
 * while the finished files are moved into place. The step a kill hit is read
 * from what was on disk (and which ffmpeg was running) at that moment. All
 * the while a poller asks for the file list and the finished files: before
 * the job is complete only the files made first (the WebM and the poster,
 * lib/processing/progressive.ts) may be listed, nothing is served before it
 * is listed, and whatever is served must be the finished file. After the
 * last restart the job completes once, its attempts count every claim, and
 * the files are whole (ffprobe).
 *
 * Set KILL_SEED to replay a run.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  finishedRecordingPrefix,
  type Job,
  jobKey,
  type Recording,
  recordingKey,
} from "../lib/kv/keys.ts";
import {
  type ChildServer,
  createSession,
  makeRecording,
  missingTool,
  probeFile,
  spawnServer,
  splitBytes,
  waitForStatus,
} from "./helpers.ts";
import { seededRandom } from "./support/random.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function entries(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((e) => e.name);
  } catch {
    return [];
  }
}

/** Live processes (pid, parent pid, command line) read from /proc. */
function processes(): { pid: number; ppid: number; cmd: string }[] {
  const out: { pid: number; ppid: number; cmd: string }[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`)
        .replaceAll("\0", " ");
      out.push({ pid: Number(e.name), ppid, cmd });
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * The steps of processing, as seen from outside: the work folder is being
 * filled (the chunks assembled, or the head probed), ffmpeg writes the
 * WebM/MKV and the MP4 (one pass or two), the poster is made, the finished
 * files are moved into place.
 */
type Step =
  | "assembling/probing"
  | "remux/encode, early"
  | "remux/encode"
  | "poster"
  | "publishing";

Deno.test({
  name:
    "kill-processing: kill -9 in every processing step never lists or serves a partial file, and the job completes once with whole files",
  ignore: ffmpegMissing,
  async fn() {
    const seed = Number(Deno.env.get("KILL_SEED") ?? Date.now() % 1_000_000);
    console.log(
      `kill-processing: seed ${seed} (replay with KILL_SEED=${seed})`,
    );
    const rng = seededRandom(seed);
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-kill-job-" });
    const srcDir = await Deno.makeTempDir({ prefix: "tapedeck-kill-job-src-" });
    const env = { JOB_MAX_ATTEMPTS: "20", CREATE_RATE_PER_MINUTE: "0" };
    let server: ChildServer | undefined;
    let polling = true;
    let poller: Promise<void> | undefined;
    const orphanPids = new Set<number>();
    const started = Date.now();
    try {
      const srcPath = join(srcDir, "source.webm");
      const source = await makeRecording(srcPath, {
        codec: "vp8",
        seconds: 30,
        fps: 30,
      });
      const sourceProbe = await probeFile(srcPath);

      server = await spawnServer(dataDir, env);
      let url = server.url;
      const id = await createSession(url);
      // Many small chunks, so that assembling them takes a moment.
      const pieces = splitBytes(source, [4096]);
      let nextPiece = 0;
      await Promise.all(Array.from({ length: 4 }, async () => {
        while (nextPiece < pieces.length) {
          const i = nextPiece++;
          const res = await fetch(`${url}/add_data/${id}/`, {
            method: "POST",
            headers: {
              "content-type": "video/webm",
              "x-chunk-index": String(i),
            },
            body: pieces[i],
          });
          assert.equal(res.status, 200, await res.clone().text());
          await res.body?.cancel();
        }
      }));

      const names = [`${id}.mp4`, `${id}.webm`, `${id}.jpg`];
      const served: { name: string; sha: string; size: number }[] = [];
      let complete = false;
      let polls = 0;
      let listedEarly = 0;
      poller = (async () => {
        while (polling) {
          try {
            const list = await fetch(`${url}/video/${id}/`);
            assert.equal(list.status, 200);
            const body = await list.json();
            const listed: string[] = [
              ...body.completed_videos,
              ...(body.poster ? [body.poster.split("/").at(-1)] : []),
            ];
            const late = listed.filter((n) => n === `${id}.mp4`);
            if (late.length > 0 && !complete) {
              // The MP4 is listed only with `complete`: check it right now.
              const st = await (await fetch(`${url}/check_status/${id}/`))
                .json();
              if (st.status !== "complete") listedEarly++;
            }
            for (const name of names) {
              const res = await fetch(`${url}/media/${id}/${name}`);
              if (res.status === 200) {
                const bytes = new Uint8Array(await res.arrayBuffer());
                assert.equal(
                  bytes.length,
                  Number(res.headers.get("content-length")),
                );
                served.push({ name, sha: sha256(bytes), size: bytes.length });
              } else {
                assert.equal(res.status, 404, `${name}: ${res.status}`);
                assert.equal(
                  res.headers.get("content-type"),
                  "application/json",
                );
                const err = await res.json();
                assert.equal(typeof err.error, "string");
                assert.ok(!listed.includes(name), `${name} listed but 404`);
              }
            }
            polls++;
          } catch (err) {
            if (err instanceof assert.AssertionError) throw err;
            // the server is down between a kill and its restart
          }
          await delay(20);
        }
      })();
      let pollError: unknown;
      poller.catch((err) => pollError = err);

      // This recording's scratch folder: work/<id>, or work/<id>.<run> when
      // each processing run gets a folder of its own.
      const workRoot = join(dataDir, "work");
      const workDir = () => {
        const name = entries(workRoot).find((n) =>
          n === id || n.startsWith(`${id}.`)
        );
        return name ? join(workRoot, name) : join(workRoot, id);
      };
      const filesDir = join(dataDir, "recordings", id, "files");
      const plan: Step[] = [
        "assembling/probing",
        "remux/encode, early",
        "remux/encode",
        "remux/encode",
        "remux/encode",
        "poster",
        "publishing",
        (["remux/encode, early", "remux/encode", "poster"] as Step[])[
          Math.floor(rng() * 3)
        ],
      ];
      const landed: Record<string, number> = {};
      let attemptsSeen = 0;
      for (const [life, target] of plan.entries()) {
        const serverPid = server.child.pid;
        let posterRunning = false;
        const hit = (): boolean => {
          const outputs = () =>
            exists(join(workDir(), `${id}.webm`)) ||
            exists(join(workDir(), `${id}.mkv`)) ||
            exists(join(workDir(), `${id}.mp4`));
          switch (target) {
            case "assembling/probing":
              return exists(workDir());
            case "remux/encode, early":
            case "remux/encode":
              return outputs();
            case "poster":
              posterRunning = processes().some((p) =>
                p.ppid === serverPid && p.cmd.includes(`${id}.jpg`)
              );
              return posterRunning || exists(join(workDir(), `${id}.jpg`));
            case "publishing":
              return entries(filesDir).length > 0;
          }
        };
        if (life === 0) {
          const res = await fetch(`${url}/complete_job/${id}/`, {
            method: "POST",
          });
          assert.equal(res.status, 200);
          await res.body?.cancel();
        }
        const deadline = Date.now() + 30_000;
        while (!hit() && Date.now() < deadline) await delay(0);
        assert.ok(Date.now() < deadline, `never saw step ${target}`);
        if (target === "remux/encode") {
          // A random moment of the encode, but while its ffmpeg still runs.
          const killAt = Date.now() + rng() * 1200;
          while (
            Date.now() < killAt &&
            processes().some((p) =>
              p.ppid === serverPid && p.cmd.includes(`${id}.mp4`)
            )
          ) await delay(5);
        }
        const st = await server.stop("SIGKILL");
        assert.equal(st.signal, "SIGKILL");
        server = undefined;
        // What was on disk at the kill says which step it hit.
        const work = entries(workDir());
        const jobNow = await (async () => {
          const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
          try {
            return (await kv.get<Job>(jobKey(id))).value!;
          } finally {
            kv.close();
          }
        })();
        if (jobNow.state === "done") {
          // The job finished just before the kill: no step left to hit.
          landed["after completion"] = (landed["after completion"] ?? 0) + 1;
          attemptsSeen = jobNow.attempts - 1;
          server = await spawnServer(dataDir, env);
          url = server.url;
          break;
        }
        // The poster ffmpeg may run next to the remux/encode: a kill counts
        // as "poster" when it was aimed at the running poster ffmpeg, or when
        // the poster is all there is besides the scratch folder.
        // The WebM and poster are published (and listed) before the MP4 is
        // made: "publishing" is the MP4's, or theirs while nothing runs.
        const outputsInWork = work.some((n) =>
          /\.(webm|mkv|mp4)$/.test(n) && n.startsWith(id)
        );
        const step: Step = entries(filesDir).includes(`${id}.mp4`) ||
            (entries(filesDir).length > 0 && !outputsInWork && !posterRunning)
          ? "publishing"
          : posterRunning
          ? "poster"
          : work.some((n) => /\.(webm|mkv|mp4)$/.test(n) && n.startsWith(id))
          ? (target === "remux/encode, early"
            ? "remux/encode, early"
            : "remux/encode")
          : work.includes(`${id}.jpg`)
          ? "poster"
          : "assembling/probing";
        landed[step] = (landed[step] ?? 0) + 1;
        for (const p of processes()) {
          if (p.cmd.includes(dataDir) && p.cmd.includes("ffmpeg")) {
            orphanPids.add(p.pid);
          }
        }

        const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
        try {
          const job = (await kv.get<Job>(jobKey(id))).value!;
          const rec = (await kv.get<Recording>(recordingKey(id))).value!;
          assert.equal(job.state, "running", `after kill ${life}`);
          assert.equal(job.attempts, life + 1, "one claim per server life");
          attemptsSeen = job.attempts;
          assert.equal(rec.status, "processing");
          assert.ok(
            rec.files.every((n) => n === `${id}.webm`),
            `only the WebM is listed while processing: ${rec.files}`,
          );
        } finally {
          kv.close();
        }

        server = await spawnServer(dataDir, env);
        url = server.url;
        const list = await (await fetch(`${url}/video/${id}/`)).json();
        assert.ok(
          (list.completed_videos as string[]).every((n) => n === `${id}.webm`),
          `only the WebM may be listed after a kill: ${list.completed_videos}`,
        );
      }

      const final = await waitForStatus(
        url,
        id,
        ["complete", "failed"],
        120_000,
      );
      assert.equal(final.status, "complete", JSON.stringify(final));
      complete = true;
      const list = await (await fetch(`${url}/video/${id}/`)).json();
      assert.deepEqual(list.completed_videos, [`${id}.mp4`, `${id}.webm`]);
      assert.equal(list.poster, `/media/${id}/${id}.jpg`);
      const finals = new Map<string, string>();
      for (const name of names) {
        const res = await fetch(`${url}/media/${id}/${name}`);
        assert.equal(res.status, 200);
        const bytes = new Uint8Array(await res.arrayBuffer());
        finals.set(name, sha256(bytes));
        await Deno.writeFile(join(srcDir, name), bytes);
      }
      await delay(300);
      polling = false;
      await poller.catch(() => {});
      if (pollError) throw pollError;
      const st = await server.stop("SIGTERM");
      server = undefined;
      assert.equal(st.code, 0);

      // The files are whole.
      const mp4 = await probeFile(join(srcDir, `${id}.mp4`));
      const webm = await probeFile(join(srcDir, `${id}.webm`));
      assert.equal(mp4.video?.codec, "h264");
      assert.equal(mp4.video?.packets, sourceProbe.video?.packets);
      assert.equal(mp4.audio?.packets, sourceProbe.audio?.packets);
      assert.ok(Math.abs(mp4.durationS - 30) < 0.2, `mp4 ${mp4.durationS} s`);
      assert.equal(webm.video?.codec, "vp8");
      assert.equal(webm.video?.packets, sourceProbe.video?.packets);
      assert.equal(webm.audio?.packets, sourceProbe.audio?.packets);
      assert.ok(
        Math.abs(webm.durationS - 30) < 0.1,
        `webm ${webm.durationS} s`,
      );
      const jpg = await Deno.readFile(join(srcDir, `${id}.jpg`));
      assert.deepEqual([...jpg.subarray(0, 2)], [0xff, 0xd8]);
      assert.deepEqual([...jpg.subarray(-2)], [0xff, 0xd9]);

      // Whatever was ever served is the finished file.
      for (const s of served) {
        assert.equal(s.sha, finals.get(s.name), `served ${s.name} is whole`);
      }
      assert.equal(listedEarly, 0, "no MP4 listed before the job completed");

      // The job finished once.
      const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
      try {
        const job = (await kv.get<Job>(jobKey(id))).value!;
        assert.equal(job.state, "done");
        assert.equal(job.attempts, attemptsSeen + 1);
        let finishedEntries = 0;
        for await (
          const e of kv.list({ prefix: finishedRecordingPrefix() })
        ) if (e.key.at(-1) === id) finishedEntries++;
        assert.equal(finishedEntries, 1);
        const rec = (await kv.get<Recording>(recordingKey(id))).value!;
        assert.equal(rec.status, "complete");
      } finally {
        kv.close();
      }
      console.log(
        `kill-processing figures: ${plan.length} kill -9 points, by step: ${
          JSON.stringify(landed)
        }; job done after ${
          attemptsSeen + 1
        } attempts; ${polls} polls of the list and files, ${served.length} files served, all whole; ` +
          `${orphanPids.size} ffmpeg processes outlived their killed server; ${
            ((Date.now() - started) / 1000).toFixed(0)
          } s`,
      );
      const steps = Object.keys(landed).filter((k) => k !== "after completion");
      const during = steps.reduce((n, k) => n + landed[k], 0);
      assert.ok(during >= 5, `${during} kills landed while the job ran`);
      assert.ok(steps.length >= 4, `kills hit ${steps.join(", ")}`);
    } finally {
      polling = false;
      await poller?.catch(() => {});
      await server?.stop("SIGKILL");
      for (const p of processes()) {
        // Only ffmpeg runs of this test's servers, still alive.
        if (orphanPids.has(p.pid) && p.cmd.includes(dataDir)) {
          try {
            Deno.kill(p.pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
      }
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(srcDir, { recursive: true }).catch(() => {});
    }
  },
});
