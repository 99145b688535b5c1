import { useMemo } from "preact/hooks";
import { LiveRecording } from "../client/live_recording.ts";
import { RecordingActionController } from "../client/recording_actions.ts";
import { useOpened } from "../client/use_opened.ts";
import type { RecordingView } from "../common/recording_view.ts";
import { Counters } from "../components/recording/counters.tsx";
import { FileList } from "../components/recording/file_list.tsx";
import { MediaFactsTable } from "../components/recording/media_facts_table.tsx";
import { Player } from "../components/recording/player.tsx";
import { LiveIndicator } from "../components/shared/live_indicator.tsx";
import { ProgressBar } from "../components/shared/progress_bar.tsx";
import { RecordingActions } from "../components/shared/recording_actions.tsx";

/** Props of a recording's page: the recording as the server read it. */
export interface RecordingDetailProps {
  recording: RecordingView;
  /** Server time (ms) of the read. */
  now: number;
}

/**
 * One recording: live counters (client/live_recording.ts), then progress,
 * then the player and its files. A recording still `recording` can be
 * finished with what was received, a failed one queued again.
 */
export default function RecordingDetail(props: RecordingDetailProps) {
  const live = useOpened(() => new LiveRecording(props.recording, props.now));
  const actions = useMemo(() => new RecordingActionController(), []);
  const r = live.recording.value;
  const now = live.clock.now.value;
  return (
    <article class="detail" data-id={r.id} data-status={r.status}>
      <div class="section-head">
        <h1>
          Recording <code class="mono">{r.id}</code>
        </h1>
        <LiveIndicator state={live.live.value} />
      </div>
      <Counters recording={r} now={now} />

      {r.deleted && (
        <p class="notice" id="deleted">
          This recording was deleted; its files are gone.
        </p>
      )}
      {r.expired && !r.deleted && (
        <p class="notice" id="expired">
          No chunk arrived for a long time, so the recording was finished
          automatically.
        </p>
      )}
      {r.status === "recording" && !r.deleted && (
        <p class="notice" id="recording-notice">
          Recording in progress: the counters above change as chunks arrive. If
          the page recording it was closed before it stopped, finish it to make
          a video of what was received.
        </p>
      )}
      {(r.status === "recording" || r.status === "failed") && !r.deleted && (
        <div class="detail-actions" id="actions">
          <RecordingActions
            rec={r}
            now={now}
            ready={live.ready.value}
            state={actions.states.value[r.id]}
            onAction={(a) =>
              actions.run(r, a, live.clock.now.value)}
          />
        </div>
      )}
      {r.status === "processing" && (
        <section class="processing" id="processing">
          <h2>Processing</h2>
          <ProgressBar value={r.progress} stage={r.stage} />
        </section>
      )}
      {r.status === "failed" && (
        <p class="error" role="alert" id="error">
          {r.error ?? "Processing failed."}
        </p>
      )}
      {r.status === "complete" && !r.deleted && (
        <>
          <Player recording={r} />
          <div class="columns">
            <section>
              <h2>Files</h2>
              <FileList recording={r} />
            </section>
            <section>
              <h2>Media</h2>
              <MediaFactsTable recording={r} />
            </section>
          </div>
        </>
      )}
    </article>
  );
}
