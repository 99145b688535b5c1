/**
 * Issue 11: a real recorder's stop loses nothing. Chunks in flight or
 * arriving up to COMPLETE_GRACE_MS after `complete_job` are kept (also when
 * the chunk and the completion reach different instances), later ones get
 * a 409 naming the grace; a `last_chunk` hint skips the wait; `complete` is
 * published once with the final files; a stop with no data ends in
 * `failed`.
 */

import assert from "node:assert/strict";
import { openSocket, type TestSocket, wsUrl } from "./browser_helpers.ts";
import {
  createSession,
  expectError,
  haveFfmpeg,
  makeRecording,
  sendChunk,
  spawnServer,
  splitBytes,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import {
  assertSameBytes,
  type ChangeMessage,
  checkStatus,
  downloadTo,
  fetchSource,
  formatDurationS,
  HAVE_FFMPEG,
  heldBody,
  type LiveMessage,
  packetDurationS,
  sleep,
  within,
} from "./stop_helpers.ts";
import { concatBytes } from "../common/bytes.ts";

const NEEDS_FFMPEG = { ignore: !HAVE_FFMPEG };

/** A test recording: its bytes, its packet duration and its pieces. */
interface Sample {
  bytes: Uint8Array<ArrayBuffer>;
  durationS: number;
  pieces: Uint8Array<ArrayBuffer>[];
}

const samples = new Map<string, Sample>();

/** A `seconds`-long VP9/Opus live WebM split into `parts` pieces (cached). */
async function sample(seconds: number, parts: number): Promise<Sample> {
  const key = `${seconds}/${parts}`;
  const cached = samples.get(key);
  if (cached) return cached;
  await haveFfmpeg(); // fails with a clear message in CI when missing
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-stop-" });
  try {
    const path = `${dir}/in.webm`;
    const bytes = await makeRecording(path, { seconds });
    const s = {
      bytes,
      durationS: await packetDurationS(path),
      pieces: splitBytes(bytes, [Math.ceil(bytes.length / parts)]),
    };
    samples.set(key, s);
    return s;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sends pieces one after another without an index, as the extension does. */
async function sendAll(
  url: string,
  id: string,
  pieces: Uint8Array<ArrayBuffer>[],
  indexed = false,
): Promise<void> {
  for (const [i, piece] of pieces.entries()) {
    const res = await sendChunk(url, id, piece, indexed ? i : undefined);
    const text = await res.text();
    assert.equal(res.status, 200, `chunk ${i}: ${text}`);
  }
}

/** POSTs complete_job and asserts the immediate 200 "Processing started". */
async function completeJob(
  url: string,
  id: string,
  init: RequestInit = {},
  query = "",
): Promise<Record<string, unknown>> {
  const started = Date.now();
  const res = await fetch(`${url}/complete_job/${id}/${query}`, {
    method: "POST",
    ...init,
  });
  const text = await res.text();
  assert.equal(res.status, 200, `complete_job: ${text}`);
  const body = JSON.parse(text);
  assert.equal(body.message, "Processing started", text);
  assert.equal(body.status, "processing", text);
  const took = Date.now() - started;
  assert.ok(
    took < 2_000,
    `complete_job answered after ${took} ms, not at once`,
  );
  return body;
}

/** Asserts the recording is `complete` and its source is exactly `expected`. */
async function assertFinished(
  url: string,
  id: string,
  expected: Uint8Array,
  expectedDurationS: number,
  timeoutMs = 60_000,
): Promise<void> {
  const st = await waitForStatus(url, id, ["complete", "failed"], timeoutMs);
  assert.equal(st.status, "complete", JSON.stringify(st));
  assert.equal(st.bytes_received, expected.length, JSON.stringify(st));
  assertSameBytes(
    await fetchSource(url, id),
    expected,
    `/media/${id}/source against every chunk sent, in order`,
  );
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-stop-out-" });
  try {
    await downloadTo(url, id, `${id}.mp4`, `${dir}/out.mp4`);
    const mp4S = await formatDurationS(`${dir}/out.mp4`);
    assert.ok(
      Math.abs(mp4S - expectedDurationS) < 0.1,
      `the MP4 lasts ${mp4S} s, the chunks sent ${expectedDurationS} s`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Starts a chunk whose headers and first half reach the server now and
 * whose second half is sent when `finish()` is called.
 */
async function startInFlightChunk(
  url: string,
  id: string,
  piece: Uint8Array<ArrayBuffer>,
): Promise<{ finish(): void; response: Promise<Response> }> {
  const half = Math.floor(piece.length / 2);
  const held = heldBody(piece.slice(0, half));
  const response = fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    body: held.body,
    headers: { "content-type": "video/webm" },
  });
  // Let the request line, headers and first half reach the server.
  await sleep(400);
  return { finish: () => held.finish(piece.slice(half)), response };
}

/**
 * Sends complete_job to `completeUrl` while a chunk to `chunkUrl` is still
 * sending its body, then lets the chunk finish; asserts both answers.
 */
async function completeDuringChunk(
  chunkUrl: string,
  completeUrl: string,
  id: string,
  last: Uint8Array<ArrayBuffer>,
): Promise<void> {
  const chunk = await startInFlightChunk(chunkUrl, id, last);
  const completion = fetch(`${completeUrl}/complete_job/${id}/`, {
    method: "POST",
  });
  const answered = await within(completion, 5_000);
  if (!answered) {
    chunk.finish();
    await (await chunk.response).body?.cancel();
    await (await completion).body?.cancel();
    assert.fail(
      "complete_job did not answer within 5 s while a chunk was in flight; it must answer at once",
    );
  }
  const completeText = await answered.text();
  assert.equal(answered.status, 200, `complete_job: ${completeText}`);
  assert.equal(JSON.parse(completeText).status, "processing", completeText);
  const during = await checkStatus(completeUrl, id);
  assert.equal(during.body.status, "processing", JSON.stringify(during.body));

  chunk.finish();
  const res = await chunk.response;
  const text = await res.text();
  assert.equal(
    res.status,
    200,
    `the chunk in flight when complete_job arrived must be stored: ${res.status} ${text}`,
  );
}

Deno.test({
  name:
    "stop: a chunk whose body is still arriving when complete_job comes is stored, answered 200 and in the finished files",
  ...NEEDS_FFMPEG,
  async fn() {
    const server = await startTestServer();
    try {
      const { bytes, durationS, pieces } = await sample(3, 5);
      const id = await createSession(server.url);
      await sendAll(server.url, id, pieces.slice(0, -1));
      await completeDuringChunk(server.url, server.url, id, pieces.at(-1)!);
      await assertFinished(server.url, id, bytes, durationS);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "stop: a chunk that arrives within COMPLETE_GRACE_MS after complete_job is accepted and included",
  ...NEEDS_FFMPEG,
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "2000" });
    try {
      const { bytes, durationS, pieces } = await sample(3, 5);
      const id = await createSession(server.url);
      await sendAll(server.url, id, pieces.slice(0, -1));
      await completeJob(server.url, id);
      await sleep(300);
      const res = await sendChunk(server.url, id, pieces.at(-1)!);
      const text = await res.text();
      assert.equal(
        res.status,
        200,
        `a chunk 300 ms after complete_job (grace 2000 ms) must be accepted: ${text}`,
      );
      const during = await checkStatus(server.url, id);
      assert.equal(during.body.status, "processing");
      await assertFinished(server.url, id, bytes, durationS);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "stop: a chunk after the grace gets 409 naming COMPLETE_GRACE_MS; the recording keeps what came in time",
  ...NEEDS_FFMPEG,
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "500" });
    try {
      const { pieces } = await sample(3, 5);
      const id = await createSession(server.url);
      const inTime = pieces.slice(0, -1);
      await sendAll(server.url, id, inTime);
      await completeJob(server.url, id);
      await sleep(1_500);
      await expectError(
        await sendChunk(server.url, id, pieces.at(-1)!),
        409,
        /COMPLETE_GRACE_MS/,
      );
      const st = await waitForStatus(server.url, id);
      assert.equal(st.status, "complete", JSON.stringify(st));
      assertSameBytes(
        await fetchSource(server.url, id),
        concatBytes(inTime),
        "the source holds the chunks that came in time",
      );
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "stop: two instances on one KV: a chunk in flight on A when B gets complete_job is stored and in the finished files",
  ...NEEDS_FFMPEG,
  async fn() {
    const a = await startTestServer({ SHARED_KV: "true" });
    let b: TestServer | undefined;
    try {
      b = await startTestServer({
        DATA_DIR: a.dataDir,
        SHARED_KV: "true",
        RUN_WORKER: "false",
      });
      const { bytes, durationS, pieces } = await sample(3, 5);
      const id = await createSession(a.url);
      await sendAll(a.url, id, pieces.slice(0, -1));
      await completeDuringChunk(a.url, b.url, id, pieces.at(-1)!);
      await assertFinished(a.url, id, bytes, durationS);
      assertSameBytes(
        await fetchSource(b.url, id),
        bytes,
        "instance B serves the same source",
      );
    } finally {
      await b?.close();
      await a.close();
    }
  },
});

Deno.test({
  name:
    "stop: kill -9 during the grace loses no accepted chunk; after a restart the recording completes with it",
  ...NEEDS_FFMPEG,
  async fn() {
    const { bytes, durationS, pieces } = await sample(3, 5);
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-stop-kill-" });
    const env = { COMPLETE_GRACE_MS: "3000" };
    let child = await spawnServer(dataDir, env);
    try {
      const id = await createSession(child.url);
      await sendAll(child.url, id, pieces.slice(0, -1));
      await completeJob(child.url, id);
      const res = await sendChunk(child.url, id, pieces.at(-1)!);
      const text = await res.text();
      assert.equal(
        res.status,
        200,
        `a chunk right after complete_job (grace 3000 ms) must be accepted: ${text}`,
      );
      await child.stop("SIGKILL");
      child = await spawnServer(dataDir, env);
      await assertFinished(child.url, id, bytes, durationS);
    } finally {
      await child.stop("SIGKILL");
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "stop: a last_chunk hint (?last_chunk=N, JSON, form fields, add_data last_chunk:true) completes without the grace; an unhinted stop still waits",
  ...NEEDS_FFMPEG,
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "30000" });
    try {
      const { bytes, durationS, pieces } = await sample(2, 3);
      const last = pieces.length - 1;
      const unhinted = await createSession(server.url);
      await sendAll(server.url, unhinted, pieces);
      const unhintedAt = Date.now();
      await completeJob(server.url, unhinted);

      const hinted: { how: string; id: string; at: number }[] = [];
      const stop = async (how: string, init: RequestInit, query = "") => {
        const id = await createSession(server.url);
        await sendAll(server.url, id, pieces);
        hinted.push({ how, id, at: Date.now() });
        await completeJob(server.url, id, init, query);
      };
      await stop("query", {}, `?last_chunk=${last}`);
      await stop("json", {
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ last_chunk: last }),
      });
      const form = new FormData();
      form.set("last_chunk", String(last));
      await stop("multipart form", { body: form });
      await stop("urlencoded form", {
        body: new URLSearchParams({ last_chunk: String(last) }),
      });

      const viaAddData = await createSession(server.url);
      await sendAll(server.url, viaAddData, pieces.slice(0, -1));
      const lastRes = await fetch(`${server.url}/add_data/${viaAddData}/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          blob_data: (pieces[last] as unknown as { toBase64(): string })
            .toBase64(),
          last_chunk: true,
        }),
      });
      assert.equal(lastRes.status, 200, await lastRes.text());
      hinted.push({
        how: "add_data last_chunk",
        id: viaAddData,
        at: Date.now(),
      });

      for (const { how, id, at } of hinted) {
        const st = await waitForStatus(
          server.url,
          id,
          ["complete", "failed"],
          Math.max(1_000, at + 15_000 - Date.now()),
        ).catch((err) => {
          throw new Error(
            `with the hint by ${how} the recording must complete well before COMPLETE_GRACE_MS (30 s): ${err.message}`,
          );
        });
        assert.equal(st.status, "complete", `${how}: ${JSON.stringify(st)}`);
      }
      for (const { id } of hinted) {
        assert.equal(
          (await fetchSource(server.url, id)).length,
          bytes.length,
        );
      }
      await assertFinished(server.url, hinted[0].id, bytes, durationS);

      const waited = Date.now() - unhintedAt;
      const st = await checkStatus(server.url, unhinted);
      assert.ok(waited < 28_000, `the checks took ${waited} ms`);
      assert.equal(
        st.body.status,
        "processing",
        `${waited} ms after a stop with no hint (COMPLETE_GRACE_MS=30000) the recording must still wait in processing: ${
          JSON.stringify(st.body)
        }`,
      );
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "stop: without a hint COMPLETE_GRACE_MS=3000 is honoured: processing, not complete, until about 3 s after complete_job",
  ...NEEDS_FFMPEG,
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "3000" });
    try {
      const { bytes, durationS, pieces } = await sample(2, 3);
      const id = await createSession(server.url);
      await sendAll(server.url, id, pieces);
      const sentAt = Date.now();
      await completeJob(server.url, id);
      let completeAt = 0;
      while (Date.now() - sentAt < 30_000) {
        const { body } = await checkStatus(server.url, id);
        const at = Date.now();
        if (body.status === "complete" || body.status === "failed") {
          assert.equal(body.status, "complete", JSON.stringify(body));
          completeAt = at;
          break;
        }
        assert.equal(body.status, "processing", JSON.stringify(body));
        await sleep(100);
      }
      assert.ok(completeAt > 0, "the recording completed after the grace");
      const after = completeAt - sentAt;
      assert.ok(
        after >= 2_900,
        `the recording was complete ${after} ms after complete_job, inside COMPLETE_GRACE_MS=3000`,
      );
      await assertFinished(server.url, id, bytes, durationS);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name:
    "stop: ?last_chunk=N naming a chunk still to come waits for it, includes it and completes without the grace",
  ...NEEDS_FFMPEG,
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "20000" });
    try {
      const { bytes, durationS, pieces } = await sample(3, 5);
      const last = pieces.length - 1;
      const id = await createSession(server.url);
      await sendAll(server.url, id, pieces.slice(0, -1), true);
      const stoppedAt = Date.now();
      await completeJob(server.url, id, {}, `?last_chunk=${last}`);
      await sleep(300);
      const res = await sendChunk(server.url, id, pieces[last], last);
      const text = await res.text();
      assert.equal(
        res.status,
        200,
        `chunk ${last}, named by last_chunk, arriving after complete_job must be accepted: ${text}`,
      );
      const st = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        12_000,
      );
      assert.equal(st.status, "complete", JSON.stringify(st));
      assert.ok(Date.now() - stoppedAt < 15_000);
      await assertFinished(server.url, id, bytes, durationS);
    } finally {
      await server.close();
    }
  },
});

function changesOf(socket: TestSocket, id: string) {
  return socket.received
    .map(({ message }) => message)
    .filter((m): m is ChangeMessage =>
      m.type === "change" && m.recording.id === id
    )
    .map((m) => m.recording);
}

function isFinal(id: string) {
  return (m: LiveMessage) =>
    m.type === "change" && m.recording.id === id &&
    (m.recording.status === "complete" || m.recording.status === "failed");
}

Deno.test({
  name:
    "stop: with a chunk inside the grace, complete is published once on /ws/<id>, with the files and sizes /video and HEAD /media report",
  ...NEEDS_FFMPEG,
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "1000" });
    let socket: TestSocket | undefined;
    try {
      const { bytes, durationS, pieces } = await sample(3, 5);
      const id = await createSession(server.url);
      socket = await openSocket(wsUrl(server.url, `/ws/${id}`));
      assert.equal((await socket.next()).type, "snapshot");
      await sendAll(server.url, id, pieces.slice(0, -1));
      await completeJob(server.url, id);
      await sleep(200);
      const res = await sendChunk(server.url, id, pieces.at(-1)!);
      const text = await res.text();
      assert.equal(
        res.status,
        200,
        `a chunk 200 ms after complete_job (grace 1000 ms) must be accepted: ${text}`,
      );
      await socket.until(isFinal(id), 60_000);
      // Anything published after `complete` would show up here.
      await sleep(2_000);
      await expectError(await sendChunk(server.url, id, pieces[0]), 409);
      await sleep(500);
      await socket.close();

      const changes = changesOf(socket, id);
      const completes = changes.filter((c) => c.status === "complete");
      assert.equal(
        completes.length,
        1,
        `complete was published ${completes.length} times: ${
          changes.map((c) => c.status).join(" ")
        }`,
      );
      assert.equal(
        changes.at(-1)!.status,
        "complete",
        "nothing after complete",
      );
      const published = completes[0];
      assert.equal(published.bytesReceived, bytes.length);
      assert.equal(published.chunksReceived, pieces.length);

      const video = await (await fetch(`${server.url}/video/${id}/`)).json();
      assert.deepEqual(published.files, video.completed_videos);
      assert.ok(published.media, "the complete change carries the media facts");
      for (const name of video.completed_videos as string[]) {
        const head = await fetch(`${server.url}/media/${id}/${name}`, {
          method: "HEAD",
        });
        await head.body?.cancel();
        assert.equal(head.status, 200, name);
        assert.equal(
          Number(head.headers.get("content-length")),
          published.media!.sizes[name],
          `${name}: size published with complete against HEAD`,
        );
      }
      assert.ok(
        Math.abs(published.media!.durationS - durationS) < 0.1,
        `complete published ${
          published.media!.durationS
        } s, the chunks hold ${durationS} s`,
      );
      await assertFinished(server.url, id, bytes, durationS);
    } finally {
      await socket?.close();
      await server.close();
    }
  },
});

Deno.test({
  name:
    "stop: complete_job with no data is 409; when no chunk comes in the grace the recording is failed ('stopped before any data arrived') and /ws shows it at once",
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "500" });
    let socket: TestSocket | undefined;
    try {
      socket = await openSocket(wsUrl(server.url, "/ws"));
      assert.equal((await socket.next()).type, "snapshot");
      const id = await createSession(server.url);
      const stoppedAt = Date.now();
      await expectError(
        await fetch(`${server.url}/complete_job/${id}/`, { method: "POST" }),
        409,
      );
      const failed = await socket.until(isFinal(id), 10_000).catch(() => {
        throw new Error(
          "the dashboard socket /ws did not get a failed change within 10 s of an empty stop (COMPLETE_GRACE_MS=500)",
        );
      }) as ChangeMessage;
      const arrived = Date.now() - stoppedAt;
      assert.equal(failed.recording.status, "failed");
      assert.match(
        failed.recording.error ?? "",
        /stopped before any data arrived/,
      );
      assert.ok(
        arrived < 2_500,
        `the failed change reached /ws ${arrived} ms after the stop (grace 500 ms)`,
      );
      const st = await checkStatus(server.url, id);
      assert.equal(st.body.status, "failed", JSON.stringify(st.body));
      assert.match(String(st.body.error), /stopped before any data arrived/);
      await expectError(
        await sendChunk(
          server.url,
          id,
          new Uint8Array([0x1a, 0x45, 0xdf, 0xa3]),
        ),
        409,
      );
    } finally {
      await socket?.close();
      await server.close();
    }
  },
});

Deno.test({
  name:
    "stop: chunks arriving within the grace after an empty complete_job are accepted and the recording is processed",
  ...NEEDS_FFMPEG,
  async fn() {
    const server = await startTestServer({ COMPLETE_GRACE_MS: "2000" });
    try {
      const { bytes, durationS, pieces } = await sample(2, 2);
      const id = await createSession(server.url);
      await expectError(
        await fetch(`${server.url}/complete_job/${id}/`, { method: "POST" }),
        409,
      );
      await sleep(200);
      await sendAll(server.url, id, pieces);
      const during = await checkStatus(server.url, id);
      assert.notEqual(during.body.status, "failed");
      await assertFinished(server.url, id, bytes, durationS, 20_000).catch(
        (err) => {
          throw new Error(
            `after an empty stop and chunks within the grace, the recording must be processed without another complete_job: ${err.message}`,
          );
        },
      );
    } finally {
      await server.close();
    }
  },
});
