/**
 * The recorder page's logic (client/recorder_session.ts) without a
 * browser: a fake MediaRecorder, fake streams and an in-memory outbox
 * against a real server (no worker, no ffmpeg). The real browser runs are
 * tests/browser_test.ts and tests/browser_resume_test.ts.
 */

import assert from "node:assert/strict";
import type { MediaRecorderLike, Source } from "../client/capture.ts";
import type { ChunkSink } from "../client/chunk_uploader.ts";
import type { KeptRecording, KeptStore } from "../client/outbox.ts";
import type { RecorderEnvironment } from "../client/recorder_environment.ts";
import {
  type ChunkEventDetail,
  RecorderSession,
} from "../client/recorder_session.ts";
import type { ResumeSource } from "../client/resume_upload.ts";
import { eventually } from "./browser_helpers.ts";
import {
  createSession,
  mediaBytes,
  sendChunk,
  startTestServer,
  type TestServer,
} from "./helpers.ts";

const SUPPORTED = "video/webm;codecs=vp9,opus";

/** A media track that can be stopped and can end by itself. */
class FakeTrack extends EventTarget {
  stopped = false;
  stop(): void {
    this.stopped = true;
  }
}

/**
 * A MediaRecorder driven by the test: {@link emit} is one timeslice's
 * blob; `stop()` emits the last blob, then `stop`, as a browser does.
 */
class FakeRecorder extends EventTarget implements MediaRecorderLike {
  state: RecordingState = "inactive";
  timeslice?: number;
  ondataavailable: ((event: BlobEvent) => void) | null = null;
  onstart: ((event: Event) => void) | null = null;
  onerror: ((event: ErrorEvent) => void) | null = null;
  /** Whether `stop()` emits a last blob. */
  lastBlob = true;
  #sent = 0;

  constructor(readonly mimeType: string) {
    super();
  }

  start(timeslice?: number): void {
    this.state = "recording";
    this.timeslice = timeslice;
    setTimeout(() => this.onstart?.(new Event("start")), 0);
  }

  /** One blob of `size` bytes (the first starts like a WebM). */
  emit(size = 1000): void {
    const bytes = this.#sent === 0
      ? mediaBytes(size)
      : new Uint8Array(size).fill(this.#sent);
    this.#sent++;
    const data = new Blob([bytes], { type: "video/webm" });
    this.ondataavailable?.({ data } as BlobEvent);
  }

  stop(): void {
    if (this.state === "inactive") return;
    this.state = "inactive";
    setTimeout(() => {
      if (this.lastBlob) this.emit(500);
      this.dispatchEvent(new Event("stop"));
    }, 0);
  }
}

/** The outbox in memory, as ChunkStore keeps it in IndexedDB. */
class MemoryOutbox implements KeptStore {
  recordings = new Map<string, KeptRecording>();
  chunks = new Map<string, Map<number, Blob>>();
  closed = false;

  saveRecording(rec: KeptRecording): Promise<void> {
    this.recordings.set(rec.videoId, { ...rec });
    return Promise.resolve();
  }

  updateRecording(
    videoId: string,
    patch: Partial<Omit<KeptRecording, "videoId">>,
  ): Promise<void> {
    const rec = this.recordings.get(videoId);
    if (rec) {
      this.recordings.set(videoId, { ...rec, ...patch, updatedAt: Date.now() });
    }
    return Promise.resolve();
  }

  getRecording(videoId: string): Promise<KeptRecording | undefined> {
    return Promise.resolve(this.recordings.get(videoId));
  }

  listRecordings(): Promise<KeptRecording[]> {
    return Promise.resolve(
      [...this.recordings.values()].sort((a, b) => a.createdAt - b.createdAt),
    );
  }

  deleteRecording(videoId: string): Promise<void> {
    this.recordings.delete(videoId);
    this.chunks.delete(videoId);
    return Promise.resolve();
  }

  /** The kept chunks of a recording. */
  kept(videoId: string): Map<number, Blob> {
    let chunks = this.chunks.get(videoId);
    if (!chunks) this.chunks.set(videoId, chunks = new Map());
    return chunks;
  }

  sink(videoId: string): ChunkSink {
    return {
      save: (index, blob) => {
        this.kept(videoId).set(index, blob);
        return Promise.resolve();
      },
      forget: (index) => {
        this.kept(videoId).delete(index);
        return Promise.resolve();
      },
    };
  }

  source(rec: KeptRecording): ResumeSource {
    const chunks = this.kept(rec.videoId);
    return {
      session: { videoId: rec.videoId, uploadToken: rec.uploadToken },
      chunks: () =>
        Promise.resolve(
          [...chunks].sort(([a], [b]) => a - b)
            .map(([index, blob]) => ({ index, size: blob.size })),
        ),
      read: (index) => Promise.resolve(chunks.get(index)),
      forget: (index) => {
        chunks.delete(index);
        return Promise.resolve();
      },
    };
  }

