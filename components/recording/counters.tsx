import { formatAgo, formatBytes, formatDuration } from "../../common/format.ts";
import { formatWhen } from "../../common/title.ts";
import type { RecordingView } from "../../common/recording_view.ts";
import { StatusBadge } from "../shared/status_badge.tsx";

/** A recording's status and live counters, with when it started and its type. */
export function Counters(
  { recording: r, now, local = false }: {
    recording: RecordingView;
    now: number;
    /** Whether times are shown in the browser's zone (after hydration). */
    local?: boolean;
  },
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
            {formatWhen(r.createdAt, local)}
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
