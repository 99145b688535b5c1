import {
  ACTIVE_STATES,
  type PendingAction,
  type PendingUpload,
} from "../../client/resume_queue.ts";
import { plural, shortId } from "../../common/format.ts";
import { pendingText, resumeHeadline } from "./resume_text.ts";

/** Props of {@link PendingUploadList}. */
export interface PendingUploadListProps {
  items: PendingUpload[];
  online: boolean;
  onAction(videoId: string, action: PendingAction): void;
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
