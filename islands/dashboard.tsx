import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  LiveIndicator,
  type LiveIndicatorState,
  ProgressBar,
  StatusBadge,
} from "../components/recording_parts.tsx";
import {
  formatAgo,
  formatBytes,
  formatDuration,
  formatTime,
  shortId,
} from "../lib/format.ts";
import { connectLive, liveUrl } from "../lib/live_client.ts";
import { mergeRecording, type RecordingView } from "../lib/recording_view.ts";

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

function Row({ rec, now }: { rec: RecordingView; now: number }) {
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
        {rec.error ?? ""}
      </td>
    </tr>
  );
}

/** Every recording, newest first, a page at a time; rows change live over `/ws`. */
export default function Dashboard(props: DashboardProps) {
  const rows = useSignal(props.recordings);
  const live = useSignal<LiveIndicatorState>("static");
  const now = useSignal(props.now);

  useEffect(() => {
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
      {list.length === 0
        ? (
          <p class="empty" id="empty">
            No recordings {props.cursor ? "on this page" : "yet"}.{" "}
            <a href="/record">Record one</a> or send one to the API.
          </p>
        )
        : (
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
              </tr>
            </thead>
            <tbody>
              {list.map((rec) => (
                <Row
                  key={rec.id}
                  rec={rec}
                  now={now.value}
                />
              ))}
            </tbody>
          </table>
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
