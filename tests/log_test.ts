/**
 * Issue 11: logs a person can read. A server run as its own process writes
 * one line per request answered 4xx/5xx (method, path, status, recording,
 * error sentence, duration in ms) and one per recording state change
 * (created, completed, processing, complete, failed with its reason,
 * expired), as text (default) or JSON (LOG_FORMAT=json), filtered by
 * LOG_LEVEL (at debug every request, successful chunks included).
 */

import assert from "node:assert/strict";
import {
  type ChildServer,
  createSession,
  haveFfmpeg,
  makeRecording,
  mediaBytes,
  sendChunk,
  spawnServer,
  splitBytes,
  waitForStatus,
} from "./helpers.ts";
import {
  HAVE_FFMPEG,
  jsonLines,
  linesWith,
  sleep,
  waitFor,
} from "./stop_helpers.ts";

type Json = Record<string, unknown>;

/** Runs `fn` with a server child process over a fresh data folder. */
async function withChild(
  env: Record<string, string>,
  fn: (child: ChildServer, dataDir: string) => Promise<void>,
  dataDir?: string,
): Promise<void> {
  const dir = dataDir ?? await Deno.makeTempDir({ prefix: "tapedeck-log-" });
  const child = await spawnServer(dir, env);
  try {
    await fn(child, dir);
  } finally {
    await child.stop("SIGKILL");
    if (!dataDir) await Deno.remove(dir, { recursive: true });
  }
}

/** Sends a request, returns its status and the error sentence it carried. */
async function call(
  url: string,
  method: string,
  path: string,
): Promise<{ status: number; error: string }> {
  const res = await fetch(`${url}${path}`, { method });
  const body = await res.json().catch(() => ({}));
  return { status: res.status, error: String(body.error ?? "") };
}

/** Whether a text line carries a sentence (as is, or JSON-escaped in quotes). */
function carries(line: string, sentence: string): boolean {
  return line.includes(sentence) ||
    line.includes(JSON.stringify(sentence).slice(1, -1));
}

const DURATION_TEXT = /\b\d+(\.\d+)?\s?ms\b|duration_ms[=:]\s*\d/;

