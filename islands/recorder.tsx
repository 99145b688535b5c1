/// <reference lib="dom" />
import { useSignal } from "@preact/signals";
import { useEffect, useRef } from "preact/hooks";
import {
  type ChunkSink,
  ChunkUploader,
  completeSession,
  createSession,
  pickMimeType,
  type Session as UploadSession,
  type UploadProgress,
  Waker,
} from "../client/chunk_uploader.ts";
import {
  ChunkStore,
  holdRecordingLock,
  type PendingUpload,
  ResumeQueue,
} from "../client/outbox.ts";
import { PendingUploadList } from "../components/recording_parts.tsx";
import { formatBytes, formatDuration } from "../common/format.ts";

/** Props of the recorder. */
export interface RecorderProps {
  /** MediaRecorder timeslice: one chunk per this many ms. */
  timesliceMs: number;
}

type Source = "camera" | "screen" | "tab";
type Phase = "idle" | "starting" | "recording" | "finishing" | "done" | "error";

const SOURCES: { value: Source; label: string; hint: string }[] = [
  { value: "camera", label: "Camera", hint: "your webcam" },
  { value: "screen", label: "Screen or window", hint: "pick what to share" },
  { value: "tab", label: "This tab", hint: "records this page" },
];

const PHASE_TEXT: Record<Phase, string> = {
  idle: "Ready to record.",
  starting: "Asking for permission…",
  recording: "Recording",
  finishing: "Finishing the upload…",
  done: "Uploaded. Opening the recording…",
  error: "Stopped.",
};

interface Session {
  upload: UploadSession;
  recorder: MediaRecorder;
  uploader: ChunkUploader;
  tracks: MediaStreamTrack[];
  audio?: AudioContext;
  timer?: ReturnType<typeof setInterval>;
  /** The browser keeps this recording's chunks (IndexedDB) until acknowledged. */
  kept: boolean;
  /** Releases the recording's Web Lock (so a resume may take it over). */
  releaseLock(): void;
}

/** Detail of the `tapedeck:chunk` event sent on `window` for every chunk. */
export interface ChunkEventDetail {
  videoId: string;
  index: number;
  size: number;
  blob: Blob;
}

function supportProblem(): string | null {
  if (!globalThis.isSecureContext) {
    return "Recording needs a secure page: open this site over HTTPS or on localhost.";
  }
  if (!navigator.mediaDevices || typeof MediaRecorder === "undefined") {
    return "This browser cannot record media (no MediaRecorder or media devices).";
  }
  return null;
}

function describeMediaError(err: unknown): string {
  const e = err as DOMException;
  switch (e?.name) {
    case "NotAllowedError":
      return "Permission to record was refused. Allow it in the browser and try again.";
    case "NotFoundError":
      return "No camera, microphone or screen source was found.";
    case "NotReadableError":
      return "The device is busy or unavailable; close other apps using it and try again.";
    default:
      return `Could not start recording: ${e?.message ?? String(err)}`;
  }
}

async function openStream(
  source: Source,
  withMic: boolean,
): Promise<
  { stream: MediaStream; tracks: MediaStreamTrack[]; audio?: AudioContext }
> {
  const devices = navigator.mediaDevices;
  if (source === "camera") {
    const stream = await devices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: withMic,
    });
    return { stream, tracks: stream.getTracks() };
  }
  const options = source === "tab"
    ? {
      video: { frameRate: 30 },
      audio: false,
      preferCurrentTab: true,
      selfBrowserSurface: "include",
    }
    : { video: { frameRate: 30 }, audio: true, selfBrowserSurface: "exclude" };
  const display = await devices.getDisplayMedia(
    options as DisplayMediaStreamOptions,
  );
  if (!withMic) return { stream: display, tracks: display.getTracks() };
  let mic: MediaStream;
  try {
    mic = await devices.getUserMedia({ audio: true });
  } catch (err) {
    for (const track of display.getTracks()) track.stop();
    throw err;
  }
  const tracks = [...display.getTracks(), ...mic.getTracks()];
  const voices = [...display.getAudioTracks(), ...mic.getAudioTracks()];
  if (voices.length <= 1) {
    return {
      stream: new MediaStream([...display.getVideoTracks(), ...voices]),
      tracks,
    };
  }
  const audio = new AudioContext();
  const mix = audio.createMediaStreamDestination();
  for (const voice of voices) {
    audio.createMediaStreamSource(new MediaStream([voice])).connect(mix);
  }
  return {
    stream: new MediaStream([
      ...display.getVideoTracks(),
      ...mix.stream.getAudioTracks(),
    ]),
    tracks: [...tracks, ...mix.stream.getTracks()],
    audio,
  };
}

