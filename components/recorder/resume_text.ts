/**
 * What the recorder says about the recordings it resumes: the headline
 * over the list and the sentence of each item.
 */

import {
  ACTIVE_STATES,
  type PendingUpload,
} from "../../client/resume_queue.ts";
import { formatBytes, plural } from "../../common/format.ts";

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

/** The sentence saying where a resumed recording stands. */
export function pendingText(item: PendingUpload): string {
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
