/**
 * The arrival log of a recording (`Recording.arrivals`, lib/kv/keys.ts):
 * bytes per time bucket and the arrivals worth marking (gaps and where the
 * upload resumed, late, duplicate, skipped and after-stop chunks), updated
 * in each chunk's own commit and bounded in size (buckets double in width
 * when they fill; only the latest events are kept, with counts of all).
 * Pure functions; lib/recordings/chunks.ts writes the log,
 * lib/recordings/library.ts turns it into the picture pages draw.
 */

import type { UploadPicture } from "../../common/upload_picture.ts";
import type {
  ArrivalEvent,
  ArrivalLog,
  ChunkEntry,
  Recording,
} from "../kv/keys.ts";

/** Most buckets a log holds before their width doubles. */
export const MAX_BUCKETS = 96;
/** Most events a log keeps (the latest). */
export const MAX_EVENTS = 40;
/** Width of a bucket in a new log (ms). */
const FIRST_BUCKET_MS = 250;
/** A pause shorter than this is never a gap (ms). */
export const MIN_GAP_MS = 3000;
/** A pause this many times the usual pace is a gap. */
const GAP_PACE_FACTOR = 4;
/** Before the pace is known, a pause this long is a gap (ms). */
const FIRST_GAP_MS = 10_000;

/** One chunk taken, as the log needs it. */
export interface ChunkArrival {
  at: number;
  size: number;
  index: number;
  /** The recording's `nextIndex` before this chunk. */
  nextIndex: number;
  /** The previous chunk's arrival, if any. */
  lastChunkAt?: number;
  /** Whether the client had already completed the recording. */
  afterStop: boolean;
}

function copyOrNew(log: ArrivalLog | undefined, at: number): ArrivalLog {
  return log
    ? {
      ...log,
      bytes: log.bytes.slice(),
      events: log.events.slice(),
      counts: { ...log.counts },
    }
    : {
      start: at,
      bucketMs: FIRST_BUCKET_MS,
      bytes: [],
      events: [],
      counts: {},
    };
}

function addEvent(log: ArrivalLog, event: ArrivalEvent): void {
  log.events.push(event);
  if (log.events.length > MAX_EVENTS) log.events.shift();
  log.counts[event.kind] = (log.counts[event.kind] ?? 0) + 1;
}

/** Adds `size` bytes at `at`, doubling the bucket width until it fits. */
function addBytes(log: ArrivalLog, at: number, size: number): void {
  let bucket = Math.max(0, Math.floor((at - log.start) / log.bucketMs));
  while (bucket >= MAX_BUCKETS) {
    const merged: number[] = [];
    for (let i = 0; i < log.bytes.length; i += 2) {
      merged.push(log.bytes[i] + (log.bytes[i + 1] ?? 0));
    }
    log.bytes = merged;
    log.bucketMs *= 2;
    bucket = Math.floor((at - log.start) / log.bucketMs);
  }
  while (log.bytes.length <= bucket) log.bytes.push(0);
  log.bytes[bucket] += size;
}

/** The log after one more chunk was taken. */
export function noteChunk(
  log: ArrivalLog | undefined,
  chunk: ChunkArrival,
): ArrivalLog {
  const next = copyOrNew(log, chunk.at);
  addBytes(next, chunk.at, chunk.size);
  if (chunk.lastChunkAt !== undefined && chunk.at >= chunk.lastChunkAt) {
    const pause = chunk.at - chunk.lastChunkAt;
    const threshold = next.paceMs === undefined
      ? FIRST_GAP_MS
      : Math.max(MIN_GAP_MS, next.paceMs * GAP_PACE_FACTOR);
    if (pause >= threshold) {
      addEvent(next, {
        kind: "gap",
        at: chunk.lastChunkAt,
        until: chunk.at,
        index: chunk.index,
      });
    } else {
      next.paceMs = next.paceMs === undefined
        ? pause
        : Math.round(next.paceMs * 0.8 + pause * 0.2);
    }
  }
  if (chunk.index > chunk.nextIndex) {
    addEvent(next, {
      kind: "skip",
      at: chunk.at,
      index: chunk.nextIndex,
      count: chunk.index - chunk.nextIndex,
    });
  } else if (chunk.index < chunk.nextIndex) {
    addEvent(next, { kind: "late", at: chunk.at, index: chunk.index });
  }
  if (chunk.afterStop) {
    addEvent(next, { kind: "after_stop", at: chunk.at, index: chunk.index });
  }
  return next;
}

/** The log after a chunk arrived again with the bytes already held. */
export function noteDuplicate(
  log: ArrivalLog | undefined,
  at: number,
  index: number,
): ArrivalLog {
  const next = copyOrNew(log, at);
  addEvent(next, { kind: "duplicate", at, index });
  return next;
}

/**
 * Rebuilds a log from the stored chunks (for a recording written before
 * logs were kept): everything but duplicates, which were not recorded.
 */
export function replayArrivals(
  rec: Recording,
  chunks: ChunkEntry[],
): ArrivalLog | undefined {
  const sorted = chunks.slice().sort((a, b) =>
    a.at - b.at || a.index - b.index
  );
  let log: ArrivalLog | undefined;
  let nextIndex = 0;
  let lastChunkAt: number | undefined;
  for (const c of sorted) {
    log = noteChunk(log, {
      at: c.at,
      size: c.size,
      index: c.index,
      nextIndex,
      lastChunkAt,
      afterStop: rec.closedAt !== undefined && c.at > rec.closedAt,
    });
    nextIndex = Math.max(nextIndex, c.index + 1);
    lastChunkAt = c.at;
  }
  return log;
}

/** The picture of an upload at `now`, from its log. */
export function describeUpload(
  rec: Recording,
  log: ArrivalLog | undefined,
  now: number,
  rebuilt = false,
): UploadPicture {
  const live = rec.status === "recording";
  const start = log?.start ?? rec.createdAt;
  const lastEvent = Math.max(
    rec.lastChunkAt ?? start,
    ...(log?.events ?? []).map((e) => e.until ?? e.at),
  );
  const end = Math.max(
    start + 1000,
    live ? Math.max(now, lastEvent) : lastEvent,
    log ? start + log.bytes.length * log.bucketMs : start,
  );
  const bucketMs = log?.bucketMs ?? 1000;
  const bytes = log?.bytes ?? [];
  const peak = bytes.reduce((m, b) => Math.max(m, b), 0) * 1000 / bucketMs;
  return {
    start,
    end,
    bucketMs,
    bytes,
    peakBytesPerS: peak,
    events: log?.events ?? [],
    counts: log?.counts ?? {},
    missing: Math.max(0, rec.nextIndex - rec.chunksReceived),
    chunks: rec.chunksReceived,
    totalBytes: rec.bytesReceived,
    stoppedAt: rec.closedAt,
    live,
    ...(rebuilt ? { rebuilt } : {}),
  };
}