function stopRecorder(recorder: MediaRecorder): Promise<void> {
  if (recorder.state === "inactive") return Promise.resolve();
  return new Promise((resolve) => {
    recorder.addEventListener("stop", () => resolve(), { once: true });
    recorder.stop();
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function release(session: Session): void {
  clearInterval(session.timer);
  if (session.recorder.state !== "inactive") session.recorder.stop();
  for (const track of session.tracks) track.stop();
  session.audio?.close().catch(() => {});
}

/**
 * Records the camera, a screen or this tab (with the microphone if chosen)
 * and uploads it through the public API while recording: POST /create/, one
 * POST /add_data/<id>/ per chunk with its `X-Chunk-Index`, then
 * POST /complete_job/<id>/, and opens the recording's page.
 *
 * Every chunk is kept in IndexedDB (lib/chunk_store.ts) until the server
 * acknowledged it. When the page opens, it resumes by itself the upload of
 * every recording a closed, reloaded or crashed page left unfinished, and
 * lists them; waiting retries go at once when the browser is back online.
 * Each chunk, once kept, is also announced as a `tapedeck:chunk` event on
 * `window` ({@link ChunkEventDetail}).
 */
export default function Recorder({ timesliceMs }: RecorderProps) {
  const ready = useSignal(false);
  const problem = useSignal<string | null>(null);
  const source = useSignal<Source>("camera");
  const mic = useSignal(true);
  const phase = useSignal<Phase>("idle");
  const error = useSignal<string | null>(null);
  const mimeType = useSignal("");
  const videoId = useSignal<string | null>(null);
  const upload = useSignal<UploadProgress | null>(null);
  const elapsedMs = useSignal(0);
  const online = useSignal(true);
  const keepProblem = useSignal<string | null>(null);
  const pending = useSignal<PendingUpload[]>([]);
  const session = useRef<Session | null>(null);
  const preview = useRef<HTMLVideoElement>(null);
  const store = useRef<ChunkStore | null>(null);
  const queue = useRef<ResumeQueue | null>(null);
  const waker = useRef(new Waker());
  /** The recording this page is uploading itself (not resumed). */
  const liveId = useRef<string | null>(null);

  useEffect(() => {
    problem.value = supportProblem();
    online.value = navigator.onLine;
    let closed = false;
    const rescan = () => {
      queue.current?.scan().catch(() => {});
    };
    const onOnline = () => {
      online.value = true;
      waker.current.wake();
      rescan();
    };
    const onOffline = () => {
      online.value = false;
    };
    const onVisible = () => {
      if (document.visibilityState === "visible") rescan();
    };
    const warn = (event: BeforeUnloadEvent) => {
      if (phase.value === "recording" || phase.value === "finishing") {
        event.preventDefault();
      }
    };
    addEventListener("online", onOnline);
    addEventListener("offline", onOffline);
    addEventListener("beforeunload", warn);
    document.addEventListener("visibilitychange", onVisible);
    ChunkStore.open().then((opened) => {
      if (closed) return opened.close();
      store.current = opened;
      queue.current = new ResumeQueue(opened, {
        baseUrl: location.origin,
        waker: waker.current,
        isOwn: (id) => id === liveId.current,
        onChange(items) {
          pending.value = items;
        },
      });
      rescan();
    }).catch((err) => {
      keepProblem.value =
        `This browser cannot keep chunks (${err.message}): if this page closes while recording, what was not uploaded yet is lost.`;
    }).finally(() => {
      ready.value = true;
    });
    return () => {
      closed = true;
      removeEventListener("online", onOnline);
      removeEventListener("offline", onOffline);
      removeEventListener("beforeunload", warn);
      document.removeEventListener("visibilitychange", onVisible);
      if (session.current) release(session.current);
      queue.current?.close();
      store.current?.close();
    };
  }, []);

  /**
   * Gives a recording this page can no longer upload itself to the resume
   * list: once every chunk it has is kept, it drops its lock and rescans.
   */
  async function handOver(current: Session, ended: Promise<void>) {
    await Promise.race([ended, sleep(3000)]);
    current.uploader.flush();
    await current.uploader.kept();
    current.uploader.abort();
    if (liveId.current === current.upload.videoId) liveId.current = null;
    current.releaseLock();
    if (current.kept) {
      await queue.current?.scan(current.upload.videoId).catch(() => {});
    }
  }

  function fail(message: string) {
    error.value = message;
    phase.value = "error";
    if (preview.current) preview.current.srcObject = null;
    const current = session.current;
    if (current) {
      const ended = stopRecorder(current.recorder);
      release(current);
      handOver(current, ended);
    }
  }

  async function start() {
    if (phase.value !== "idle" && phase.value !== "error") return;
    error.value = null;
    upload.value = null;
    videoId.value = null;
    elapsedMs.value = 0;
    phase.value = "starting";
    let opened: Awaited<ReturnType<typeof openStream>>;
    try {
      opened = await openStream(source.value, mic.value);
    } catch (err) {
      fail(describeMediaError(err));
      return;
    }
    const type = pickMimeType((t) => MediaRecorder.isTypeSupported(t));
    mimeType.value = type || "the browser's default";
    let opening: UploadSession;
    try {
      opening = await createSession(location.origin, { maxAttempts: 5 });
    } catch (err) {
      for (const track of opened.tracks) track.stop();
      fail(`Could not open a recording session: ${(err as Error).message}`);
      return;
    }
    const id = opening.videoId;
    videoId.value = id;
    liveId.current = id;
    let releaseLock = () => {};
    let sink: ChunkSink | undefined;
    if (store.current) {
      try {
        releaseLock = await holdRecordingLock(id);
        const now = Date.now();
        await store.current.saveRecording({
          videoId: id,
          uploadToken: opening.uploadToken,
          mimeType: type,
          createdAt: now,
          updatedAt: now,
          started: false,
          stopped: false,
        });
        sink = store.current.sink(id);
      } catch (err) {
        keepProblem.value =
          `This recording's chunks cannot be kept in the browser (${
            (err as Error).message
          }): if this page closes, what was not uploaded yet is lost.`;
      }
    }
    const kept = !!sink;
    const uploader = new ChunkUploader(location.origin, opening, {
      sink,
      waker: waker.current,
      onProgress(progress) {
        upload.value = progress;
        if (progress.error && phase.value === "recording") {
          fail(`The upload stopped: ${progress.error}`);
        }
      },
      onChunk(index, blob) {
        const detail: ChunkEventDetail = {
          videoId: id,
          index,
          size: blob.size,
          blob,
        };
        dispatchEvent(new CustomEvent("tapedeck:chunk", { detail }));
      },
    });
    const recorder = new MediaRecorder(
      opened.stream,
      type ? { mimeType: type } : undefined,
    );
    const current: Session = {
      upload: opening,
      recorder,
      uploader,
      tracks: opened.tracks,
      audio: opened.audio,
      kept,
      releaseLock,
    };
    session.current = current;
    recorder.ondataavailable = (event) => uploader.push(event.data);
    let startedAt = 0;
    recorder.onstart = () => {
      if (kept) {
        store.current?.updateRecording(id, { started: true }).catch(() => {});
      }
      phase.value = "recording";
      current.timer = setInterval(() => {
        elapsedMs.value = performance.now() - startedAt;
      }, 200);
    };
    recorder.onerror = () =>
      fail("The browser stopped the recording with an error.");
    for (const track of opened.stream.getVideoTracks()) {
      track.addEventListener("ended", () => stop());
    }
    if (preview.current) preview.current.srcObject = opened.stream;
    startedAt = performance.now();
    recorder.start(timesliceMs);
  }

  async function stop() {
    const current = session.current;
    if (!current || phase.value !== "recording") return;
    phase.value = "finishing";
    await stopRecorder(current.recorder);
    release(current);
    if (preview.current) preview.current.srcObject = null;
    const id = current.upload.videoId;
    try {
      current.uploader.flush();
      await current.uploader.kept();
      if (current.kept) {
        // Best effort: without the flag a resume would still finish it.
        await store.current?.updateRecording(id, { stopped: true })
          .catch(() => {});
      }
      await current.uploader.drain();
      await completeSession(location.origin, current.upload, {
        waker: waker.current,
      });
    } catch (err) {
      fail(`The upload stopped: ${(err as Error).message}`);
      return;
    }
    if (current.kept) await store.current?.deleteRecording(id).catch(() => {});
    liveId.current = null;
    current.releaseLock();
    phase.value = "done";
    location.assign(`/videos/${current.upload.videoId}`);
  }

  function pendingAction(
    id: string,
    action: "leave-open" | "finish-after" | "finish-now" | "retry" | "discard",
  ) {
    const q = queue.current;
    if (!q) return;
    if (action === "leave-open") q.setFinish(id, false);
    else if (action === "finish-after") q.setFinish(id, true);
    else if (action === "finish-now") q.finishNow(id);
    else if (action === "retry") q.retry(id);
    else q.discard(id).catch(() => {});
  }

  const busy = phase.value === "starting" || phase.value === "recording" ||
    phase.value === "finishing" || phase.value === "done";
  const progress = upload.value;
  const behind = progress
    ? progress.recordedChunks - progress.uploadedChunks
    : 0;

  return (
    <section
      class="recorder"
      data-phase={phase.value}
      data-ready={String(ready.value)}
    >
      <h1>Record</h1>
      {problem.value && <p class="error" role="alert">{problem.value}</p>}
      <PendingUploadList
        items={pending.value}
        online={online.value}
        onAction={pendingAction}
      />
      <form
        class="recorder-form"
        onSubmit={(event) => {
          event.preventDefault();
          start();
        }}
      >
        <fieldset disabled={!ready.value || busy || !!problem.value}>
          <legend>Source</legend>
          {SOURCES.map((s) => (
            <label key={s.value} class="choice">
              <input
                type="radio"
                name="source"
                id={`source-${s.value}`}
                value={s.value}
                checked={source.value === s.value}
                onChange={() => {
                  source.value = s.value;
                }}
              />
              <span>{s.label}</span>
              <small class="muted">{s.hint}</small>
            </label>
          ))}
          <label class="choice">
            <input
              type="checkbox"
              name="mic"
              id="mic"
              checked={mic.value}
              onChange={(event) => {
                mic.value = event.currentTarget.checked;
              }}
            />
            <span>Microphone</span>
          </label>
        </fieldset>
        <div class="actions">
          <button
            type="submit"
            id="start"
            class="primary"
            disabled={!ready.value || busy || !!problem.value}
          >
            Start recording
          </button>
          <button
            type="button"
            id="stop"
            class="danger"
            disabled={phase.value !== "recording"}
            onClick={() => stop()}
          >
            Stop
          </button>
        </div>
      </form>

      <div
        class="recorder-status"
        id="recorder-status"
        role="status"
        aria-live="polite"
      >
        <p>
          <strong id="phase">{PHASE_TEXT[phase.value]}</strong>
          {phase.value === "recording" && (
            <span class="elapsed mono" id="elapsed">
              {formatDuration(elapsedMs.value / 1000)}
            </span>
          )}
        </p>
        {error.value && <p class="error" id="recorder-error">{error.value}</p>}
        {mimeType.value && <p class="muted small">Format: {mimeType.value}</p>}
        {progress && (
          <p
            class="lag"
            id="upload-lag"
            data-uploaded={progress.uploadedChunks}
            data-recorded={progress.recordedChunks}
          >
            Uploaded {progress.uploadedChunks} / recorded{" "}
            {progress.recordedChunks} chunks
            {" · "}
            {formatBytes(progress.uploadedBytes)} /{" "}
            {formatBytes(progress.recordedBytes)}
            {" · "}
            {behind === 0
              ? "up to date"
              : `${((behind * timesliceMs) / 1000).toFixed(0)} s behind`}
          </p>
        )}
        {!online.value &&
          (phase.value === "recording" || phase.value === "finishing") && (
          <p class="warning" id="offline-notice">
            Offline.{" "}
            {phase.value === "recording" ? "The recording goes on; its" : "The"}
            {" "}
            chunks are kept in this browser and sent as soon as the connection
            returns.
          </p>
        )}
        {progress?.retrying && (
          <p class="warning" id="upload-retry">
            Connection trouble, retrying ({progress.retries} so far):{" "}
            {progress.retrying}
          </p>
        )}
        {progress && progress.keptChunks > 0 && behind > 0 &&
          (phase.value === "recording" || phase.value === "finishing") && (
          <p
            class="muted small"
            id="kept-chunks"
            data-kept={progress.keptChunks}
          >
            {progress.keptChunks} chunk{progress.keptChunks === 1 ? "" : "s"}
            {" "}
            kept in this browser until the server has{" "}
            {progress.keptChunks === 1 ? "it" : "them"}: if this page closes,
            opening the recorder again uploads{" "}
            {progress.keptChunks === 1 ? "it" : "them"}.
          </p>
        )}
        {progress?.keepError && (
          <p class="warning small" id="keep-error">{progress.keepError}</p>
        )}
        {keepProblem.value && (
          <p class="warning small" id="keep-problem">{keepProblem.value}</p>
        )}
        {videoId.value && (
          <p class="small">
            Recording page:{" "}
            <a href={`/videos/${videoId.value}`}>{videoId.value}</a>
          </p>
        )}
      </div>
      <video class="preview" ref={preview} muted autoplay playsInline />
    </section>
  );
}
