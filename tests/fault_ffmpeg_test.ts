/**
 * Fault: ffmpeg fails, hangs or is missing (GitHub issue #4, "Faults to
 * survive"). FFMPEG_PATH points at small shell scripts written by the test
 * (fault injection of the external tool; ffprobe stays the real one): one
 * that exits 1 with a message, one that hangs (on chosen recordings only,
 * running the real ffmpeg for the others), and a path that does not exist.
 * Each script logs its runs so attempts and backoff can be counted.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Job, jobKey } from "../lib/kv/keys.ts";
import {
  createSession,
  makeRecording,
  missingTool,
  sendChunk,
  startTestServer,
  type TestServer,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function realFfmpeg(): string {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(join(dir, "ffmpeg")).isFile) return join(dir, "ffmpeg");
    } catch {
      // not here
    }
  }
  throw new Error("ffmpeg not on PATH");
}

interface Fakes {
  dir: string;
  fail: string;
  hang: string;
  hangWrapper: string;
  missing: string;
  /** Makes the hanging scripts hang on this recording. */
  hangOn(id: string): Promise<void>;
  /**
   * Main-pass runs logged by the scripts (the one writing the MP4): not
   * counting `-version` probes nor the poster runs started next to it.
   */
  runs(): Promise<{ at: number; args: string }[]>;
  /** Pids of the processes the hanging scripts left. */
  pids(): Promise<number[]>;
  cleanup(): Promise<void>;
}

