import type { LiveState } from "../lib/live_client.ts";
import { formatBytes, formatDuration, formatPercent } from "../lib/format.ts";
import type { RecordingStatus } from "../lib/kv_keys.ts";
import {
  mediaUrl,
  type RecordingView,
  videoType,
} from "../lib/recording_view.ts";

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
