import {
  mediaUrl,
  type RecordingView,
  videoType,
} from "../../common/recording_view.ts";

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
