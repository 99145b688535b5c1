/// <reference lib="dom" />
// Over 400 lines: the recorder page's one session object (media capture, MediaRecorder, outbox, upload lag) whose signals the island renders.
/**
 * The recorder page's logic, as signals the island renders: records the
 * camera, a screen or this tab and uploads it through the public API while
 * recording (create, one add_data per chunk with its index, complete_job),
 * then opens the recording's page. Every chunk stays in the outbox
 * (client/outbox.ts) until acknowledged, under the recording's Web Lock;
 * while open, the session resumes what closed pages left unfinished
 * (client/resume_queue.ts), and it announces each kept chunk as a
 * `tapedeck:chunk` event on `window` ({@link ChunkEventDetail}). The page's
 * APIs come through a {@link RecorderEnvironment}, so it runs in Deno too.
 * The `/record` island and the recorder SDK (client/sdk/recorder.ts) both
 * drive this one class.
 */

import { signal } from "@preact/signals-core";
import {
  type CapturedStream,
  describeMediaError,
  type MediaRecorderLike,
  pickMimeType,
  type Source,
  stopRecorder,
} from "./capture.ts";
import {
  type ChunkSink,
  ChunkUploader,
  type UploadProgress,
} from "./chunk_uploader.ts";
import type { KeptStore } from "./outbox.ts";
import {
  browserEnvironment,
  type RecorderEnvironment,
} from "./recorder_environment.ts";
import { holdRecordingLock } from "./recording_lock.ts";
import {
  type PendingAction,
  type PendingUpload,
  ResumeQueue,
} from "./resume_queue.ts";
import { Waker } from "./retry.ts";
import {
  completeSession,
  createSession,
  type Session as UploadSession,
} from "./session_api.ts";

/** Where the recorder stands. */
export type Phase =
  | "idle"
  | "starting"
  | "recording"
  | "finishing"
  | "done"
  | "error";

/** Detail of the `tapedeck:chunk` event sent on `window` for every chunk. */
export interface ChunkEventDetail {
  videoId: string;
  index: number;
  size: number;
  blob: Blob;
}

/** Settings of a {@link RecorderSession}. */
export interface RecorderSessionOptions {
  /** MediaRecorder timeslice: one chunk per this many ms. */
  timesliceMs: number;
  /** The element that previews what is recorded, when there is one. */
  preview?(): { srcObject: MediaProvider | null } | null;
  /** Default: {@link browserEnvironment}. */
  environment?: RecorderEnvironment;
  /** Sent with `create` (`Authorization: Bearer`) to a server with API_KEYS. */
  apiKey?: string;
}

/** One recording under way on this page. */
interface Capture {
  upload: UploadSession;
  recorder: MediaRecorderLike;
  uploader: ChunkUploader;
  tracks: MediaStreamTrack[];
  audio?: AudioContext;
  timer?: ReturnType<typeof setInterval>;
  /** The browser keeps this recording's chunks (IndexedDB) until acknowledged. */
  kept: boolean;
  /** Releases the recording's Web Lock (so a resume may take it over). */
  releaseLock(): void;
}

function release(capture: Capture): void {
  clearInterval(capture.timer);
  if (capture.recorder.state !== "inactive") capture.recorder.stop();
  for (const track of capture.tracks) track.stop();
  capture.audio?.close().catch(() => {});
}

/** The recorder page's state and actions (see the module notes). */
export class RecorderSession {
  /** The outbox was opened, or found unusable: the form may be used. */
  readonly ready = signal(false);
  /** Why this browser cannot record here. */
  readonly problem = signal<string | null>(null);
  readonly source = signal<Source>("camera");
  readonly mic = signal(true);
  readonly phase = signal<Phase>("idle");
  /** Why the last recording stopped, when it failed. */
  readonly error = signal<string | null>(null);
  /** The format being recorded, in words. */
  readonly mimeType = signal("");
  /** The recording this page records, once it has an id. */
  readonly videoId = signal<string | null>(null);
  readonly upload = signal<UploadProgress | null>(null);
  readonly elapsedMs = signal(0);
  readonly online = signal(true);
  /** Why chunks cannot be kept in the browser. */
  readonly keepProblem = signal<string | null>(null);
  /** The kept recordings this page resumes, for their list. */
  readonly pending = signal<PendingUpload[]>([]);
  readonly timesliceMs: number;
  #env: RecorderEnvironment;
  #apiKey?: string;
  #preview: () => { srcObject: MediaProvider | null } | null;
  #capture: Capture | null = null;
  #store: KeptStore | null = null;
  #queue: ResumeQueue | null = null;
  #waker = new Waker();
  /** The recording this page is uploading itself (not resumed). */
  #liveId: string | null = null;

