/**
 * The real JobWorker on a real KV file with fake runners (no ffmpeg):
 * retries with backoff, bounded attempts, a lease that lapses when its
 * worker dies, and bounded concurrency.
 */

import assert from "node:assert/strict";
import type { AppContext } from "../lib/core/context.ts";
import { backoffMs, type JobRunner, JobWorker } from "../lib/jobs/worker.ts";
import {
  type Job,
  jobKey,
  type Recording,
  recordingKey,
} from "../lib/kv/keys.ts";
import type { ProcessingOutput } from "../lib/processing/pipeline.ts";
import {
  createSession,
  mediaBytes,
  sendChunk,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The files a fake runner says it made of recording `id`. */
function fakeFiles(id: string): string[] {
  return [`${id}.mp4`, `${id}.webm`];
}

/** What a fake runner returns: files it did not make, of what it read. */
async function fakeOutput(
  ctx: AppContext,
  id: string,
): Promise<ProcessingOutput> {
  const rec = await recording(ctx, id);
  return {
    files: fakeFiles(id),
    poster: `${id}.jpg`,
    media: { container: "webm", durationS: 2.5, sizes: {} },
    durationS: 2.5,
    input: { bytes: rec.bytesReceived, chunks: rec.chunksReceived },
  };
}

/** A recording with one chunk, completed: its job is queued. */
async function completedRecording(server: TestServer): Promise<string> {
  const id = await createSession(server.url);
  const res = await sendChunk(server.url, id, mediaBytes(4096), 0);
  assert.equal(res.status, 200, await res.text());
  const done = await fetch(`${server.url}/complete_job/${id}/`, {
    method: "POST",
  });
  assert.equal(done.status, 200, await done.text());
  return id;
}

async function job(ctx: AppContext, id: string): Promise<Job> {
  const entry = await ctx.kv.get<Job>(jobKey(id));
  assert.ok(entry.value, `job ${id} exists`);
  return entry.value;
}

async function recording(ctx: AppContext, id: string): Promise<Recording> {
  const entry = await ctx.kv.get<Recording>(recordingKey(id));
  assert.ok(entry.value, `recording ${id} exists`);
  return entry.value;
}

/**
 * Runs `body` against a server without its own worker (RUN_WORKER=false),
 * stopping every worker it started before the server closes.
 */
async function withServer(
  env: Record<string, string>,
  body: (
    server: TestServer,
    ctx: AppContext,
    startWorker: (run: JobRunner, ctx?: AppContext) => Promise<JobWorker>,
  ) => Promise<void>,
): Promise<void> {
  const server = await startTestServer({
    RUN_WORKER: "false",
    COMPLETE_GRACE_MS: "0",
    ...env,
  });
  const workers: JobWorker[] = [];
  const startWorker = async (run: JobRunner, ctx = server.service.ctx) => {
    const worker = new JobWorker(ctx, server.service.tools, run);
    workers.push(worker);
    await worker.start();
    return worker;
  };
  try {
    await body(server, server.service.ctx, startWorker);
  } finally {
    for (const worker of workers) await worker.stop();
    await server.close();
  }
}

Deno.test("job worker: a runner that fails twice is retried after the backoff and its third attempt completes the recording with its files", async () => {
  const backoff = 300;
  await withServer(
    { JOB_MAX_ATTEMPTS: "3", JOB_BACKOFF_MS: String(backoff) },
    async (server, ctx, startWorker) => {
      const id = await completedRecording(server);
      const stages: string[] = [];
      const unsubscribe = ctx.live.subscribe((rec) => {
        if (rec.id === id && rec.stage) stages.push(rec.stage);
      });
      const attempts: number[] = [];
      const worker = await startWorker(async (runCtx, runId, options) => {
        assert.equal(runCtx, ctx);
        assert.equal(runId, id);
        attempts.push(performance.now());
        if (attempts.length < 3) throw new Error(`flaky ${attempts.length}`);
        options.onProgress(0.5, "fake step");
        await delay(400); // lets the progress write land before the result
        assert.equal(options.signal.aborted, false);
        return await fakeOutput(runCtx, id);
      });
      try {
        const status = await waitForStatus(server.url, id, [
          "complete",
          "failed",
        ]);
        assert.equal(status.status, "complete", JSON.stringify(status));
        assert.equal(status.duration_s, 2.5);
        assert.equal(status.error, undefined);
      } finally {
        unsubscribe();
      }
      assert.equal(attempts.length, 3);
      for (
        const [i, gap] of [1, 2].map((n) => [n, attempts[n] - attempts[n - 1]])
      ) {
        const wanted = backoffMs(backoff, i);
        assert.ok(
          gap >= wanted - 20 && gap < wanted + 2_000,
          `attempt ${i + 1} came ${
            Math.round(gap)
          } ms after attempt ${i}, backoff ${wanted} ms`,
        );
      }
      assert.ok(
        stages.some((s) => s === "waiting to retry (flaky 1)"),
        `stages: ${stages.join(" | ")}`,
      );
      assert.ok(stages.includes("retrying"), `stages: ${stages.join(" | ")}`);
      assert.ok(stages.includes("fake step"), `stages: ${stages.join(" | ")}`);

      const done = await job(ctx, id);
      assert.equal(done.state, "done");
      assert.equal(done.attempts, 3);
      assert.equal(done.workerId, worker.id);
      assert.equal(done.lastError, "flaky 2");
      const rec = await recording(ctx, id);
      assert.equal(rec.status, "complete");
      assert.deepEqual(rec.files, fakeFiles(id));
      assert.equal(rec.poster, `${id}.jpg`);
      assert.equal(rec.progress, 1);
      assert.equal(rec.error, undefined);
      const video = await (await fetch(`${server.url}/video/${id}/`)).json();
      assert.deepEqual(video.completed_videos, fakeFiles(id));
      assert.equal(video.poster, `/media/${id}/${id}.jpg`);
    },
  );
});

Deno.test("job worker: a runner that always fails ends the job failed after JOB_MAX_ATTEMPTS with the last reason in the recording's error", async () => {
  await withServer(
    { JOB_MAX_ATTEMPTS: "3", JOB_BACKOFF_MS: "50" },
    async (server, ctx, startWorker) => {
      const id = await completedRecording(server);
      let runs = 0;
      await startWorker(() => {
        runs++;
        return Promise.reject(new Error(`broken run ${runs}`));
      });
      const status = await waitForStatus(server.url, id, [
        "complete",
        "failed",
      ]);
      assert.equal(status.status, "failed");
      assert.equal(
        status.error,
        "Processing failed after 3 attempts: broken run 3",
      );
      await delay(500);
      assert.equal(runs, 3, "no attempt after the last one");
      const failed = await job(ctx, id);
      assert.equal(failed.state, "failed");
      assert.equal(failed.attempts, 3);
      assert.equal(failed.lastError, "broken run 3");
      const rec = await recording(ctx, id);
      assert.deepEqual(rec.files, []);
      assert.equal(rec.finishedAt !== undefined, true);
    },
  );
});

Deno.test("job worker: a running job's lease is renewed, and once its worker dies another worker takes the job over after JOB_LEASE_MS", async () => {
  const lease = 1_000;
  await withServer(
    { JOB_LEASE_MS: String(lease), JOB_MAX_ATTEMPTS: "3" },
    async (server, ctx, startWorker) => {
      const id = await completedRecording(server);
      // Worker A has its own handle on the KV file: closing it is A's
      // process dying (its renewals fail, its run never ends by itself).
      const kvA = await Deno.openKv(ctx.config.kvPath);
      let claimed!: () => void;
      const claimedByA = new Promise<void>((r) => claimed = r);
      const workerA = await startWorker((_ctx, _id, { signal }) => {
        claimed();
        return new Promise((_, reject) =>
          signal.addEventListener("abort", () => reject(signal.reason), {
            once: true,
          })
        );
      }, { ...ctx, kv: kvA });
      try {
        await claimedByA;
        const claim = await job(ctx, id);
        assert.equal(claim.workerId, workerA.id);
        assert.equal(claim.state, "running");

        // B shares the KV (so it does not take running jobs back at start)
        // and must leave A's job alone while A renews the lease.
        const bRuns: number[] = [];
        const workerB = await startWorker((ctxB) => {
          bRuns.push(Date.now());
          return fakeOutput(ctxB, id);
        }, { ...ctx, config: { ...ctx.config, sharedKv: true } });
        await delay(lease * 1.6);
        assert.deepEqual(bRuns, [], "B waited while A held the lease");
        const renewed = await job(ctx, id);
        assert.equal(renewed.workerId, workerA.id);
        assert.ok(
          renewed.leaseUntil > claim.leaseUntil + lease / 2,
          `lease renewed: ${claim.leaseUntil} -> ${renewed.leaseUntil}`,
        );

        kvA.close();
        const diedAt = Date.now();
        const status = await waitForStatus(server.url, id, [
          "complete",
          "failed",
        ], 15_000);
        assert.equal(status.status, "complete", JSON.stringify(status));
        assert.equal(bRuns.length, 1);
        const waited = bRuns[0] - diedAt;
        // The last renewal was at most a third of the lease before the death.
        assert.ok(
          waited >= lease / 2 && waited < lease + 2_000,
          `B took over ${waited} ms after A died (lease ${lease} ms)`,
        );
        const done = await job(ctx, id);
        assert.equal(done.state, "done");
        assert.equal(done.workerId, workerB.id);
        assert.equal(done.attempts, 2);
        assert.deepEqual(
          (await recording(ctx, id)).files,
          fakeFiles(id),
        );
      } finally {
        await workerA.stop();
        try {
          kvA.close();
        } catch {
          // already closed
        }
      }
    },
  );
});

Deno.test("job worker: with JOB_CONCURRENCY=2 at most two runs are under way at once and every recording completes", async () => {
  await withServer(
    { JOB_CONCURRENCY: "2" },
    async (server, ctx, startWorker) => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await completedRecording(server));
      let running = 0;
      let most = 0;
      const seen: string[] = [];
      await startWorker(async (runCtx, id) => {
        running++;
        most = Math.max(most, running);
        seen.push(id);
        await delay(200);
        running--;
        return await fakeOutput(runCtx, id);
      });
      for (const id of ids) {
        const status = await waitForStatus(server.url, id, [
          "complete",
          "failed",
        ]);
        assert.equal(status.status, "complete", JSON.stringify(status));
      }
      assert.equal(most, 2, "two runs overlapped, never three");
      assert.deepEqual([...seen].sort(), [...ids].sort(), "each ran once");
      for (const id of ids) assert.equal((await job(ctx, id)).attempts, 1);
    },
  );
});
