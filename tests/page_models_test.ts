/**
 * The plain classes behind the dashboard and a recording's page, without a
 * browser: the live list and the live recording against a real server's
 * `/ws`, the server clock, and the Finish and Retry buttons' state.
 */

import assert from "node:assert/strict";
import { LiveRecording } from "../client/live_recording.ts";
import { LiveRecordingList } from "../client/live_recording_list.ts";
import { RecordingActionController } from "../client/recording_actions.ts";
import { ServerClock } from "../client/server_clock.ts";
import type { RecordingView } from "../common/recording_view.ts";
import { eventually } from "./browser_helpers.ts";
import {
  createSession,
  mediaBytes,
  sendChunk,
  startTestServer,
} from "./helpers.ts";

Deno.test("page models: the dashboard's list follows /ws from its snapshot, adds new recordings and updates rows, until closed", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const before = await createSession(server.url);
    const list = new LiveRecordingList(
      { recordings: [], limit: 10, cursor: null, now: 0 },
      () => `${server.url}/`,
    );
    assert.equal(list.live.value, "static");
    assert.equal(list.ready.value, false);
    const close = list.open();
    try {
      assert.equal(list.ready.value, true);
      await eventually(() => list.live.value === "live", 5_000, "live");
      assert.deepEqual(list.rows.value.map((r) => r.id), [before]);
      assert.ok(
        Math.abs(list.clock.now.value - Date.now()) < 5_000,
        "the snapshot set the clock",
      );

      const after = await createSession(server.url);
      await eventually(
        () => list.rows.value.length === 2,
        5_000,
        "the new recording listed",
      );
      assert.equal(list.rows.value[0].id, after, "newest first");
      const res = await sendChunk(server.url, before, mediaBytes(2048), 0);
      await res.body?.cancel();
      await eventually(
        () =>
          list.rows.value.find((r) => r.id === before)?.chunksReceived === 1,
        5_000,
        "the row updated",
      );
    } finally {
      close();
    }
    await eventually(() => list.live.value === "closed", 5_000, "closed");
  } finally {
    await server.close();
  }
});

Deno.test("page models: a recording's page follows /ws/<id> and ignores other recordings", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const id = await createSession(server.url);
    const other = await createSession(server.url);
    const rendered = {
      id,
      status: "recording",
      createdAt: 0,
      updatedAt: 0,
      bytesReceived: 0,
      chunksReceived: 0,
      files: [],
    } satisfies RecordingView;
    const live = new LiveRecording(
      rendered,
      0,
      () => `${server.url}/videos/${id}`,
    );
    assert.equal(live.recording.value, rendered);
    const close = live.open();
    try {
      await eventually(() => live.live.value === "live", 5_000, "live");
      assert.ok(live.recording.value.createdAt > 0, "the snapshot replaced it");
      for (const target of [other, id]) {
        const res = await sendChunk(server.url, target, mediaBytes(1024), 0);
        await res.body?.cancel();
      }
      await eventually(
        () => live.recording.value.chunksReceived === 1,
        5_000,
        "its chunk counted",
      );
      assert.equal(live.recording.value.id, id);
    } finally {
      close();
    }
    await eventually(() => live.live.value === "closed", 5_000, "closed");
  } finally {
    await server.close();
  }
});

Deno.test("page models: the server clock starts at the page's time, ticks, and is set by snapshots", async () => {
  const clock = new ServerClock(1_000_000);
  assert.equal(clock.now.value, 1_000_000);
  const stop = clock.start();
  try {
    await new Promise((r) => setTimeout(r, 1_100));
    assert.ok(
      clock.now.value >= 1_000_900 && clock.now.value < 1_003_000,
      `ticked to ${clock.now.value}`,
    );
    clock.sync(5_000_000);
    assert.equal(clock.now.value, 5_000_000);
  } finally {
    stop();
  }
});

Deno.test("page models: Finish asks first for a recording with a recent chunk; the buttons' state follows the answer", async () => {
  const asked: string[] = [];
  let answer: () => Promise<string> = () =>
    Promise.resolve("Processing started");
  const actions = new RecordingActionController((action, id) => {
    asked.push(`${action} ${id}`);
    return answer();
  });
  const now = 100_000;
  const rec = { id: "a", lastChunkAt: now - 5_000 };

  await actions.run(rec, "finish", now);
  assert.deepEqual(actions.states.value.a, { confirm: true });
  assert.deepEqual(asked, []);
  await actions.run(rec, "cancel", now);
  assert.deepEqual(actions.states.value.a, {});

  let release!: () => void;
  answer = () =>
    new Promise((resolve) => release = () => resolve("Processing started"));
  const running = actions.run(rec, "confirm-finish", now);
  assert.deepEqual(actions.states.value.a, { pending: "finish" });
  release();
  await running;
  assert.deepEqual(actions.states.value.a, { message: "Processing started" });

  answer = () => Promise.reject(new Error("The server said no."));
  await actions.run({ id: "b" }, "retry", now);
  assert.deepEqual(actions.states.value.b, { error: "The server said no." });
  await actions.run({ id: "c", lastChunkAt: now - 60_000 }, "finish", now);
  assert.deepEqual(asked, ["finish a", "retry b", "finish c"]);
});
