import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  FileList,
  LiveIndicator,
  type LiveIndicatorState,
  MediaFactsTable,
  Player,
  ProgressBar,
  RecordingActions,
  StatusBadge,
  useRecordingActions,
} from "../components/recording_parts.tsx";
import {
  formatAgo,
  formatBytes,
  formatDuration,
  formatTime,
} from "../common/format.ts";
import { connectLive, liveUrl } from "../client/live_client.ts";
import { isSameOrNewer, type RecordingView } from "../common/recording_view.ts";

/** Props of a recording's page: the recording as the server read it. */
export interface RecordingDetailProps {
  recording: RecordingView;
  /** Server time (ms) of the read. */
  now: number;
}

/**
 * One recording: live counters, then progress, then the player and its
 * files. A recording still `recording` can be finished with what was
 * received, a failed one queued again.
 */
export default function RecordingDetail(props: RecordingDetailProps) {
  const rec = useSignal(props.recording);
  const live = useSignal<LiveIndicatorState>("static");
  const now = useSignal(props.now);
  const ready = useSignal(false);
  const actions = useRecordingActions();

  useEffect(() => {
    ready.value = true;
    let offset = props.now - Date.now();
    const tick = setInterval(() => {
      now.value = Date.now() + offset;
    }, 1000);
    const client = connectLive(
      liveUrl(`/ws/${props.recording.id}`, location.href),
      {
        onState(state) {
          live.value = state;
        },
        onMessage(message) {
          if (message.type === "snapshot" && "recording" in message) {
            offset = message.now - Date.now();
            now.value = message.now;
            rec.value = message.recording;
          } else if (
            message.type === "change" &&
            message.recording.id === rec.value.id &&
            isSameOrNewer(rec.value, message.recording)
          ) {
            rec.value = message.recording;
          }
        },
      },
    );
    return () => {
      clearInterval(tick);
      client.close();
    };
  }, []);

  const r = rec.value;
  return (
    <article class="detail" data-id={r.id} data-status={r.status}>
      <div class="section-head">
        <h1>
          Recording <code class="mono">{r.id}</code>
        </h1>
        <LiveIndicator state={live.value} />
      </div>
      <dl class="facts counters" id="counters">
        <div>
          <dt>Status</dt>
          <dd>
            <StatusBadge status={r.status} />
          </dd>
        </div>
        <div>
          <dt>Received</dt>
          <dd data-field="bytes">{formatBytes(r.bytesReceived)}</dd>
        </div>
        <div>
          <dt>Chunks</dt>
          <dd data-field="chunks">{r.chunksReceived}</dd>
        </div>
        <div>
          <dt>Last chunk</dt>
          <dd data-field="last-chunk">{formatAgo(r.lastChunkAt, now.value)}</dd>
        </div>
        <div>
          <dt>Duration</dt>
          <dd data-field="duration">{formatDuration(r.durationS)}</dd>
        </div>
        <div>
          <dt>Started</dt>
          <dd>
            <time dateTime={new Date(r.createdAt).toISOString()}>
              {formatTime(r.createdAt)}
            </time>
          </dd>
        </div>
        {r.mimeType && (
          <div>
            <dt>Sent as</dt>
            <dd class="mono small">{r.mimeType}</dd>
          </div>
        )}
      </dl>

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
            now={now.value}
            ready={ready.value}
            state={actions.states.value[r.id]}
            onAction={(a) =>
              actions.run(r, a, now.value)}
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
