import type {
  ActionState,
  RecordingActionName,
} from "../../client/recording_actions.ts";
import { formatAgo } from "../../common/format.ts";

/** Props of {@link RecordingActions}. */
export interface RecordingActionsProps {
  rec: { id: string; status: string; lastChunkAt?: number };
  now: number;
  /** False until the island is hydrated (the buttons need it). */
  ready: boolean;
  state?: ActionState;
  onAction(action: RecordingActionName): void;
}

/**
 * "Finish" for a recording still in `recording` (its page died before
 * stop: make a video of what was received) and "Retry processing" for a
 * failed one.
 */
export function RecordingActions(
  { rec, now, ready, state = {}, onAction }: RecordingActionsProps,
) {
  if (rec.status !== "recording" && rec.status !== "failed") {
    return state.error
      ? <span class="action-error" role="alert">{state.error}</span>
      : null;
  }
  const busy = !ready || !!state.pending;
  return (
    <div class="row-actions">
      {rec.status === "recording" && !state.confirm && (
        <button
          type="button"
          class="small-button"
          data-action="finish"
          disabled={busy}
          title="Make a video of what the server received"
          onClick={() => onAction("finish")}
        >
          {state.pending === "finish" ? "Finishing…" : "Finish"}
        </button>
      )}
      {rec.status === "recording" && state.confirm && (
        <>
          <span class="small confirm-text">
            A chunk arrived{" "}
            {formatAgo(rec.lastChunkAt, now)}; it may still be recording. Finish
            anyway?
          </span>
          <button
            type="button"
            class="small-button danger"
            data-action="confirm-finish"
            disabled={busy}
            onClick={() => onAction("confirm-finish")}
          >
            Finish anyway
          </button>
          <button
            type="button"
            class="small-button"
            data-action="cancel"
            onClick={() => onAction("cancel")}
          >
            Cancel
          </button>
        </>
      )}
      {rec.status === "failed" && (
        <button
          type="button"
          class="small-button"
          data-action="retry"
          disabled={busy}
          title="Queue the recording for processing again"
          onClick={() => onAction("retry")}
        >
          {state.pending === "retry" ? "Retrying…" : "Retry processing"}
        </button>
      )}
      {state.error && (
        <span class="action-error" role="alert">{state.error}</span>
      )}
    </div>
  );
}