  close(): void {
    this.closed = true;
  }
}

/** A page for the session: events, the outbox, capture and navigation. */
interface FakePage {
  environment: RecorderEnvironment;
  window: EventTarget;
  outbox: MemoryOutbox;
  recorders: FakeRecorder[];
  tracks: FakeTrack[];
  opened: { source: Source; withMic: boolean }[];
  navigated: string[];
  announced: ChunkEventDetail[];
}

function fakePage(
  baseUrl: string,
  options: { outbox?: "broken"; streamError?: Error } = {},
): FakePage {
  const window = new EventTarget();
  const document = Object.assign(new EventTarget(), {
    visibilityState: "visible" as DocumentVisibilityState,
  });
  const page: FakePage = {
    window,
    outbox: new MemoryOutbox(),
    recorders: [],
    tracks: [],
    opened: [],
    navigated: [],
    announced: [],
    environment: {
      baseUrl,
      window,
      document,
      isOnline: () => true,
      supportProblem: () => null,
      openStore: () =>
        options.outbox === "broken"
          ? Promise.reject(new Error("no IndexedDB here"))
          : Promise.resolve(page.outbox),
      openStream: (source, withMic) => {
        page.opened.push({ source, withMic });
        if (options.streamError) return Promise.reject(options.streamError);
        const video = new FakeTrack();
        const audio = new FakeTrack();
        page.tracks.push(video, audio);
        const stream = {
          getVideoTracks: () => [video],
        } as unknown as MediaStream;
        return Promise.resolve({
          stream,
          tracks: [video, audio] as unknown as MediaStreamTrack[],
        });
      },
      isTypeSupported: (type) => type === SUPPORTED,
      createRecorder: (_stream, type) => {
        const recorder = new FakeRecorder(type);
        page.recorders.push(recorder);
        return recorder;
      },
      navigate: (url) => page.navigated.push(url),
    },
  };
  window.addEventListener("tapedeck:chunk", (event) => {
    page.announced.push((event as CustomEvent<ChunkEventDetail>).detail);
  });
  return page;
}

async function getJson(url: string): Promise<Record<string, unknown>> {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  return await res.json();
}

/** A server without a worker that takes no chunk after complete_job. */
async function withServer(
  body: (server: TestServer) => Promise<void>,
): Promise<void> {
  const server = await startTestServer({
    RUN_WORKER: "false",
    COMPLETE_GRACE_MS: "0",
  });
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

Deno.test("recorder session: records, keeps every chunk until acknowledged, uploads each with its index, completes and opens the recording's page", async () => {
  await withServer(async (server) => {
    const page = fakePage(server.url);
    const session = new RecorderSession({
      timesliceMs: 1000,
      environment: page.environment,
    });
    const close = session.open();
    try {
      await eventually(() => session.ready.value, 5_000, "ready");
      assert.equal(session.problem.value, null);
      session.source.value = "screen";
      session.mic.value = false;
      await session.start();
      assert.deepEqual(page.opened, [{ source: "screen", withMic: false }]);
      const recorder = page.recorders[0];
      assert.equal(recorder.mimeType, SUPPORTED);
      assert.equal(recorder.timeslice, 1000);
      assert.equal(session.mimeType.value, SUPPORTED);
      await eventually(
        () => session.phase.value === "recording",
        5_000,
        "recording",
      );
      const id = session.videoId.value!;
      assert.ok(id);
      assert.equal(page.outbox.recordings.get(id)?.started, true);

      for (let i = 0; i < 3; i++) recorder.emit();
      await eventually(
        () => session.upload.value?.uploadedChunks === 3,
        5_000,
        "three chunks uploaded",
      );
      await eventually(
        () => page.outbox.kept(id).size === 0,
        5_000,
        "acknowledged chunks dropped from the outbox",
      );
      assert.deepEqual(page.announced.map((d) => d.index), [0, 1, 2]);
      assert.ok(page.announced.every((d) => d.videoId === id));

      await session.stop();
      assert.equal(session.phase.value, "done");
      assert.deepEqual(page.navigated, [`/videos/${id}`]);
      assert.ok(page.tracks.every((t) => t.stopped), "every track stopped");
      assert.equal(page.outbox.recordings.has(id), false, "outbox emptied");
      const ledger = await getJson(`${server.url}/chunks/${id}/`);
      assert.deepEqual(ledger.received, [[0, 3]], "the last blob came too");
      const status = await getJson(`${server.url}/check_status/${id}/`);
      assert.equal(status.status, "processing");
    } finally {
      close();
    }
    assert.equal(page.outbox.closed, true);
  });
});

Deno.test("recorder session: a refused permission and an outbox that cannot open are said in words", async () => {
  const denied = new DOMException("denied", "NotAllowedError");
  const page = fakePage("http://127.0.0.1:9", {
    outbox: "broken",
    streamError: denied,
  });
  const session = new RecorderSession({
    timesliceMs: 1000,
    environment: page.environment,
  });
  const close = session.open();
  try {
    await eventually(() => session.ready.value, 5_000, "ready");
    assert.match(
      session.keepProblem.value ?? "",
      /cannot keep chunks \(no IndexedDB here\)/,
    );
    await session.start();
    assert.equal(session.phase.value, "error");
    assert.match(session.error.value ?? "", /Permission to record was refused/);
    assert.equal(page.recorders.length, 0);
  } finally {
    close();
  }
});

Deno.test("recorder session: a recording finished elsewhere stops here and is handed to the resume list, which explains why its kept chunks cannot be sent", async () => {
  await withServer(async (server) => {
    const page = fakePage(server.url);
    const session = new RecorderSession({
      timesliceMs: 1000,
      environment: page.environment,
    });
    const close = session.open();
    try {
      await eventually(() => session.ready.value, 5_000, "ready");
      await session.start();
      await eventually(
        () => session.phase.value === "recording",
        5_000,
        "recording",
      );
      const id = session.videoId.value!;
      const recorder = page.recorders[0];
      recorder.emit();
      await eventually(
        () => session.upload.value?.uploadedChunks === 1,
        5_000,
        "first chunk uploaded",
      );
      const done = await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      });
      assert.equal(done.status, 200, await done.text());

      recorder.emit();
      await eventually(
        () => session.phase.value === "error",
        5_000,
        "the upload stopped",
      );
      assert.match(session.error.value ?? "", /^The upload stopped: /);
      await eventually(
        () => session.pending.value.some((i) => i.state === "error"),
        10_000,
        "the handed-over recording in the resume list",
      );
      const [item] = session.pending.value;
      assert.equal(item.videoId, id);
      assert.equal(item.fromThisPage, true);
      assert.match(item.error ?? "", /already finished this recording/);
      assert.ok(page.outbox.kept(id).size >= 1, "its chunks are still kept");

      session.pendingAction(id, "discard");
      await eventually(
        () => session.pending.value.length === 0,
        5_000,
        "discarded",
      );
      assert.equal(page.outbox.recordings.has(id), false);
    } finally {
      close();
    }
  });
});

