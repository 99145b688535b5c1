import {
  mediaUrl,
  type RecordingView,
  videoType,
} from "../../common/recording_view.ts";
import { formatPercent } from "../../common/format.ts";

/** Props of {@link EmbedPlayer}. */
export interface EmbedPlayerProps {
  recording: RecordingView;
  /** Added to every file URL (`?token=`) when the recording is private. */
  token?: string;
}

/**
 * The whole of `/embed/<id>`: the poster and the video (MP4, then the
 * WebM or MKV as a second source), or a sentence while it is not ready.
 */
export function EmbedPlayer({ recording: r, token }: EmbedPlayerProps) {
  const url = (name: string) =>
    mediaUrl(r.id, name) +
    (token ? `?token=${encodeURIComponent(token)}` : "");
  if (r.status !== "complete") {
    return (
      <p class="embed-wait">
        {r.status === "failed"
          ? "This recording could not be processed."
          : r.status === "processing"
          ? `This recording is being processed (${
            formatPercent(r.progress)
          }); reload in a moment.`
          : "This recording is still being recorded."}
      </p>
    );
  }
  const sources = [...r.files].sort((a, b) =>
    Number(!a.endsWith(".mp4")) - Number(!b.endsWith(".mp4"))
  );
  return (
    <video
      class="embed-player"
      id="player"
      controls
      preload="metadata"
      playsInline
      poster={r.poster ? url(r.poster) : undefined}
    >
      {sources.map((name) => (
        <source key={name} src={url(name)} type={videoType(name)} />
      ))}
      <a href={url(sources[0] ?? "")}>Download the video</a>
    </video>
  );
}
