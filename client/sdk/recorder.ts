/// <reference lib="dom" />
// Over 400 lines: the SDK is one ES module (/sdk/recorder.js) with its public types and docs; the recording logic it wraps is client/recorder_session.ts.
/**
 * tapedeck's recorder SDK: one ES module, served at `/sdk/recorder.js` with
 * its types at `/sdk/recorder.d.ts` (built by tools/build_sdk.ts), that lets
 * a page on any origin, or a browser extension that ships a copy of it,
 * record the camera, a screen or a tab and upload it to a tapedeck server
 * while recording:
 *
 * ```js
 * import { createRecorder } from "https://tapedeck.example/sdk/recorder.js";
 * const rec = await createRecorder({ source: "camera" });
 * rec.on("progress", (p) => console.log(p.uploadedChunks, "/", p.recordedChunks));
 * await rec.start();
 * // ... later
 * const { videoId } = await rec.stop();
 * const { status } = await rec.waitForProcessing(videoId); // "complete"
 * ```
 *
 * Every chunk is kept in the page's IndexedDB until the server has it. A
 * recorder created later on the same origin (after a reload, a crash of the
 * tab, a lost connection) resumes what is left, sends only what the server
 * lacks, and completes it (`pending` events say how it goes). It is the
 * `/record` page's own code (client/recorder_session.ts) without the page.
 *
 * Only what this file declares is public: tools/sdk_types.ts emits the
 * `.d.ts` from this file alone, so every exported type is written here
 * (which is why the file is a little over the usual length).
 */

import { effect } from "@preact/signals-core";
import { RecorderSession } from "../recorder_session.ts";
import { browserEnvironment } from "../recorder_environment.ts";
import { fetchStatus } from "../session_api.ts";

/** The SDK's version; the server also serves each build under its content hash. */
export const SDK_VERSION: string = "1.0.0";

/** What to record. */
export type RecorderSource = "camera" | "screen" | "tab";

/** Where the recorder stands. */
export type RecorderPhase =
  | "idle"
  | "starting"
  | "recording"
  | "finishing"
  | "done"
  | "error";

/** Settings of {@link createRecorder}. */
export interface RecorderOptions {
  /**
   * The tapedeck server, such as `"https://tapedeck.example"`. Default: the
   * origin this module was loaded from; required for a copy of the module
   * shipped inside an extension.
   */
  server?: string;
  /** Default `"camera"`. `"screen"` and `"tab"` need a click to start. */
  source?: RecorderSource;
  /** Record the microphone too (default true). */
  microphone?: boolean;
  /** One chunk is uploaded per this many ms of recording (default 1000). */
  timesliceMs?: number;
  /** For a server with `API_KEYS`: sent when a recording is created. */
  apiKey?: string;
  /** A `<video>` element that previews what is being recorded. */
  preview?: HTMLVideoElement | null;
}

/** The recorder's state, as the `status` event and {@link TapedeckRecorder.status} give it. */
export interface RecorderStatus {
  phase: RecorderPhase;
  /** The recording being made (or made last). */
  videoId: string | null;
  /** Why the last recording stopped, when it failed. */
  error: string | null;
  /** The format being recorded. */
  mimeType: string;
  online: boolean;
  /** Why this browser cannot record here (no MediaRecorder, not HTTPS). */
  problem: string | null;
  /** Why chunks cannot be kept in the browser (then a reload loses what was not sent). */
  keepProblem: string | null;
}

/** Upload counters of the recording under way (the `progress` event). */
export interface RecorderProgress {
  recordedChunks: number;
  recordedBytes: number;
  uploadedChunks: number;
  uploadedBytes: number;
  /** Chunks kept in IndexedDB that the server has not acknowledged yet. */
  keptChunks: number;
  /** Failed tries so far. */
  retries: number;
  /** Why the last try failed, while a chunk waits to be sent again. */
  retrying?: string;
  /** Why a chunk could not be kept in IndexedDB. */
  keepError?: string;
  /** Set once the upload stopped for good. */
  error?: string;
}

/** Where the resume of a kept recording stands. */
export type PendingState =
  | "queued"
  | "elsewhere"
  | "checking"
  | "uploading"
  | "finishing"
  | "done"
  | "left-open"
  | "error";

