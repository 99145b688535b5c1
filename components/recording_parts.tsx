import { useSignal } from "@preact/signals";
import type { LiveState } from "../client/live_client.ts";
import {
  ACTIVE_STATES,
  type PendingUpload,
  recordingAction,
} from "../client/outbox.ts";
import {
  formatAgo,
  formatBytes,
  formatDuration,
  formatPercent,
  shortId,
} from "../common/format.ts";
import type { RecordingStatus } from "../lib/kv/keys.ts";
import {
  mediaUrl,
  type RecordingView,
  videoType,
} from "../common/recording_view.ts";

/** The status of a recording as a coloured label. */
export function StatusBadge({ status }: { status: RecordingStatus }) {
  return (
    <span class={`badge badge-${status}`} data-status={status}>{status}</span>
  );
}

/** A processing progress bar with its percentage (and stage, if known). */
export function ProgressBar(
  { value, stage }: { value: number | undefined; stage?: string },
) {
  const percent = formatPercent(value);
  return (
    <div class="progress">
      <progress max={1} value={value ?? 0} aria-label={`Processing ${percent}`}>
        {percent}
      </progress>
      <span class="progress-text">
        {stage ? `${percent} · ${stage}` : percent}
      </span>
    </div>
  );
}

/** Whether the page follows live changes, for the corner indicator. */
export type LiveIndicatorState = LiveState | "static";

const LIVE_LABELS: Record<LiveIndicatorState, string> = {
  static: "not live",
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  closed: "not live",
};

/** A small dot and word saying whether updates are arriving. */
export function LiveIndicator({ state }: { state: LiveIndicatorState }) {
  return (
    <span class="live-state" data-live={state} role="status">
      {LIVE_LABELS[state]}
    </span>
  );
}

/** The finished recording: MP4 first, the WebM (or MKV) as the second source, poster. */
export function Player({ recording }: { recording: RecordingView }) {
  const sources = [...recording.files].sort((a, b) =>
    Number(!a.endsWith(".mp4")) - Number(!b.endsWith(".mp4"))
  );
  return (
    <video
      class="player"
      id="player"
      controls
      preload="metadata"
      playsInline
      poster={recording.poster
        ? mediaUrl(recording.id, recording.poster)
        : undefined}
    >
      {sources.map((name) => (
        <source
          key={name}
          src={mediaUrl(recording.id, name)}
          type={videoType(name)}
        />
      ))}
      <p>
        Your browser cannot play this video here;{" "}
        <a href={mediaUrl(recording.id, sources[0] ?? "")}>download it</a>.
      </p>
    </video>
  );
}

/** The finished files with sizes and download links. */
export function FileList({ recording }: { recording: RecordingView }) {
  const names = [
    ...recording.files,
    ...(recording.poster ? [recording.poster] : []),
  ];
  const sizes = recording.media?.sizes ?? {};
  return (
    <ul class="files">
      {names.map((name) => (
        <li key={name}>
          <a href={mediaUrl(recording.id, name)} download={name}>{name}</a>
          <span class="muted">
            {sizes[name] !== undefined ? formatBytes(sizes[name]) : ""}
          </span>
        </li>
      ))}
    </ul>
  );
}

