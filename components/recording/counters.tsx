import {
  formatAgo,
  formatBytes,
  formatDuration,
  formatTime,
} from "../../common/format.ts";
import type { RecordingView } from "../../common/recording_view.ts";
import { StatusBadge } from "../shared/status_badge.tsx";

/** A recording's status and live counters, with when it started and its type. */
export function Counters(
  { recording: r, now }: { recording: RecordingView; now: number },
) {
  return (
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
        <dd data-field="last-chunk">{formatAgo(r.lastChunkAt, now)}</dd>
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
  );
}