/** A recording this origin kept and is resuming (the `pending` event). */
export interface PendingRecording {
  videoId: string;
  /** `stopped`: it had stopped; `interrupted`: the page went away while recording. */
  kind: "stopped" | "interrupted";
  state: PendingState;
  /** Complete it once every kept chunk is on the server. */
  finish: boolean;
  chunksLeft: number;
  bytesLeft: number;
  uploaded: number;
  skipped: number;
  retries: number;
  retrying?: string;
  /** Indexes the server lacks and this browser no longer has. */
  gaps: number[];
  /** The server's status once done. */
  status?: string;
  error?: string;
}

/** What may be done with a kept recording. */
export type PendingAction =
  | "leave-open"
  | "finish-after"
  | "finish-now"
  | "retry"
  | "discard";

/** A stopped recording: every chunk is on the server and processing started. */
export interface RecordingResult {
  videoId: string;
  /** The session's upload token (needed when the server requires it). */
  uploadToken?: string;
  server: string;
  /** `GET` it for the status (`check_status`). */
  statusUrl: string;
  /** `GET` it for the finished files (`video`). */
  videoUrl: string;
  /** The recording's page on the server. */
  pageUrl: string;
}

/** A recording's status as `check_status` answers it. */
export interface ProcessingStatus {
  videoId: string;
  status: "recording" | "processing" | "complete" | "failed";
  /** 0 to 1 while processing. */
  progress?: number;
  stage?: string;
  bytes_received?: number;
  chunks_received?: number;
  duration_s?: number;
  error?: string;
}

/** Settings of {@link TapedeckRecorder.waitForProcessing}. */
export interface WaitOptions {
  /** Between two status checks (default 1000 ms). */
  intervalMs?: number;
  /** Give up (reject) after this long (default: never). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** The recording's upload token, for a server with private recordings. */
  uploadToken?: string;
}

/** The events of a {@link TapedeckRecorder} and their `detail`. */
export interface RecorderEventMap {
  status: RecorderStatus;
  progress: RecorderProgress;
  pending: PendingRecording[];
  processing: ProcessingStatus;
}

function defaultServer(): string {
  const origin = new URL(import.meta.url).origin;
  if (/^https?:/.test(origin)) return origin;
  throw new Error(
    'Say which tapedeck server to use: createRecorder({ server: "https://..." }).',
  );
}

/**
 * Records and uploads to one tapedeck server (see the module notes). Events
 * (`on(type, listener)`, or `addEventListener` with a `CustomEvent` whose
 * `detail` is the value): `status`, `progress`, `pending`, `processing`.
 */
export class TapedeckRecorder extends EventTarget {
  /** The server's URL, without a trailing slash. */
  readonly server: string;
  /** Resolves once the outbox is open and kept recordings are being resumed. */
  readonly ready: Promise<void>;
  #session: RecorderSession;
  #stops: (() => void)[] = [];

