import type {
  ActionState,
  RecordingActionName,
} from "../../client/recording_actions.ts";
import { formatAgo, formatBytes, formatDuration } from "../../common/format.ts";
import { displayTitle, formatWhen } from "../../common/title.ts";
import { Thumbnail } from "./thumbnail.tsx";
import type { RecordingView } from "../../common/recording_view.ts";
import { ProgressBar } from "../shared/progress_bar.tsx";
import { RecordingActions } from "../shared/recording_actions.tsx";
import { StatusBadge } from "../shared/status_badge.tsx";

/** Props of {@link RecordingTable}. */
export interface RecordingTableProps {
  recordings: RecordingView[];
  /** The server's time now (ms). */
  now: number;
  /** False until the island is hydrated (the buttons need it). */
  ready: boolean;
  /** Each recording's button state, by id. */
  actions: Record<string, ActionState>;
  onAction(rec: RecordingView, action: RecordingActionName): void;
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
      <td data-label="Recording" class="title-cell">
        <a href={`/videos/${rec.id}`} class="rec-link">
          <Thumbnail rec={rec} />
          <span class="rec-text">
            <span class="rec-title" data-field="title">
              {displayTitle(rec, ready)}
            </span>
            {rec.title && (
              <time
                class="muted small"
                dateTime={new Date(rec.createdAt).toISOString()}
              >
                {formatWhen(rec.createdAt, ready)}
              </time>
            )}
          </span>
        </a>
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

/** The dashboard's table: one row per recording, with its buttons. */
export function RecordingTable(
  { recordings, now, ready, actions, onAction }: RecordingTableProps,
) {
  return (
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
          {recordings.map((rec) => (
            <Row
              key={rec.id}
              rec={rec}
              now={now}
              ready={ready}
              action={actions[rec.id]}
              onAction={onAction}
            />
          ))}
        </tbody>
      </table>
    </div>
  );
}
