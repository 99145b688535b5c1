import { formatBytes } from "../../common/format.ts";
import { mediaUrl, type RecordingView } from "../../common/recording_view.ts";

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
