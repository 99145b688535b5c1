import {
  mediaUrl,
  type RecordingView,
  videoType,
} from "../../common/recording_view.ts";

/**
 * The finished recording: MP4 first, the WebM (or MKV) as the second
 * source, poster. A new first source (the MP4 listed after the WebM) makes
 * a new `<video>` (`videoRef` sees it, to continue where the last one was).
 */
export function Player(
  { recording, videoRef }: {
    recording: RecordingView;
    videoRef?: (video: HTMLVideoElement | null) => void;
  },
) {
  const sources = [...recording.files].sort((a, b) =>
    Number(!a.endsWith(".mp4")) - Number(!b.endsWith(".mp4"))
  );
  return (
    <video
      key={sources[0]}
      ref={videoRef}
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
