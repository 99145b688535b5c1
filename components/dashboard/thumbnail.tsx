import { mediaUrl, type RecordingView } from "../../common/recording_view.ts";
import { formatPercent } from "../../common/format.ts";

/**
 * A recording's picture in the list: its poster, scaled by the browser
 * (the same JPEG the player shows, so no second image is made or stored;
 * `loading="lazy"` fetches only the rows on screen), or a placeholder that
 * says where it stands until the poster exists. Decorative: the title next
 * to it names the recording.
 */
export function Thumbnail({ rec }: { rec: RecordingView }) {
  if (rec.status === "complete" && rec.poster) {
    return (
      <img
        class="thumb"
        src={mediaUrl(rec.id, rec.poster)}
        width={128}
        height={72}
        loading="lazy"
        decoding="async"
        alt=""
        data-thumb="poster"
      />
    );
  }
  const label = rec.status === "recording"
    ? "REC"
    : rec.status === "processing"
    ? formatPercent(rec.progress)
    : rec.status === "failed"
    ? "failed"
    : "no picture";
  return (
    <span
      class={`thumb thumb-placeholder thumb-${rec.status}`}
      data-thumb="placeholder"
      aria-hidden="true"
    >
      {label}
    </span>
  );
}
