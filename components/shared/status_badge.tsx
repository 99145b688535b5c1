import type { RecordingStatus } from "../../lib/kv/keys.ts";

/** The status of a recording as a coloured label. */
export function StatusBadge({ status }: { status: RecordingStatus }) {
  return (
    <span class={`badge badge-${status}`} data-status={status}>{status}</span>
  );
}
