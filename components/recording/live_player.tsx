import type { LiveMode } from "../../client/live_playback.ts";

/** What the live player says it is doing. */
const MODE_LABELS: Record<LiveMode, string> = {
  off: "Live",
  waiting: "Live: waiting for the first chunk",
  hls: "Live (HLS)",
  mse: "Live (from the upload)",
  unsupported: "Live playback unavailable",
};

/** Props of {@link LivePlayer}. */
export interface LivePlayerProps {
  mode: LiveMode;
  /** Seconds behind the newest media, once playing. */
  behindS: number | null;
  /** Why it cannot play, or what it waits for. */
  note: string | null;
  /** The `<video>`'s ref (a stable function). */
  videoRef?: (video: HTMLVideoElement | null) => void;
  onGoLive?: () => void;
}

/** Behind this far (s), the player offers to jump back to the live edge. */
const FAR_BEHIND_S = 6;

/**
 * The recording played while it is being recorded (client/live_playback.ts
 * drives the `<video>`): the way it plays, and how far behind the newest
 * media it is.
 */
export function LivePlayer(
  { mode, behindS, note, videoRef, onGoLive }: LivePlayerProps,
) {
  return (
    <section class="live-view" id="live-view" data-mode={mode}>
      <video
        class="player"
        id="live-player"
        ref={videoRef}
        controls
        muted
        autoplay
        playsInline
      />
      <p class="live-edge">
        <span class="live-mode" id="live-mode">{MODE_LABELS[mode]}</span>
        {behindS !== null && (
          <>
            {" · "}
            <span id="live-behind" data-behind={behindS}>
              {behindS.toFixed(1)} s behind
            </span>
          </>
        )}
        {behindS !== null && behindS > FAR_BEHIND_S && (
          <button
            type="button"
            class="small-button"
            id="go-live"
            onClick={onGoLive}
          >
            Go live
          </button>
        )}
      </p>
      {note && mode !== "hls" && mode !== "mse" && (
        <p class="muted" id="live-note">{note}</p>
      )}
      <noscript>
        <p class="muted">Watching a recording live needs JavaScript.</p>
      </noscript>
    </section>
  );
}
