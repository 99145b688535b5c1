import type { LiveIndicatorState } from "../../client/live_client.ts";

const LIVE_LABELS: Record<LiveIndicatorState, string> = {
  static: "not live",
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  closed: "not live",
};

/** A small dot and word saying whether updates are arriving. */
export function LiveIndicator({ state }: { state: LiveIndicatorState }) {
  return (
    <span class="live-state" data-live={state} role="status">
      {LIVE_LABELS[state]}
    </span>
  );
}
