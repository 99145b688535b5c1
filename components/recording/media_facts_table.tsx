import { formatBytes, formatDuration } from "../../common/format.ts";
import type { RecordingView } from "../../common/recording_view.ts";

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