Deno.test("recorder session: on open, a recording a closed page left in the outbox is resumed: only what the server lacks is sent, then it is finished", async () => {
  await withServer(async (server) => {
    const page = fakePage(server.url);
    const id = await createSession(server.url);
    const blobs = [mediaBytes(800), mediaBytes(900, 7), mediaBytes(700, 9)];
    const first = await sendChunk(server.url, id, blobs[0], 0);
    assert.equal(first.status, 200);
    await first.body?.cancel();
    await page.outbox.saveRecording({
      videoId: id,
      mimeType: SUPPORTED,
      createdAt: Date.now(),
      updatedAt: Date.now(),
      started: true,
      stopped: false,
    });
    const sink = page.outbox.sink(id);
    for (const [i, bytes] of blobs.entries()) {
      await sink.save(i, new Blob([bytes], { type: "video/webm" }));
    }

    const session = new RecorderSession({
      timesliceMs: 1000,
      environment: page.environment,
    });
    const close = session.open();
    try {
      await eventually(
        () => session.pending.value[0]?.state === "done",
        10_000,
        "the kept recording resumed and finished",
      );
      const [item] = session.pending.value;
      assert.equal(item.videoId, id);
      assert.equal(item.kind, "interrupted");
      assert.equal(item.skipped, 1, "chunk 0 was already on the server");
      assert.equal(item.uploaded, 2);
      assert.deepEqual(item.gaps, []);
      assert.equal(item.status, "processing");
      assert.equal(page.outbox.recordings.has(id), false);
      const ledger = await getJson(`${server.url}/chunks/${id}/`);
      assert.deepEqual(ledger.received, [[0, 2]]);
    } finally {
      close();
    }
  });
});

Deno.test("recorder session: online and offline are followed until closed, and closing stops a recording under way", async () => {
  await withServer(async (server) => {
    const page = fakePage(server.url);
    const session = new RecorderSession({
      timesliceMs: 1000,
      environment: page.environment,
    });
    const close = session.open();
    await eventually(() => session.ready.value, 5_000, "ready");
    page.window.dispatchEvent(new Event("offline"));
    assert.equal(session.online.value, false);
    page.window.dispatchEvent(new Event("online"));
    assert.equal(session.online.value, true);
    const leaving = new Event("beforeunload", { cancelable: true });
    page.window.dispatchEvent(leaving);
    assert.equal(leaving.defaultPrevented, false, "idle: leaving is fine");

    await session.start();
    await eventually(
      () => session.phase.value === "recording",
      5_000,
      "recording",
    );
    const asking = new Event("beforeunload", { cancelable: true });
    page.window.dispatchEvent(asking);
    assert.equal(asking.defaultPrevented, true, "recording: leaving asks");

    page.recorders[0].lastBlob = false;
    close();
    assert.equal(page.recorders[0].state, "inactive");
    assert.ok(page.tracks.every((t) => t.stopped));
    page.window.dispatchEvent(new Event("offline"));
    assert.equal(session.online.value, true, "no longer listening");
    await new Promise((r) => setTimeout(r, 50)); // the recorder's stop event
  });
});