/** Asserts the text line of one failed request. */
async function assertTextRequestLine(
  child: ChildServer,
  req: { method: string; path: string; status: number; error: string },
  id: string,
): Promise<void> {
  const path = req.path.replace(/\/$/, "");
  await waitFor(
    () => linesWith(child.output(), path),
    (l) => l.length > 0,
    5_000,
    `a log line for ${req.method} ${req.path} (${req.status})`,
  ).catch((err) => {
    throw new Error(`${err.message}; the server wrote:\n${child.output()}`);
  });
  await sleep(300);
  const all = linesWith(child.output(), path);
  assert.equal(all.length, 1, `one line per request:\n${all.join("\n")}`);
  const line = all[0];
  assert.doesNotMatch(line.trim(), /^\{/, "text lines are not JSON");
  assert.match(line, new RegExp(`\\b${req.method}\\b`), line);
  assert.match(line, new RegExp(`\\b${req.status}\\b`), line);
  assert.ok(line.includes(id), `the line names the recording: ${line}`);
  assert.ok(req.error.length > 10);
  assert.ok(carries(line, req.error), `the error sentence is in: ${line}`);
  assert.match(line, DURATION_TEXT, `the duration in ms is in: ${line}`);
}

/** Asserts the JSON line of one failed request. */
async function assertJsonRequestLine(
  child: ChildServer,
  req: { method: string; path: string; status: number; error: string },
  id: string,
): Promise<void> {
  const path = req.path.replace(/\/$/, "");
  const find = () =>
    jsonLines(child.output()).filter((l) =>
      typeof l.path === "string" && l.path.startsWith(path)
    );
  await waitFor(
    find,
    (l) => l.length > 0,
    5_000,
    `a JSON log line for ${req.method} ${req.path} (${req.status})`,
  ).catch((err) => {
    throw new Error(`${err.message}; the server wrote:\n${child.output()}`);
  });
  await sleep(300);
  const found = find();
  assert.equal(
    found.length,
    1,
    `one line per request: ${JSON.stringify(found)}`,
  );
  const line = found[0];
  assert.ok(
    ["warn", "error", "info"].includes(String(line.level)),
    `level: ${JSON.stringify(line)}`,
  );
  assert.ok(typeof line.msg === "string" || typeof line.event === "string");
  assert.equal(line.method, req.method);
  assert.equal(line.status, req.status);
  assert.equal(line.recording, id);
  assert.equal(line.error, req.error);
  assert.equal(typeof line.duration_ms, "number", JSON.stringify(line));
  assert.ok((line.duration_ms as number) >= 0);
  assert.ok(
    linesWith(child.output(), path).every((l) => l.trim().startsWith("{")),
    "in JSON format every line about the request is JSON",
  );
}

/** Makes the two requests the request-line tests look at: a 404 and a 409. */
async function failTwice(url: string) {
  const unknown = crypto.randomUUID();
  const notFoundPath = `/check_status/${unknown}/`;
  const notFound = await call(url, "GET", notFoundPath);
  assert.equal(notFound.status, 404);
  const id = await createSession(url);
  const conflictPath = `/complete_job/${id}/`;
  const conflict = await call(url, "POST", conflictPath);
  assert.equal(conflict.status, 409);
  return {
    notFound: { method: "GET", path: notFoundPath, id: unknown, ...notFound },
    conflict: { method: "POST", path: conflictPath, id, ...conflict },
  };
}

Deno.test("log: text (the default): a 404 and a 409 each write one line with method, path, status, recording, error sentence and duration", async () => {
  await withChild({ COMPLETE_GRACE_MS: "60000" }, async (child) => {
    const { notFound, conflict } = await failTwice(child.url);
    await assertTextRequestLine(child, notFound, notFound.id);
    await assertTextRequestLine(child, conflict, conflict.id);
  });
});

Deno.test("log: LOG_FORMAT=json: a 404 and a 409 each write one JSON line with level, method, path, status, recording, error and duration_ms", async () => {
  await withChild(
    { LOG_FORMAT: "json", COMPLETE_GRACE_MS: "60000" },
    async (child) => {
      const { notFound, conflict } = await failTwice(child.url);
      await assertJsonRequestLine(child, notFound, notFound.id);
      await assertJsonRequestLine(child, conflict, conflict.id);
    },
  );
});

/** Uploads a short real recording in two chunks and completes it. */
async function recordAndComplete(url: string): Promise<string> {
  await haveFfmpeg(); // fails with a clear message in CI when missing
  const tmp = await Deno.makeTempFile({ suffix: ".webm" });
  const bytes = await makeRecording(tmp, { seconds: 1 });
  await Deno.remove(tmp);
  const id = await createSession(url);
  for (const piece of splitBytes(bytes, [Math.ceil(bytes.length / 2)])) {
    const res = await sendChunk(url, id, piece);
    assert.equal(res.status, 200, await res.text());
  }
  const done = await fetch(`${url}/complete_job/${id}/`, { method: "POST" });
  assert.equal(done.status, 200, await done.text());
  const st = await waitForStatus(url, id);
  assert.equal(st.status, "complete", JSON.stringify(st));
  return id;
}

/** Index of the first output line with the id that matches `word`, or -1. */
function firstLine(lines: string[], id: string, word: RegExp): number {
  return lines.findIndex((l) => l.includes(id) && word.test(l));
}

const STATES: Array<[string, RegExp]> = [
  ["created", /\bcreated\b/],
  ["completed", /\bcompleted\b/],
  ["processing", /\bprocessing\b/],
  ["complete", /\bcomplete\b/],
];

Deno.test({
  name:
    "log: text: a recording's state changes write created, completed, processing and complete lines, in order",
  ignore: !HAVE_FFMPEG,
  async fn() {
    await withChild({ COMPLETE_GRACE_MS: "200" }, async (child) => {
      const id = await recordAndComplete(child.url);
      const lines = await waitFor(
        () => child.output().split("\n"),
        (ls) => firstLine(ls, id, /\bcomplete\b/) >= 0,
        5_000,
        "the complete line",
      ).catch((err) => {
        throw new Error(`${err.message}; the server wrote:\n${child.output()}`);
      });
      const at = STATES.map(([name, word]) => {
        const i = firstLine(lines, id, word);
        assert.ok(i >= 0, `no ${name} line for ${id} in:\n${child.output()}`);
        return i;
      });
      assert.ok(
        at[0] < at[1] && at[1] <= at[2] && at[2] < at[3],
        `state lines out of order (${at.join(", ")}):\n${child.output()}`,
      );
    });
  },
});

/** The JSON state-change lines of a recording. */
function events(output: string, id: string): Json[] {
  return jsonLines(output).filter((l) =>
    l.recording === id && typeof l.event === "string" &&
    String(l.event).startsWith("recording.")
  );
}

Deno.test({
  name:
    "log: LOG_FORMAT=json: recording.created, .completed, .processing and .complete events, in order, each naming the recording",
  ignore: !HAVE_FFMPEG,
  async fn() {
    await withChild(
      { LOG_FORMAT: "json", COMPLETE_GRACE_MS: "200" },
      async (child) => {
        const id = await recordAndComplete(child.url);
        const seen = await waitFor(
          () => events(child.output(), id),
          (es) => es.some((e) => e.event === "recording.complete"),
          5_000,
          "the recording.complete event",
        ).catch((err) => {
          throw new Error(
            `${err.message}; the server wrote:\n${child.output()}`,
          );
        });
        const names = seen.map((e) => String(e.event));
        const wanted = STATES.map(([name]) => `recording.${name}`);
        for (const w of wanted) {
          assert.equal(
            names.filter((n) => n === w).length,
            1,
            `${w} once in ${names.join(", ")}`,
          );
        }
        assert.deepEqual(
          names.filter((n) => wanted.includes(n)),
          wanted,
          "in order",
        );
        for (const e of seen) {
          assert.ok(typeof e.level === "string", JSON.stringify(e));
        }
      },
    );
  },
});

/** A session whose only chunk starts like WebM but is not a recording. */
async function failProcessing(
  url: string,
): Promise<{ id: string; error: string }> {
  const id = await createSession(url);
  const res = await sendChunk(url, id, mediaBytes(4000, 7));
  assert.equal(res.status, 200, await res.text());
  const done = await fetch(`${url}/complete_job/${id}/`, { method: "POST" });
  assert.equal(done.status, 200, await done.text());
  const st = await waitForStatus(url, id, ["complete", "failed"], 30_000);
  assert.equal(st.status, "failed", JSON.stringify(st));
  return { id, error: String(st.error) };
}

Deno.test("log: a recording that fails processing is logged failed with its reason, as text and as JSON", async () => {
  const env = { JOB_MAX_ATTEMPTS: "1", COMPLETE_GRACE_MS: "200" };
  await withChild(env, async (child) => {
    const { id, error } = await failProcessing(child.url);
    await waitFor(
      () => child.output().split("\n"),
      (ls) => ls.some((l) => l.includes(id) && /\bfailed\b/.test(l)),
      5_000,
      "a failed line",
    ).catch((err) => {
      throw new Error(`${err.message}; the server wrote:\n${child.output()}`);
    });
    await sleep(300);
    const failedLines = linesWith(child.output(), id).filter((l) =>
      /\bfailed\b/.test(l)
    );
    assert.ok(
      failedLines.some((l) => carries(l, error)),
      `a failed line carries the reason "${error}":\n${failedLines.join("\n")}`,
    );
  });
  await withChild({ ...env, LOG_FORMAT: "json" }, async (child) => {
    const { id, error } = await failProcessing(child.url);
    const failed = await waitFor(
      () =>
        events(child.output(), id).filter((e) =>
          e.event === "recording.failed"
        ),
      (es) => es.length > 0,
      5_000,
      "the recording.failed event",
    ).catch((err) => {
      throw new Error(`${err.message}; the server wrote:\n${child.output()}`);
    });
    assert.equal(failed.length, 1);
    const reason = String(failed[0].reason ?? "");
    assert.ok(
      reason.length > 10 && error.includes(reason),
      `reason "${reason}" against the recording's error "${error}"`,
    );
    assert.equal(typeof failed[0].level, "string");
  });
});

Deno.test("log: an empty stop that the grace ends is logged failed with 'stopped before any data arrived', as text and as JSON", async () => {
  const env = { COMPLETE_GRACE_MS: "300" };
  await withChild(env, async (child) => {
    const id = await createSession(child.url);
    const stop = await call(child.url, "POST", `/complete_job/${id}/`);
    assert.equal(stop.status, 409);
    const lines = await waitFor(
      () => child.output().split("\n"),
      (ls) => firstLine(ls, id, /stopped before any data arrived/) >= 0,
      5_000,
      "a failed line",
    ).catch((err) => {
      throw new Error(`${err.message}; the server wrote:\n${child.output()}`);
    });
    assert.ok(
      lines.some((l) =>
        l.includes(id) && /\bfailed\b/.test(l) &&
        /stopped before any data arrived/.test(l)
      ),
      `a failed line with the reason:\n${
        linesWith(child.output(), id).join("\n")
      }`,
    );
  });
  await withChild({ ...env, LOG_FORMAT: "json" }, async (child) => {
    const id = await createSession(child.url);
    const stop = await call(child.url, "POST", `/complete_job/${id}/`);
    assert.equal(stop.status, 409);
    const failed = await waitFor(
      () =>
        events(child.output(), id).filter((e) =>
          e.event === "recording.failed"
        ),
      (es) => es.length > 0,
      5_000,
      "the recording.failed event",
    ).catch((err) => {
      throw new Error(`${err.message}; the server wrote:\n${child.output()}`);
    });
    assert.match(String(failed[0].reason), /stopped before any data arrived/);
  });
});

Deno.test("log: at LOG_LEVEL=info a successful add_data writes no line; at LOG_LEVEL=debug it writes one", async () => {
  for (const level of ["info", "debug"]) {
    await withChild(
      { LOG_FORMAT: "json", LOG_LEVEL: level },
      async (child) => {
        const id = await createSession(child.url);
        const res = await sendChunk(child.url, id, mediaBytes(1000, 1));
        assert.equal(res.status, 200, await res.text());
        // The created line shows the log is written and caught up.
        await waitFor(
          () => events(child.output(), id),
          (es) => es.some((e) => e.event === "recording.created"),
          5_000,
          `the recording.created event at LOG_LEVEL=${level}`,
        ).catch((err) => {
          throw new Error(
            `${err.message}; the server wrote:\n${child.output()}`,
          );
        });
        await sleep(500);
        const chunkLines = jsonLines(child.output()).filter((l) =>
          String(l.path ?? "").startsWith(`/add_data/${id}`)
        );
        if (level === "info") {
          assert.deepEqual(chunkLines, [], "no line for a successful chunk");
          assert.deepEqual(linesWith(child.output(), `/add_data/${id}`), []);
        } else {
          assert.equal(chunkLines.length, 1, child.output());
          const line = chunkLines[0];
          assert.equal(line.level, "debug");
          assert.equal(line.method, "POST");
          assert.equal(line.status, 200);
          assert.equal(line.recording, id);
          assert.equal(typeof line.duration_ms, "number");
        }
      },
    );
  }
});

Deno.test("log: idle recordings expired by the start-up sweep are logged recording.expired", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-log-idle-" });
  try {
    let withData = "";
    let empty = "";
    await withChild({ RUN_WORKER: "false" }, async (child) => {
      withData = await createSession(child.url);
      const res = await sendChunk(child.url, withData, mediaBytes(1000, 1));
      assert.equal(res.status, 200, await res.text());
      empty = await createSession(child.url);
    }, dataDir);
    await sleep(1_200);
    await withChild(
      {
        LOG_FORMAT: "json",
        RUN_WORKER: "false",
        RECORDING_IDLE_TIMEOUT_S: "1",
      },
      async (child) => {
        for (const id of [withData, empty]) {
          const expired = await waitFor(
            () =>
              events(child.output(), id).filter((e) =>
                e.event === "recording.expired"
              ),
            (es) => es.length > 0,
            5_000,
            `the recording.expired event of ${id}`,
          ).catch((err) => {
            throw new Error(
              `${err.message}; the server wrote:\n${child.output()}`,
            );
          });
          assert.equal(expired.length, 1);
        }
      },
      dataDir,
    );
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
