import assert from "node:assert/strict";
import {
  createSession,
  makeRecording,
  missingTool,
  sendChunk,
  startTestServer,
  waitForStatus,
} from "./helpers.ts";
import { backoffMs } from "../lib/jobs/worker.ts";
import { jobKey } from "../lib/kv/keys.ts";
import type { Job } from "../lib/kv/keys.ts";

const ffmpegMissing = await missingTool("ffmpeg");

Deno.test({
  name:
    "jobs: a corrupt recording ends in failed with a reason after bounded attempts while others complete",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer({
      JOB_MAX_ATTEMPTS: "3",
      JOB_BACKOFF_MS: "50",
    });
    try {
      const bad = await createSession(server.url);
      const noise = new Uint8Array(200_000);
      for (let i = 0; i < noise.length; i += 65536) {
        crypto.getRandomValues(noise.subarray(i, i + 65536));
      }
      noise.set([0x1a, 0x45, 0xdf, 0xa3]);
      for (let i = 0; i < 4; i++) {
        const res = await sendChunk(
          server.url,
          bad,
          noise.slice(i * 50_000, (i + 1) * 50_000),
          i,
        );
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      await (await fetch(`${server.url}/complete_job/${bad}/`, {
        method: "POST",
      })).body?.cancel();

      const good = await createSession(server.url);
      const tmp = await Deno.makeTempFile({ suffix: ".webm" });
      const bytes = await makeRecording(tmp, { seconds: 1 });
      await Deno.remove(tmp);
      const res = await sendChunk(server.url, good, bytes);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      await (await fetch(`${server.url}/complete_job/${good}/`, {
        method: "POST",
      })).body?.cancel();

      const failed = await waitForStatus(
        server.url,
        bad,
        ["failed", "complete"],
        60_000,
      );
      assert.equal(failed.status, "failed");
      // Unreadable input fails at once; an ffmpeg failure is retried.
      assert.match(String(failed.error), /after (1 attempt|3 attempts)/);
      assert.match(
        String(failed.error),
        /not a readable recording|no audio or video|ffmpeg failed/,
      );
      assert.doesNotMatch(
        String(failed.error),
        /\/tmp|tapedeck-test/,
        "no server paths",
      );

      const job = await server.service.ctx.kv.get<Job>(jobKey(bad));
      assert.equal(job.value?.state, "failed");
      assert.ok([1, 3].includes(job.value?.attempts ?? 0));

      const ok = await waitForStatus(server.url, good);
      assert.equal(ok.status, "complete");
      const files = await (await fetch(`${server.url}/video/${bad}/`)).json();
      assert.deepEqual(files.completed_videos, []);

      const again = await fetch(`${server.url}/complete_job/${bad}/`, {
        method: "POST",
      });
      assert.equal(again.status, 200);
      assert.match((await again.json()).message, /failed/);
    } finally {
      await server.close();
    }
  },
});

Deno.test("jobs: backoff doubles per attempt and is capped", () => {
  assert.equal(backoffMs(1000, 1), 1000);
  assert.equal(backoffMs(1000, 2), 2000);
  assert.equal(backoffMs(1000, 3), 4000);
  assert.equal(backoffMs(1000, 30), 10 * 60_000);
});

Deno.test({
  name: "jobs: progress is reported between 0 and 1 while processing",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    try {
      const tmp = await Deno.makeTempFile({ suffix: ".webm" });
      const bytes = await makeRecording(tmp, { codec: "vp8", seconds: 12 });
      await Deno.remove(tmp);
      const id = await createSession(server.url);
      const res = await sendChunk(server.url, id, bytes);
      await res.body?.cancel();
      const seen: number[] = [];
      const unsubscribe = server.service.ctx.live.subscribe((rec) => {
        if (rec.id === id && rec.status === "processing") {
          seen.push(rec.progress ?? 0);
        }
      });
      await (await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      }))
        .body?.cancel();
      const polled: number[] = [];
      let st: Record<string, unknown> = {};
      while (st.status !== "complete" && st.status !== "failed") {
        st = await (await fetch(`${server.url}/check_status/${id}/`)).json();
        if (st.status === "processing") polled.push(Number(st.progress));
        await new Promise((r) => setTimeout(r, 30));
      }
      unsubscribe();
      assert.equal(st.status, "complete");
      assert.ok(seen.length >= 3, `progress updates: ${seen.join(",")}`);
      assert.ok(seen.every((p) => p >= 0 && p < 1));
      assert.ok(
        seen.some((p) => p > 0.2 && p < 0.95),
        `mid-way progress: ${seen.join(",")}`,
      );
      for (let i = 1; i < seen.length; i++) assert.ok(seen[i] >= seen[i - 1]);
      assert.ok(polled.every((p) => p >= 0 && p <= 1));
    } finally {
      await server.close();
    }
  },
});
