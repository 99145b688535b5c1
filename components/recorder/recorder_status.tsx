import type { Phase, RecorderSession } from "../../client/recorder_session.ts";
import { formatBytes, formatDuration } from "../../common/format.ts";

const PHASE_TEXT: Record<Phase, string> = {
  idle: "Ready to record.",
  starting: "Asking for permission…",
  recording: "Recording",
  finishing: "Finishing the upload…",
  done: "Uploaded. Opening the recording…",
  error: "Stopped.",
};

/**
 * What the recorder is doing: phase and time, format, how far the upload
 * is behind, connection trouble, chunks kept in the browser, and the
 * recording's page.
 */
export function RecorderStatus({ session }: { session: RecorderSession }) {
  const phase = session.phase.value;
  const progress = session.upload.value;
  const behind = progress
    ? progress.recordedChunks - progress.uploadedChunks
    : 0;
  const videoId = session.videoId.value;
  return (
    <div
      class="recorder-status"
      id="recorder-status"
      role="status"
      aria-live="polite"
    >
      <p>
        <strong id="phase">{PHASE_TEXT[phase]}</strong>
        {phase === "recording" && (
          <span class="elapsed mono" id="elapsed">
            {formatDuration(session.elapsedMs.value / 1000)}
          </span>
        )}
      </p>
      {session.error.value && (
        <p class="error" id="recorder-error">{session.error.value}</p>
      )}
      {session.mimeType.value && (
        <p class="muted small">Format: {session.mimeType.value}</p>
      )}
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
            : `${((behind * session.timesliceMs) / 1000).toFixed(0)} s behind`}
        </p>
      )}
      {!session.online.value &&
        (phase === "recording" || phase === "finishing") && (
        <p class="warning" id="offline-notice">
          Offline.{" "}
          {phase === "recording" ? "The recording goes on; its" : "The"}{" "}
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
        (phase === "recording" || phase === "finishing") && (
        <p
          class="muted small"
          id="kept-chunks"
          data-kept={progress.keptChunks}
        >
          {progress.keptChunks} chunk{progress.keptChunks === 1 ? "" : "s"}{" "}
          kept in this browser until the server has{" "}
          {progress.keptChunks === 1 ? "it" : "them"}: if this page closes,
          opening the recorder again uploads{" "}
          {progress.keptChunks === 1 ? "it" : "them"}.
        </p>
      )}
      {progress?.keepError && (
        <p class="warning small" id="keep-error">{progress.keepError}</p>
      )}
      {session.keepProblem.value && (
        <p class="warning small" id="keep-problem">
          {session.keepProblem.value}
        </p>
      )}
      {videoId && (
        <p class="small">
          Recording page: <a href={`/videos/${videoId}`}>{videoId}</a>
        </p>
      )}
    </div>
  );
}