  constructor(options: RecorderSessionOptions) {
    this.timesliceMs = options.timesliceMs;
    this.#env = options.environment ?? browserEnvironment();
    this.#apiKey = options.apiKey;
    this.#preview = options.preview ?? (() => null);
  }

  /** The session of the recording started last (its id and upload token). */
  get lastSession(): UploadSession | null {
    return this.#capture?.upload ?? null;
  }

  /** Whether a recording is being started, made or uploaded. */
  get busy(): boolean {
    const phase = this.phase.value;
    return phase === "starting" || phase === "recording" ||
      phase === "finishing" || phase === "done";
  }

  /**
   * Follows the page (online, offline, visibility, leaving) and opens the
   * outbox, then resumes what it holds. Returns the function that undoes it
   * all and stops a recording under way.
   */
  open(): () => void {
    const env = this.#env;
    this.problem.value = env.supportProblem();
    this.online.value = env.isOnline();
    let closed = false;
    const rescan = () => {
      this.#queue?.scan().catch(() => {});
    };
    const onOnline = () => {
      this.online.value = true;
      this.#waker.wake();
      rescan();
    };
    const onOffline = () => {
      this.online.value = false;
    };
    const onVisible = () => {
      if (env.document.visibilityState === "visible") rescan();
    };
    const warn = (event: Event) => {
      if (
        this.phase.value === "recording" || this.phase.value === "finishing"
      ) {
        event.preventDefault();
      }
    };
    env.window.addEventListener("online", onOnline);
    env.window.addEventListener("offline", onOffline);
    env.window.addEventListener("beforeunload", warn);
    env.document.addEventListener("visibilitychange", onVisible);
    env.openStore().then((opened) => {
      if (closed) return opened.close();
      this.#store = opened;
      this.#queue = new ResumeQueue(opened, {
        baseUrl: env.baseUrl,
        waker: this.#waker,
        isOwn: (id) => id === this.#liveId,
        onChange: (items) => {
          this.pending.value = items;
        },
      });
      rescan();
    }).catch((err) => {
      this.keepProblem.value =
        `This browser cannot keep chunks (${err.message}): if this page closes while recording, what was not uploaded yet is lost.`;
    }).finally(() => {
      this.ready.value = true;
    });
    return () => {
      closed = true;
      env.window.removeEventListener("online", onOnline);
      env.window.removeEventListener("offline", onOffline);
      env.window.removeEventListener("beforeunload", warn);
      env.document.removeEventListener("visibilitychange", onVisible);
      if (this.#capture) release(this.#capture);
      this.#queue?.close();
      this.#store?.close();
    };
  }

  /** Asks for the source, opens a session and starts recording. */
  async start(): Promise<void> {
    const phase = this.phase.value;
    if (phase !== "idle" && phase !== "error" && phase !== "done") return;
    const env = this.#env;
    this.error.value = null;
    this.upload.value = null;
    this.videoId.value = null;
    this.elapsedMs.value = 0;
    this.phase.value = "starting";
    let opened: CapturedStream;
    try {
      opened = await env.openStream(this.source.value, this.mic.value);
    } catch (err) {
      this.#fail(describeMediaError(err));
      return;
    }
    const type = pickMimeType((t) => env.isTypeSupported(t));
    this.mimeType.value = type || "the browser's default";
    let opening: UploadSession;
    try {
      opening = await createSession(env.baseUrl, {
        maxAttempts: 5,
        apiKey: this.#apiKey,
      });
    } catch (err) {
      for (const track of opened.tracks) track.stop();
      this.#fail(
        `Could not open a recording session: ${(err as Error).message}`,
      );
      return;
    }
    const id = opening.videoId;
    this.videoId.value = id;
    this.#liveId = id;
    let releaseLock = () => {};
    let sink: ChunkSink | undefined;
    if (this.#store) {
      try {
        releaseLock = await holdRecordingLock(id);
        const now = Date.now();
        await this.#store.saveRecording({
          videoId: id,
          server: env.baseUrl,
          uploadToken: opening.uploadToken,
          mimeType: type,
          createdAt: now,
          updatedAt: now,
          started: false,
          stopped: false,
        });
        sink = this.#store.sink(id);
      } catch (err) {
        this.keepProblem.value =
          `This recording's chunks cannot be kept in the browser (${
            (err as Error).message
          }): if this page closes, what was not uploaded yet is lost.`;
      }
    }
    const kept = !!sink;
    const uploader = new ChunkUploader(env.baseUrl, opening, {
      sink,
      waker: this.#waker,
      onProgress: (progress) => {
        this.upload.value = progress;
        if (progress.error && this.phase.value === "recording") {
          this.#fail(`The upload stopped: ${progress.error}`);
        }
      },
      onChunk(index, blob) {
        const detail: ChunkEventDetail = {
          videoId: id,
          index,
          size: blob.size,
          blob,
        };
        env.window.dispatchEvent(
          new CustomEvent("tapedeck:chunk", { detail }),
        );
      },
    });
    const recorder = env.createRecorder(opened.stream, type);
    const capture: Capture = {
      upload: opening,
      recorder,
      uploader,
      tracks: opened.tracks,
      audio: opened.audio,
      kept,
      releaseLock,
    };
    this.#capture = capture;
    recorder.ondataavailable = (event) => uploader.push(event.data);
    let startedAt = 0;
    recorder.onstart = () => {
      if (kept) {
        this.#store?.updateRecording(id, { started: true }).catch(() => {});
      }
      this.phase.value = "recording";
      capture.timer = setInterval(() => {
        this.elapsedMs.value = performance.now() - startedAt;
      }, 200);
    };
    recorder.onerror = () =>
      this.#fail("The browser stopped the recording with an error.");
    for (const track of opened.stream.getVideoTracks()) {
      track.addEventListener("ended", () => this.stop());
    }
    this.#showPreview(opened.stream);
    startedAt = performance.now();
    recorder.start(this.timesliceMs);
  }

  /**
   * Stops recording, waits until every chunk is uploaded, completes the
   * session and opens the recording's page.
   */
  async stop(): Promise<void> {
    const capture = this.#capture;
    if (!capture || this.phase.value !== "recording") return;
    this.phase.value = "finishing";
    await stopRecorder(capture.recorder);
    release(capture);
    this.#showPreview(null);
    const id = capture.upload.videoId;
    try {
      capture.uploader.flush();
      await capture.uploader.kept();
      if (capture.kept) {
        // Best effort: without the flag a resume would still finish it.
        await this.#store?.updateRecording(id, { stopped: true })
          .catch(() => {});
      }
      await capture.uploader.drain();
      await completeSession(this.#env.baseUrl, capture.upload, {
        waker: this.#waker,
      });
    } catch (err) {
      this.#fail(`The upload stopped: ${(err as Error).message}`);
      return;
    }
    if (capture.kept) {
      await this.#store?.deleteRecording(id).catch(() => {});
    }
    this.#liveId = null;
    capture.releaseLock();
    this.phase.value = "done";
    this.#env.navigate?.(`/videos/${capture.upload.videoId}`);
  }

  /** Does what the user asked of a recording in the resumed list. */
  pendingAction(id: string, action: PendingAction): void {
    const queue = this.#queue;
    if (!queue) return;
    if (action === "leave-open") queue.setFinish(id, false);
    else if (action === "finish-after") queue.setFinish(id, true);
    else if (action === "finish-now") queue.finishNow(id);
    else if (action === "retry") queue.retry(id);
    else queue.discard(id).catch(() => {});
  }

  #showPreview(stream: MediaStream | null): void {
    const video = this.#preview();
    if (video) video.srcObject = stream;
  }

  #fail(message: string): void {
    this.error.value = message;
    this.phase.value = "error";
    this.#showPreview(null);
    const capture = this.#capture;
    if (capture) {
      const ended = stopRecorder(capture.recorder);
      release(capture);
      this.#handOver(capture, ended);
    }
  }

  /**
   * Gives a recording this page can no longer upload itself to the resume
   * list: once every chunk it has is kept, it drops its lock and rescans.
   */
  async #handOver(capture: Capture, ended: Promise<void>): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      ended,
      new Promise((resolve) => timer = setTimeout(resolve, 3000)),
    ]);
    clearTimeout(timer);
    capture.uploader.flush();
    await capture.uploader.kept();
    capture.uploader.abort();
    if (this.#liveId === capture.upload.videoId) this.#liveId = null;
    capture.releaseLock();
    if (capture.kept) {
      await this.#queue?.scan(capture.upload.videoId).catch(() => {});
    }
  }
}
