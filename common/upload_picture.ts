/**
 * The picture of an upload as pages draw it (components/recording/
 * upload_timeline.tsx): bytes per second over the recording's time and
 * the arrivals worth marking. Built on the server from the recording's
 * arrival log (lib/recordings/arrivals.ts); a plain serializable object.
 */

import type { ArrivalEvent } from "../lib/kv/keys.ts";

export type { ArrivalEvent };

/** What the timeline of one upload shows. */
export interface UploadPicture {
  /** The time axis: from the first chunk to the last one (or now, while recording), ms since epoch. */
  start: number;
  end: number;
  /** Width of one bar in ms. */
  bucketMs: number;
  /** Bytes stored in each bar's time. */
  bytes: number[];
  /** Highest bytes per second of a bar. */
  peakBytesPerS: number;
  /** Marked arrivals, oldest first. */
  events: ArrivalEvent[];
  /** How many of each kind there were in all. */
  counts: Partial<Record<ArrivalEvent["kind"], number>>;
  /** Indexes below the highest one that never arrived. */
  missing: number;
  chunks: number;
  totalBytes: number;
  /** When the client completed the recording, if it did. */
  stoppedAt?: number;
  /** Whether chunks may still come (the picture grows). */
  live: boolean;
  /** Set when the picture was rebuilt from the chunks (duplicates were not recorded then). */
  rebuilt?: boolean;
}
