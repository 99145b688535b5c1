import { formatBytes } from "../../common/format.ts";
import { mediaUrl, type RecordingView } from "../../common/recording_view.ts";

/** A download button's words: the kind of file (its name is the saved file's). */
function downloadLabel(name: string, poster: boolean): string {
  const ext = name.slice(name.lastIndexOf(".") + 1).toUpperCase();
  return poster ? `Download poster (${ext})` : `Download ${ext}`;
}

/** The finished files with sizes, each a download button. */
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
          <a href={mediaUrl(recording.id, name)} download={name}>
            {downloadLabel(name, name === recording.poster)}
          </a>
          <span class="muted">
            {sizes[name] !== undefined ? formatBytes(sizes[name]) : ""}
          </span>
        </li>
      ))}
    </ul>
  );
}