  /** Prefer {@link createRecorder}, which waits for {@link ready}. */
  constructor(options: RecorderOptions = {}) {
    super();
    this.server = (options.server ?? defaultServer()).replace(/\/+$/, "");
    const preview = options.preview ?? null;
    const session = new RecorderSession({
      timesliceMs: options.timesliceMs ?? 1000,
      apiKey: options.apiKey,
      preview: () => preview,
      environment: browserEnvironment({
        baseUrl: this.server,
        navigate: false,
      }),
    });
    this.#session = session;
    session.source.value = options.source ?? "camera";
    session.mic.value = options.microphone ?? true;
    this.#stops.push(session.open());
    this.#stops.push(effect(() => this.#emit("status", this.#status())));
    this.#stops.push(effect(() => {
      const progress = session.upload.value;
      if (progress) this.#emit("progress", { ...progress });
    }));
    this.#stops.push(effect(() => {
      const items: PendingRecording[] = session.pending.value;
      this.#emit("pending", items);
    }));
    this.ready = this.#until(() => session.ready.value);
  }

  /** The state now. */
  get status(): RecorderStatus {
    return this.#status();
  }

  /** The upload counters of the recording under way, once it has any. */
  get progress(): RecorderProgress | null {
    const progress = this.#session.upload.value;
    return progress ? { ...progress } : null;
  }

  /** The kept recordings being resumed. */
  get pending(): PendingRecording[] {
    return this.#session.pending.value;
  }

  /** Milliseconds recorded so far. */
  get elapsedMs(): number {
    return this.#session.elapsedMs.value;
  }

  /** What the next {@link start} records. */
  get source(): RecorderSource {
    return this.#session.source.value;
  }
  set source(value: RecorderSource) {
    this.#session.source.value = value;
  }

  /** Whether the next {@link start} records the microphone. */
  get microphone(): boolean {
    return this.#session.mic.value;
  }
  set microphone(value: boolean) {
    this.#session.mic.value = value;
  }

  /**
   * Asks for the source, opens a recording on the server and starts
   * recording; resolves with its id once recording, rejects with a sentence
   * when it cannot start.
   */
  async start(): Promise<string> {
    const session = this.#session;
    await this.ready;
    if (session.problem.value) throw new Error(session.problem.value);
    await session.start();
    await this.#until(() => session.phase.value !== "starting");
    if (session.phase.value !== "recording") {
      throw new Error(session.error.value ?? "The recording did not start.");
    }
    return session.videoId.value!;
  }

  /**
   * Stops recording, waits until every chunk is on the server and
   * completes the recording (processing starts). Rejects when the upload
   * could not finish: the chunks stay kept and a later recorder resumes them.
   */
  async stop(): Promise<RecordingResult> {
    const session = this.#session;
    await this.#until(() => session.phase.value !== "starting");
    await session.stop();
    const done = session.lastSession;
    if (session.phase.value !== "done" || !done) {
      throw new Error(session.error.value ?? "Nothing is being recorded.");
    }
    const id = done.videoId;
    return {
      videoId: id,
      uploadToken: done.uploadToken,
      server: this.server,
      statusUrl: `${this.server}/check_status/${id}/`,
      videoUrl: `${this.server}/video/${id}/`,
      pageUrl: `${this.server}/videos/${id}`,
    };
  }

  /**
   * Polls the recording's status until it is `complete` or `failed` (a
   * `processing` event per check) and resolves with the last one.
   */
  async waitForProcessing(
    videoId: string,
    options: WaitOptions = {},
  ): Promise<ProcessingStatus> {
    const deadline = Date.now() + (options.timeoutMs ?? Infinity);
    const uploadToken = options.uploadToken ??
      (this.#session.lastSession?.videoId === videoId
        ? this.#session.lastSession.uploadToken
        : undefined);
    for (;;) {
      const body = await fetchStatus(this.server, { videoId, uploadToken }, {
        signal: options.signal,
      });
      const status = { ...body, videoId } as ProcessingStatus;
      this.#emit("processing", status);
      if (status.status === "complete" || status.status === "failed") {
        return status;
      }
      if (Date.now() > deadline) {
        throw new Error(`Recording ${videoId} is still ${status.status}.`);
      }
      await new Promise((r) => setTimeout(r, options.intervalMs ?? 1000));
      options.signal?.throwIfAborted();
    }
  }

  /** Does what is asked with a kept recording (see {@link PendingAction}). */
  pendingAction(videoId: string, action: PendingAction): void {
    this.#session.pendingAction(videoId, action);
  }

  /** Calls `listener` with each event's detail; returns the function that stops it. */
  on<K extends keyof RecorderEventMap>(
    type: K,
    listener: (detail: RecorderEventMap[K]) => void,
  ): () => void {
    const handler = (event: Event) =>
      listener((event as CustomEvent<RecorderEventMap[K]>).detail);
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  /** Stops a recording under way and the resumes (kept chunks stay kept). */
  close(): void {
    for (const stop of this.#stops.splice(0).reverse()) stop();
  }

  #status(): RecorderStatus {
    const s = this.#session;
    return {
      phase: s.phase.value,
      videoId: s.videoId.value,
      error: s.error.value,
      mimeType: s.mimeType.value,
      online: s.online.value,
      problem: s.problem.value,
      keepProblem: s.keepProblem.value,
    };
  }

  #emit<K extends keyof RecorderEventMap>(
    type: K,
    detail: RecorderEventMap[K],
  ): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Resolves once `check` holds (it reads signals). */
  #until(check: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      let done = false;
      const dispose: () => void = effect(() => {
        if (!done && check()) {
          done = true;
          queueMicrotask(() => dispose());
          resolve();
        }
      });
    });
  }
}

/**
 * Makes a recorder for a tapedeck server and resolves once it is ready
 * (its outbox open, kept recordings being resumed).
 */
export async function createRecorder(
  options: RecorderOptions = {},
): Promise<TapedeckRecorder> {
  const recorder = new TapedeckRecorder(options);
  await recorder.ready;
  return recorder;
}
