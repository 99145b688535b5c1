/**
 * Sweeps run on every instance at once (each runs the minute sweep): two
 * instances on one KV expiring the same idle recordings, removing the same
 * partial uploads and applying retention to the same finished recordings
 * act once per recording between them, and neither logs a failure. The
 * instances share a PostgreSQL KV, as instances of a cluster do.
 */

import assert from "node:assert/strict";
import type { AppContext } from "../lib/core/context.ts";
import type { LogFields } from "../lib/core/log.ts";
import { type Job, jobKey, type Recording } from "../lib/kv/keys.ts";
import {
  applyRetention,
  expireIdleRecordings,
} from "../lib/recordings/maintenance.ts";
import { createRecording } from "../lib/recordings/sessions.ts";
import { updateRecording } from "../lib/recordings/transitions.ts";
import {
  createSession,
  mediaBytes,
  sendChunk,
  startTestServer,
  type TestServer,
} from "./helpers.ts";
import { onPostgres } from "./support/backend.ts";
import { needsPostgres, startPostgres } from "./support/postgres.ts";

const DAY_MS = 86_400_000;

/** Collects a context's log lines (what the level would hide too). */
function spyLog(ctx: AppContext): { errors: string[]; events: string[] } {
  const seen = { errors: [] as string[], events: [] as string[] };
  const { error, info } = ctx.log;
  ctx.log.error = (message: string, fields?: LogFields) => {
    seen.errors.push(`${message} ${JSON.stringify(fields ?? {})}`);
    error.call(ctx.log, message, fields);
  };
  ctx.log.info = (message: string, fields?: LogFields) => {
    seen.events.push(`${message} ${fields?.recording ?? ""}`);
    info.call(ctx.log, message, fields);
  };
  return seen;
}

/**
 * Two instances on one PostgreSQL KV (this process's backend, or a server
 * of the test's own): a KV file takes one committer at a time, and sweeps
 * race only where instances share a KV.
 */
async function withTwoInstances(
  env: Record<string, string>,
  fn: (a: TestServer, b: TestServer) => Promise<void>,
): Promise<void> {
  const pg = onPostgres() ? undefined : await startPostgres({ fast: true });
  const kv: Record<string, string> = pg ? { KV_PATH: pg.url } : {};
  try {
    const a = await startTestServer({ SHARED_KV: "true", ...kv, ...env });
    try {
      const b = await startTestServer({
        DATA_DIR: a.dataDir,
        SHARED_KV: "true",
        ...kv,
        ...env,
      });
      try {
        await fn(a, b);
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
    }
  } finally {
    await pg?.stop();
  }
}

function assertOncePerId(
  lists: string[][],
  expected: string[],
  what: string,
): void {
  const all = lists.flat();
  assert.equal(new Set(all).size, all.length, `${what}: no id twice: ${all}`);
  assert.deepEqual([...all].sort(), [...expected].sort(), what);
}

Deno.test({
  name:
    "sweep race: two instances expiring the same idle recordings at once finalize or remove each exactly once, without errors",
  ...needsPostgres(),
  fn: () =>
    withTwoInstances({
      RECORDING_IDLE_TIMEOUT_S: "1",
      RUN_WORKER: "false",
    }, async (a, b) => {
      const logA = spyLog(a.service.ctx);
      const logB = spyLog(b.service.ctx);
      const withData: string[] = [];
      const empty: string[] = [];
      for (let i = 0; i < 12; i++) {
        const id = await createSession(i % 2 ? a.url : b.url);
        if (i % 3 === 0) {
          empty.push(id);
          continue;
        }
        const res = await sendChunk(a.url, id, mediaBytes(4000, i), 0);
        assert.equal(res.status, 200, await res.text());
        withData.push(id);
      }
      const partials: string[] = [];
      for (let i = 0; i < 4; i++) {
        const { recording } = await createRecording(a.service.ctx, {
          partial: true,
          protocol: "tus",
        });
        partials.push(recording.id);
      }
      const later = Date.now() + 5_000;
      const [ra, rb] = await Promise.all([
        expireIdleRecordings(a.service.ctx, later),
        expireIdleRecordings(b.service.ctx, later),
      ]);
      assertOncePerId(
        [ra.finalized, rb.finalized],
        withData,
        "finalized",
      );
      assertOncePerId(
        [ra.removed, rb.removed],
        [...empty, ...partials],
        "removed",
      );
      assert.deepEqual([...logA.errors, ...logB.errors], [], "nothing failed");
      // One log line per recording: finalized, or removed as expired.
      const expired = [...logA.events, ...logB.events]
        .filter((e) => e.startsWith("recording.expired"))
        .map((e) => e.split(" ")[1]);
      assertOncePerId(
        [expired],
        [...withData, ...empty, ...partials],
        "recording.expired lines",
      );
      const kv = a.service.ctx.kv;
      for (const id of withData) {
        const rec = (await kv.get<Recording>(["recording", id])).value!;
        assert.equal(rec.status, "processing");
        assert.equal(rec.expired, true);
        const job = (await kv.get<Job>(jobKey(id))).value!;
        assert.equal(job.state, "queued");
        assert.equal(job.attempts, 0);
      }
      for (const id of [...empty, ...partials]) {
        assert.equal((await kv.get(["recording", id])).versionstamp, null);
      }
      // A sweep finds nothing left to do.
      const again = await expireIdleRecordings(b.service.ctx, later);
      assert.deepEqual(again, { finalized: [], removed: [] });
    }),
});

Deno.test({
  name:
    "sweep race: two instances applying retention at once delete each old recording exactly once and keep the recent ones",
  ...needsPostgres(),
  fn: () =>
    withTwoInstances({
      RETENTION_DAYS: "2",
      RUN_WORKER: "false",
    }, async (a, b) => {
      const logA = spyLog(a.service.ctx);
      const logB = spyLog(b.service.ctx);
      const ctx = a.service.ctx;
      const old: string[] = [];
      const recent: string[] = [];
      for (let i = 0; i < 10; i++) {
        const id = await createSession(a.url);
        const res = await sendChunk(b.url, id, mediaBytes(2000, i), 0);
        assert.equal(res.status, 200, await res.text());
        const finishedAt = Date.now() - (i < 7 ? 3 : 1) * DAY_MS;
        await updateRecording(ctx, id, (rec) => ({
          next: {
            ...rec!,
            status: i % 2 ? "failed" : "complete",
            finishedAt,
            updatedAt: Date.now(),
          },
        }));
        (i < 7 ? old : recent).push(id);
      }
      const [ra, rb] = await Promise.all([
        applyRetention(a.service.ctx),
        applyRetention(b.service.ctx),
      ]);
      assertOncePerId([ra, rb], old, "deleted");
      assert.deepEqual([...logA.errors, ...logB.errors], [], "nothing failed");
      for (const id of old) {
        const res = await fetch(`${b.url}/check_status/${id}/`);
        assert.equal(res.status, 404);
        await res.body?.cancel();
      }
      for (const id of recent) {
        const res = await fetch(`${a.url}/check_status/${id}/`);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
    }),
});