/** What ffprobe found: duration, resolution, codecs, container and sizes. */
export function MediaFactsTable({ recording }: { recording: RecordingView }) {
  const media = recording.media;
  if (!media) return <p class="muted">No media details were recorded.</p>;
  const total = Object.values(media.sizes).reduce((a, b) => a + b, 0);
  const rows: [string, string][] = [
    ["Duration", formatDuration(media.durationS)],
    [
      "Resolution",
      media.video ? `${media.video.width} × ${media.video.height}` : "no video",
    ],
    ["Video codec", media.video?.codec ?? "none"],
    [
      "Audio codec",
      media.audio
        ? [
          media.audio.codec,
          media.audio.channels ? `${media.audio.channels} ch` : "",
          media.audio.sampleRate ? `${media.audio.sampleRate} Hz` : "",
        ].filter(Boolean).join(", ")
        : "none",
    ],
    ["Container", media.container],
    [
      "MP4 made by",
      [
        media.mp4Video && `video ${media.mp4Video}`,
        media.mp4Audio && `audio ${media.mp4Audio}`,
      ]
        .filter(Boolean).join(", ") || "–",
    ],
    [
      "Size",
      `${formatBytes(total)} in ${Object.keys(media.sizes).length} files`,
    ],
  ];
  return (
    <dl class="facts" id="media-facts">
      {rows.map(([label, value]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/**
 * The one-line summary of the recorder's resumed uploads, e.g. "Resuming 1
 * recording: 3 chunks left"; null when there is nothing to say.
 */
export function resumeHeadline(
  items: PendingUpload[],
  online: boolean,
): string | null {
  const active = items.filter((i) => ACTIVE_STATES.has(i.state));
  if (active.length > 0) {
    const left = active.reduce((n, i) => n + i.chunksLeft, 0);
    const waiting = !online || active.some((i) => i.retrying);
    return `Resuming ${plural(active.length, "recording")}: ${
      plural(left, "chunk")
    } left${waiting ? " · waiting for the connection" : ""}`;
  }
  const failed = items.filter((i) => i.state === "error").length;
  if (failed > 0) {
    return `${plural(failed, "recording")} could not be resumed`;
  }
  const resumed =
    items.filter((i) => i.state === "done" || i.state === "left-open").length;
  if (resumed > 0) {
    return `Resumed ${
      plural(resumed, "recording")
    }: every kept chunk is on the server`;
  }
  if (items.length > 0) {
    return `${plural(items.length, "recording")} in another tab`;
  }
  return null;
}

function pendingText(item: PendingUpload): string {
  const kept = `${plural(item.chunksLeft, "chunk")} kept in this browser (${
    formatBytes(item.bytesLeft)
  })`;
  const before = item.fromThisPage
    ? "Its upload stopped on this page."
    : item.kind === "interrupted"
    ? "Was still recording when the page closed, so it cannot record any more."
    : "Was stopped before the page closed.";
  const then = item.finish
    ? item.kind === "interrupted"
      ? "then finishing it as a video with everything the server received"
      : "then finishing it"
    : "then leaving it unfinished, as you chose";
  switch (item.state) {
    case "queued":
      return `${before} Waiting to resume its upload…`;
    case "elsewhere":
      return "Being recorded or uploaded in another tab; this page takes over if that tab closes.";
    case "checking":
      return `${before} Asking the server which chunks it already has…`;
    case "uploading":
      return `${before} Uploading the ${kept}, ${then}.`;
    case "finishing":
      return `${before} Every chunk is on the server; finishing it as a video…`;
    case "left-open":
      return "Every kept chunk is on the server. Left unfinished, as you chose: finish it here or from the recordings list.";
    case "error":
      return item.fromThisPage
        ? before
        : `${before} Its upload could not be resumed.`;
    case "done":
      switch (item.status) {
        case "empty":
          return "Nothing was recorded before the page closed: there is nothing to finish.";
        case "complete":
          return "Done: the server already had every chunk and the video is ready.";
        case "failed":
          return "Every chunk is on the server, but making the video failed: see its page.";
        default:
          return item.uploaded + item.skipped > 0 || item.kind === "stopped"
            ? `Done: every chunk is on the server (${item.uploaded} sent now) and the video is being made.`
            : "Done: it is being made into a video.";
      }
  }
}

/** Props of {@link PendingUploadList}. */
export interface PendingUploadListProps {
  items: PendingUpload[];
  online: boolean;
  onAction(
    videoId: string,
    action: "leave-open" | "finish-after" | "finish-now" | "retry" | "discard",
  ): void;
}

/**
 * The recorder's list of recordings whose upload it resumed (after a
 * reload, a crashed tab or a lost connection), with what it is doing.
 */
export function PendingUploadList(
  { items, online, onAction }: PendingUploadListProps,
) {
  const headline = resumeHeadline(items, online);
  if (!headline) return null;
  const active = items.filter((i) => ACTIVE_STATES.has(i.state));
  return (
    <section
      class="pending"
      id="resume-status"
      data-active={active.length}
      data-failed={items.filter((i) => i.state === "error").length}
      data-chunks-left={active.reduce((n, i) => n + i.chunksLeft, 0)}
    >
      <h2 id="resume-headline">{headline}</h2>
      <ul class="pending-list">
        {items.map((item) => (
          <li
            key={item.videoId}
            class="pending-item"
            data-id={item.videoId}
            data-state={item.state}
            data-kind={item.kind}
          >
            <p>
              <a href={`/videos/${item.videoId}`} class="mono">
                {shortId(item.videoId)}
              </a>{" "}
              <span class="pending-text">{pendingText(item)}</span>
            </p>
            {item.retrying && (
              <p class="warning small">
                {online ? "Connection trouble" : "Offline"}, trying again (
                {item.retries} so far): {item.retrying}
              </p>
            )}
            {item.gaps.length > 0 && (
              <p class="warning small">
                The server lacks {plural(item.gaps.length, "chunk")}{" "}
                ({item.gaps.slice(0, 10).join(", ")}
                {item.gaps.length > 10 ? ", …" : ""}) that this browser no
                longer has; the video skips them.
              </p>
            )}
            {item.error && <p class="error small">{item.error}</p>}
            <div class="pending-actions">
              {item.kind === "interrupted" && item.finish &&
                (item.state === "queued" || item.state === "checking" ||
                  item.state === "uploading") &&
                (
                  <button
                    type="button"
                    class="small-button"
                    data-action="leave-open"
                    onClick={() => onAction(item.videoId, "leave-open")}
                  >
                    Don't finish it
                  </button>
                )}
              {!item.finish && ACTIVE_STATES.has(item.state) && (
                <button
                  type="button"
                  class="small-button"
                  data-action="finish-after"
                  onClick={() => onAction(item.videoId, "finish-after")}
                >
                  Finish it after the upload
                </button>
              )}
              {item.state === "left-open" && (
                <>
                  <button
                    type="button"
                    class="small-button primary"
                    data-action="finish-now"
                    onClick={() => onAction(item.videoId, "finish-now")}
                  >
                    Finish now
                  </button>
                  <button
                    type="button"
                    class="small-button"
                    data-action="discard"
                    title="Every chunk is on the server; this only stops listing it here"
                    onClick={() => onAction(item.videoId, "discard")}
                  >
                    Stop listing it here
                  </button>
                </>
              )}
              {item.state === "error" && (
                <>
                  <button
                    type="button"
                    class="small-button"
                    data-action="retry"
                    onClick={() => onAction(item.videoId, "retry")}
                  >
                    Try again
                  </button>
                  <button
                    type="button"
                    class="small-button danger"
                    data-action="discard"
                    onClick={() => onAction(item.videoId, "discard")}
                  >
                    Discard the kept chunks
                  </button>
                </>
              )}
            </div>
          </li>
        ))}
      </ul>
    </section>
  );
}

/** A recording with a chunk newer than this asks before being finished. */
const ACTIVE_RECORDING_MS = 20_000;

/** Where a recording's Finish or Retry button stands. */
export interface ActionState {
  pending?: "finish" | "retry";
  /** Waiting for the user to confirm finishing a recording that is still receiving chunks. */
  confirm?: boolean;
  error?: string;
  message?: string;
}

/**
 * The Finish and Retry buttons' state for islands: `run` does what a
 * button asks (POST /complete_job/ or /retry_job/, see
 * {@link recordingAction}); the live feed then shows the new status.
 */
export function useRecordingActions() {
  const states = useSignal<Record<string, ActionState>>({});
  const set = (id: string, state: ActionState) => {
    states.value = { ...states.value, [id]: state };
  };
  async function run(
    rec: { id: string; lastChunkAt?: number },
    action: RecordingActionName,
    now: number,
  ): Promise<void> {
    if (action === "cancel") return set(rec.id, {});
    if (
      action === "finish" && rec.lastChunkAt !== undefined &&
      now - rec.lastChunkAt < ACTIVE_RECORDING_MS
    ) {
      return set(rec.id, { confirm: true });
    }
    const kind = action === "retry" ? "retry" : "finish";
    set(rec.id, { pending: kind });
    try {
      const message = await recordingAction(kind, rec.id);
      set(rec.id, { message });
    } catch (err) {
      set(rec.id, { error: (err as Error).message ?? String(err) });
    }
  }
  return { states, run };
}

/** What a recording's action buttons can ask for. */
export type RecordingActionName =
  | "finish"
  | "confirm-finish"
  | "cancel"
  | "retry";

/** Props of {@link RecordingActions}. */
export interface RecordingActionsProps {
  rec: { id: string; status: string; lastChunkAt?: number };
  now: number;
  /** False until the island is hydrated (the buttons need it). */
  ready: boolean;
  state?: ActionState;
  onAction(action: RecordingActionName): void;
}

/**
 * "Finish" for a recording still in `recording` (its page died before
 * stop: make a video of what was received) and "Retry processing" for a
 * failed one.
 */
export function RecordingActions(
  { rec, now, ready, state = {}, onAction }: RecordingActionsProps,
) {
  if (rec.status !== "recording" && rec.status !== "failed") {
    return state.error
      ? <span class="action-error" role="alert">{state.error}</span>
      : null;
  }
  const busy = !ready || !!state.pending;
  return (
    <div class="row-actions">
      {rec.status === "recording" && !state.confirm && (
        <button
          type="button"
          class="small-button"
          data-action="finish"
          disabled={busy}
          title="Make a video of what the server received"
          onClick={() => onAction("finish")}
        >
          {state.pending === "finish" ? "Finishing…" : "Finish"}
        </button>
      )}
      {rec.status === "recording" && state.confirm && (
        <>
          <span class="small confirm-text">
            A chunk arrived{" "}
            {formatAgo(rec.lastChunkAt, now)}; it may still be recording. Finish
            anyway?
          </span>
          <button
            type="button"
            class="small-button danger"
            data-action="confirm-finish"
            disabled={busy}
            onClick={() => onAction("confirm-finish")}
          >
            Finish anyway
          </button>
          <button
            type="button"
            class="small-button"
            data-action="cancel"
            onClick={() => onAction("cancel")}
          >
            Cancel
          </button>
        </>
      )}
      {rec.status === "failed" && (
        <button
          type="button"
          class="small-button"
          data-action="retry"
          disabled={busy}
          title="Queue the recording for processing again"
          onClick={() => onAction("retry")}
        >
          {state.pending === "retry" ? "Retrying…" : "Retry processing"}
        </button>
      )}
      {state.error && (
        <span class="action-error" role="alert">{state.error}</span>
      )}
    </div>
  );
}