async function writeFakes(real: string): Promise<Fakes> {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-fakeff-" });
  const log = join(dir, "runs.log");
  const ids = join(dir, "hang_ids");
  const pids = join(dir, "pids");
  await Deno.writeTextFile(ids, "");
  const header = `#!/bin/sh
echo "$(date +%s%N) $*" >> "${log}"
case "$*" in *-version*) exec "${real}" "$@";; esac
`;
  const scripts = {
    fail: header + `echo "Error: simulated encoder crash (fault injection)" >&2
exit 1
`,
    // Hangs as one process: the sleep replaces the shell.
    hang: header + `for id in $(cat "${ids}"); do
  case "$*" in *"$id"*) echo $$ >> "${pids}"; exec sleep 3600;; esac
done
exec "${real}" "$@"
`,
    // Hangs as a wrapper would: its child keeps stdout and stderr open.
    hangWrapper: header + `for id in $(cat "${ids}"); do
  case "$*" in *"$id"*) sleep 3600 & echo $! >> "${pids}"; wait $!; exit 1;; esac
done
exec "${real}" "$@"
`,
  };
  const paths: Record<string, string> = {};
  for (const [name, text] of Object.entries(scripts)) {
    paths[name] = join(dir, `ffmpeg-${name}`);
    await Deno.writeTextFile(paths[name], text);
    await Deno.chmod(paths[name], 0o755);
  }
  const readPids = async () =>
    (await Deno.readTextFile(pids).catch(() => "")).split("\n").filter(Boolean)
      .map(Number);
  return {
    dir,
    fail: paths.fail,
    hang: paths.hang,
    hangWrapper: paths.hangWrapper,
    missing: join(dir, "no-such-ffmpeg"),
    async hangOn(id) {
      await Deno.writeTextFile(ids, `${id}\n`, { append: true });
    },
    async runs() {
      const text = await Deno.readTextFile(log).catch(() => "");
      return text.split("\n").filter((l) =>
        l && !l.includes("-version") && l.includes(".mp4")
      )
        .map((l) => ({
          at: Number(l.slice(0, l.indexOf(" "))) / 1e6,
          args: l.slice(l.indexOf(" ") + 1),
        }));
    },
    pids: readPids,
    async cleanup() {
      // Only the sleeps our scripts started, if still alive.
      for (const pid of await readPids()) {
        try {
          const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
          if (cmd.startsWith("sleep")) Deno.kill(pid, "SIGKILL");
        } catch {
          // gone
        }
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

function alive(pid: number): boolean {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/stat`).split(" ")[2] !== "Z";
  } catch {
    return false;
  }
}

async function uploadAndComplete(
  server: TestServer,
  source: Uint8Array<ArrayBuffer>,
): Promise<string> {
  const id = await createSession(server.url);
  const res = await sendChunk(server.url, id, source, 0);
  assert.equal(res.status, 200);
  await res.body?.cancel();
  const done = await fetch(`${server.url}/complete_job/${id}/`, {
    method: "POST",
  });
  assert.equal(done.status, 200);
  await done.body?.cancel();
  return id;
}

async function job(server: TestServer, id: string): Promise<Job> {
  return (await server.service.ctx.kv.get<Job>(jobKey(id))).value!;
}

async function assertNothingListed(server: TestServer, id: string) {
  const res = await fetch(`${server.url}/video/${id}/`);
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).completed_videos, []);
  const media = await fetch(`${server.url}/media/${id}/${id}.mp4`);
  assert.equal(media.status, 404);
  assert.equal(media.headers.get("content-type"), "application/json");
  await media.body?.cancel();
}

async function assertSameVideo(
  server: TestServer,
  id: string,
  srcPath: string,
  tmp: string,
) {
  const res = await fetch(`${server.url}/media/${id}/${id}.webm`);
  assert.equal(res.status, 200);
  const out = join(tmp, `${id}.webm`);
  await Deno.writeFile(out, new Uint8Array(await res.arrayBuffer()));
  assert.deepEqual(
    await videoPacketHashes(out),
    await videoPacketHashes(srcPath),
  );
}

async function waitUntil(check: () => Promise<boolean>, ms: number) {
  const deadline = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await delay(50);
  }
}

Deno.test({
  name:
    "ffmpeg fault: an ffmpeg that exits 1 fails the job with its message after JOB_MAX_ATTEMPTS attempts with backoff; retry_job requeues it, and it completes with the real ffmpeg after a restart",
  ignore: ffmpegMissing,
  async fn() {
    const real = realFfmpeg();
    const fakes = await writeFakes(real);
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-ff-fail-" });
    let server: TestServer | undefined;
    try {
      const srcPath = join(fakes.dir, "src.webm");
      const source = await makeRecording(srcPath, { seconds: 2 });
      server = await startTestServer({
        DATA_DIR: dataDir,
        FFMPEG_PATH: fakes.fail,
        JOB_MAX_ATTEMPTS: "2",
        JOB_BACKOFF_MS: "100",
      });
      const id = await uploadAndComplete(server, source);
      const failed = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        30_000,
      );
      assert.equal(failed.status, "failed");
      assert.match(String(failed.error), /after 2 attempts/);
      assert.match(String(failed.error), /ffmpeg failed \(exit 1\)/);
      assert.match(String(failed.error), /simulated encoder crash/);
      assert.doesNotMatch(
        String(failed.error),
        /\/tmp\/|tapedeck-/,
        "no server paths",
      );
      const j = await job(server, id);
      assert.equal(j.state, "failed");
      assert.equal(j.attempts, 2);
      const runs = await fakes.runs();
      assert.equal(runs.length, 2, "one ffmpeg run per attempt");
      const gap = runs[1].at - runs[0].at;
      assert.ok(
        gap >= 100,
        `the retry waited ${gap.toFixed(0)} ms (JOB_BACKOFF_MS=100)`,
      );
      await assertNothingListed(server, id);

      // The explicit requeue: a fresh set of attempts (still failing here).
      const retry = await fetch(`${server.url}/retry_job/${id}/`, {
        method: "POST",
      });
      assert.equal(retry.status, 200);
      assert.equal(retry.headers.get("content-type"), "application/json");
      const rb = await retry.json();
      assert.equal(rb.status, "processing");
      assert.match(rb.message, /queued again/);
      const again = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        30_000,
      );
      assert.equal(again.status, "failed");
      assert.equal((await job(server, id)).attempts, 2);
      assert.equal((await fakes.runs()).length, 4);
      await server.close();
      server = undefined;

      server = await startTestServer({ DATA_DIR: dataDir, FFMPEG_PATH: real });
      const before = await (await fetch(`${server.url}/check_status/${id}/`))
        .json();
      assert.equal(
        before.status,
        "failed",
        "a failed job stays failed over a restart",
      );
      const requeue = await fetch(`${server.url}/retry_job/${id}/`, {
        method: "POST",
      });
      assert.equal(requeue.status, 200);
      await requeue.body?.cancel();
      const st = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        30_000,
      );
      assert.equal(st.status, "complete", JSON.stringify(st));
      assert.equal(st.error, undefined);
      assert.equal((await job(server, id)).state, "done");
      await assertSameVideo(server, id, srcPath, fakes.dir);
      console.log(
        `ffmpeg-fault figures: exit 1: failed after 2 attempts (retry ${
          gap.toFixed(0)
        } ms later) with "${failed.error}"; retry_job: 2 more attempts; with the real ffmpeg after restart + retry_job: complete`,
      );
    } finally {
      await server?.close();
      await fakes.cleanup();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "ffmpeg fault: a missing ffmpeg fails the job with a reason about ffmpeg (not the recording), and it completes once ffmpeg is there",
  ignore: ffmpegMissing,
  async fn() {
    const real = realFfmpeg();
    const fakes = await writeFakes(real);
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-ff-missing-" });
    let server: TestServer | undefined;
    try {
      const srcPath = join(fakes.dir, "src.webm");
      const source = await makeRecording(srcPath, { seconds: 2 });
      server = await startTestServer({
        DATA_DIR: dataDir,
        FFMPEG_PATH: fakes.missing,
        JOB_MAX_ATTEMPTS: "2",
        JOB_BACKOFF_MS: "100",
      });
      // Uploads work without ffmpeg.
      const id = await uploadAndComplete(server, source);
      const failed = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        30_000,
      );
      assert.equal(failed.status, "failed");
      assert.match(String(failed.error), /after 2 attempts/);
      assert.match(String(failed.error), /ffmpeg/);
      await assertNothingListed(server, id);
      await server.close();
      server = undefined;

      server = await startTestServer({ DATA_DIR: dataDir, FFMPEG_PATH: real });
      const requeue = await fetch(`${server.url}/retry_job/${id}/`, {
        method: "POST",
      });
      assert.equal(requeue.status, 200);
      await requeue.body?.cancel();
      const st = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        30_000,
      );
      assert.equal(st.status, "complete", JSON.stringify(st));
      await assertSameVideo(server, id, srcPath, fakes.dir);
      console.log(`ffmpeg-fault figures: missing ffmpeg: "${failed.error}"`);
      // Telling the user their recording is unreadable would be wrong: it is fine.
      assert.doesNotMatch(
        String(failed.error),
        /not a readable recording|uploaded data/,
        "a missing ffmpeg is blamed on the recording",
      );
    } finally {
      await server?.close();
      await fakes.cleanup();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "ffmpeg fault: with JOB_CONCURRENCY=2 a hung ffmpeg does not keep a second recording from completing",
  ignore: ffmpegMissing,
  async fn() {
    const real = realFfmpeg();
    const fakes = await writeFakes(real);
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-ff-hang2-" });
    let server: TestServer | undefined;
    try {
      const srcPath = join(fakes.dir, "src.webm");
      const source = await makeRecording(srcPath, { seconds: 2 });
      server = await startTestServer({
        DATA_DIR: dataDir,
        FFMPEG_PATH: fakes.hang,
        FFMPEG_TIMEOUT_MS: "60000",
        JOB_CONCURRENCY: "2",
      });
      const hung = await createSession(server.url);
      await fakes.hangOn(hung);
      const res = await sendChunk(server.url, hung, source, 0);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      await (await fetch(`${server.url}/complete_job/${hung}/`, {
        method: "POST",
      }))
        .body?.cancel();
      await waitUntil(async () => (await fakes.pids()).length > 0, 20_000);
      const t0 = Date.now();
      const other = await uploadAndComplete(server, source);
      const st = await waitForStatus(
        server.url,
        other,
        ["complete", "failed"],
        30_000,
      );
      assert.equal(st.status, "complete", JSON.stringify(st));
      const ms = Date.now() - t0;
      const stuck = await (await fetch(`${server.url}/check_status/${hung}/`))
        .json();
      assert.equal(stuck.status, "processing", "the hung one is still running");
      await assertSameVideo(server, other, srcPath, fakes.dir);
      await server.close();
      server = undefined;
      for (const pid of await fakes.pids()) {
        assert.ok(!alive(pid), "stopping the server ended the hung ffmpeg");
      }
      console.log(
        `ffmpeg-fault figures: concurrency 2: a second recording completed in ${ms} ms next to a hung ffmpeg`,
      );
    } finally {
      await server?.close();
      await fakes.cleanup();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});

async function hungWithConcurrencyOne(script: "hang" | "hangWrapper") {
  const real = realFfmpeg();
  const fakes = await writeFakes(real);
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-ff-hang1-" });
  let server: TestServer | undefined;
  try {
    const srcPath = join(fakes.dir, "src.webm");
    const source = await makeRecording(srcPath, { seconds: 2 });
    server = await startTestServer({
      DATA_DIR: dataDir,
      FFMPEG_PATH: fakes[script],
      FFMPEG_TIMEOUT_MS: "2000",
      FFMPEG_TIMEOUT_PER_SECOND_MS: "0",
      JOB_CONCURRENCY: "1",
      JOB_MAX_ATTEMPTS: "2",
      JOB_BACKOFF_MS: "100",
    });
    const hung = await createSession(server.url);
    await fakes.hangOn(hung);
    const res = await sendChunk(server.url, hung, source, 0);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    await (await fetch(`${server.url}/complete_job/${hung}/`, {
      method: "POST",
    }))
      .body?.cancel();
    await waitUntil(async () => (await fakes.pids()).length > 0, 20_000);
    const t0 = Date.now();
    // The only worker slot is hung: this one waits for the timeout to free it.
    const other = await uploadAndComplete(server, source);
    const st = await waitForStatus(
      server.url,
      other,
      ["complete", "failed"],
      20_000,
    );
    assert.equal(st.status, "complete", JSON.stringify(st));
    const otherMs = Date.now() - t0;
    const failed = await waitForStatus(
      server.url,
      hung,
      ["complete", "failed"],
      20_000,
    );
    const hungMs = Date.now() - t0;
    assert.equal(failed.status, "failed");
    assert.match(String(failed.error), /after 2 attempts/);
    assert.match(String(failed.error), /ran longer than 2000 ms/);
    assert.equal((await job(server, hung)).attempts, 2);
    for (const pid of await fakes.pids()) {
      assert.ok(!alive(pid), "the timeout killed the hung process");
    }
    await assertSameVideo(server, other, srcPath, fakes.dir);
    return { otherMs, hungMs, error: String(failed.error) };
  } finally {
    // A hung child holding the pipes would keep the server from closing.
    await fakes.cleanup();
    await server?.close();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

Deno.test({
  name:
    "ffmpeg fault: with JOB_CONCURRENCY=1 FFMPEG_TIMEOUT_MS frees the worker from a hung ffmpeg, which ends failed after its attempts",
  ignore: ffmpegMissing,
  async fn() {
    const r = await hungWithConcurrencyOne("hang");
    console.log(
      `ffmpeg-fault figures: concurrency 1, hung ffmpeg, FFMPEG_TIMEOUT_MS=2000: the queued recording completed after ${r.otherMs} ms; the hung one failed after ${r.hungMs} ms with "${r.error}"`,
    );
  },
});

Deno.test({
  name:
    "ffmpeg fault: FFMPEG_TIMEOUT_MS also frees the worker when a hung ffmpeg wrapper leaves a child holding its output open",
  ignore: ffmpegMissing,
  async fn() {
    const r = await hungWithConcurrencyOne("hangWrapper");
    console.log(
      `ffmpeg-fault figures: concurrency 1, hung ffmpeg wrapper: the queued recording completed after ${r.otherMs} ms; the hung one failed after ${r.hungMs} ms`,
    );
  },
});
