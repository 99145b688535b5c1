import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  type ActionState,
  LiveIndicator,
  type LiveIndicatorState,
  ProgressBar,
  type RecordingActionName,
  RecordingActions,
  StatusBadge,
  useRecordingActions,
} from "../components/recording_parts.tsx";
import { ChunkStore, recordingLockName } from "../client/outbox.ts";
import {
  formatAgo,
  formatBytes,
  formatDuration,
  formatTime,
  shortId,
} from "../common/format.ts";
import { connectLive, liveUrl } from "../client/live_client.ts";
import { mergeRecording, type RecordingView } from "../common/recording_view.ts";

/** Props of the dashboard: one page of recordings as the server read it. */
export interface DashboardProps {
  recordings: RecordingView[];
  limit: number;
  /** Cursor of this page; null for the newest recordings. */
  cursor: string | null;
  /** Cursor of the next, older page. */
  nextCursor: string | null;
  /** Server time (ms) of the read. */
  now: number;
}

function pageQuery(limit: number, cursor: string | null): string {
  const params = new URLSearchParams({ limit: String(limit) });
  if (cursor) params.set("cursor", cursor);
  return params.toString();
}

interface RowProps {
  rec: RecordingView;
  now: number;
  ready: boolean;
  action?: ActionState;
  onAction(rec: RecordingView, action: RecordingActionName): void;
}

function Row({ rec, now, ready, action, onAction }: RowProps) {
  return (
    <tr data-id={rec.id} data-status={rec.status}>
      <td data-label="Recording">
        <a href={`/videos/${rec.id}`} class="mono">{shortId(rec.id)}</a>
        <time
          class="muted small"
          dateTime={new Date(rec.createdAt).toISOString()}
        >
          {formatTime(rec.createdAt)}
        </time>
      </td>
      <td data-label="Status">
        <StatusBadge status={rec.status} />
      </td>
      <td data-label="Received" class="num" data-field="bytes">
        {formatBytes(rec.bytesReceived)}
      </td>
      <td data-label="Chunks" class="num" data-field="chunks">
        {rec.chunksReceived}
      </td>
      <td data-label="Last chunk" data-field="last-chunk">
        {formatAgo(rec.lastChunkAt, now)}
      </td>
      <td data-label="Duration" class="num" data-field="duration">
        {formatDuration(rec.durationS)}
      </td>
      <td data-label="Progress" data-field="progress">
        {rec.status === "processing"
          ? <ProgressBar value={rec.progress} stage={rec.stage} />
          : rec.status === "complete"
          ? <ProgressBar value={1} />
          : <span class="muted">–</span>}
      </td>
      <td data-label="Error" class="error-text" data-field="error">
        {rec.error && <span class="clamp" title={rec.error}>{rec.error}</span>}
      </td>
      <td data-label="Actions" class="actions-cell" data-field="actions">
        <RecordingActions
          rec={rec}
          now={now}
          ready={ready}
          state={action}
          onAction={(a) => onAction(rec, a)}
        />
      </td>
    </tr>
  );
}

/**
 * How many recordings this browser keeps chunks of that no page is
 * uploading (the recorder resumes them).
 */
async function countKeptUploads(): Promise<number> {
  let store: ChunkStore | undefined;
  try {
    store = await ChunkStore.open();
    const kept = (await store.listRecordings()).filter((r) => !r.leaveOpen);
    if (kept.length === 0) return 0;
    const held = new Set(
      ((await navigator.locks?.query())?.held ?? []).map((l) => l.name),
    );
    return kept.filter((r) => !held.has(recordingLockName(r.videoId))).length;
  } catch {
    return 0;
  } finally {
    store?.close();
  }
}

/**
 * Every recording, newest first, a page at a time; rows change live over
 * `/ws`. A recording still `recording` can be finished with what was
 * received, a failed one queued again.
 */
export default function Dashboard(props: DashboardProps) {
  const rows = useSignal(props.recordings);
  const live = useSignal<LiveIndicatorState>("static");
  const now = useSignal(props.now);
  const ready = useSignal(false);
  const kept = useSignal(0);
  const actions = useRecordingActions();

  useEffect(() => {
    ready.value = true;
    countKeptUploads().then((n) => {
      kept.value = n;
    });
    let offset = props.now - Date.now();
    const tick = setInterval(() => {
      now.value = Date.now() + offset;
    }, 1000);
    const client = connectLive(
      liveUrl(`/ws?${pageQuery(props.limit, props.cursor)}`, location.href),
      {
        onState(state) {
          live.value = state;
        },
        onMessage(message) {
          if (message.type === "snapshot" && "recordings" in message) {
            offset = message.now - Date.now();
            now.value = message.now;
            rows.value = message.recordings;
          } else if (message.type === "change") {
            rows.value = mergeRecording(
              rows.value,
              message.recording,
              props.cursor === null,
            );
          }
        },
      },
    );
    return () => {
      clearInterval(tick);
      client.close();
    };
  }, []);

  const list = rows.value;
  return (
    <section class="dashboard">
      <div class="section-head">
        <h1>Recordings</h1>
        <LiveIndicator state={live.value} />
      </div>
      {kept.value > 0 && (
        <p class="warning" id="kept-uploads">
          This browser keeps chunks of {kept.value} recording
          {kept.value === 1 ? "" : "s"}{" "}
          that are not all on the server yet (the page recording it closed).
          {" "}
          <a href="/record">Open the recorder</a> to upload them.
        </p>
      )}
      {list.length === 0
        ? (
          <p class="empty" id="empty">
            No recordings {props.cursor ? "on this page" : "yet"}.{" "}
            <a href="/record">Record one</a> or send one to the API.
          </p>
        )
        : (
          <div class="table-wrap">
            <table class="recordings" id="recordings">
              <thead>
                <tr>
                  <th scope="col">Recording</th>
                  <th scope="col">Status</th>
                  <th scope="col" class="num">Received</th>
                  <th scope="col" class="num">Chunks</th>
                  <th scope="col">Last chunk</th>
                  <th scope="col" class="num">Duration</th>
                  <th scope="col">Progress</th>
                  <th scope="col">Error</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {list.map((rec) => (
                  <Row
                    key={rec.id}
                    rec={rec}
                    now={now.value}
                    ready={ready.value}
                    action={actions.states.value[rec.id]}
                    onAction={(r, a) => actions.run(r, a, now.value)}
                  />
                ))}
              </tbody>
            </table>
          </div>
        )}
      <nav class="pager" aria-label="Pages">
        {props.cursor && <a href={`/?limit=${props.limit}`}>← Newest</a>}
        {props.nextCursor && (
          <a href={`/?${pageQuery(props.limit, props.nextCursor)}`} rel="next">
            Older →
          </a>
        )}
      </nav>
    </section>
  );
}
