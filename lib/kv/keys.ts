// Over 400 lines: the whole KV key schema in one module by design (house style), one builder per key with its doc.
/**
 * The whole Deno KV key schema of tapedeck, with one builder per key.
 *
 * | key                                          | value              |
 * | -------------------------------------------- | ------------------ |
 * | ["recording", id]                            | {@link Recording}  |
 * | ["recording_by_created", createdAt, id]      | id (index)         |
 * | ["recording_open", id]                       | id (index: status `recording`) |
 * | ["recording_finished", finishedAt, id]       | id (index: complete or failed, for retention) |
 * | ["chunk", id, index]                         | {@link ChunkEntry} |
 * | ["job", id]                                  | {@link Job}        |
 * | ["job_active", id]                           | id (index: queued or running jobs) |
 * | ["change", seq]                              | {@link ChangeEntry} (expires after an hour) |
 * | ["change_head"]                              | {@link ChangeEntry} (the newest change, for `watch`) |
 * | ["job_wakeup"]                               | time (ms) a job was last queued, for workers' `watch` |
 * | ["outputs_unflushed", id]                    | {@link UnflushedOutputs} (index: complete, files not yet fsynced) |
 * | ["upload_partial", id]                       | id (index: tus partial uploads, for expiry) |
 * | ["settings", name]                           | a setting the instances share (the generated session secret) |
 * | ["chunk_inflight", id, request]              | {@link InflightChunk} (a chunk request under way, with a shared KV) |
 * | ["recording_by_status", status, createdAt, id] | id (index: listed recordings by status, for the library's filter) |
 * | ["recording_by_word", term, createdAt, id]   | id (index: a prefix of a word of the title, for the library's search) |
 * | ["webhook", delivery]                        | {@link WebhookDelivery} (kept 30 days once finished) |
 * | ["webhook_by_recording", id, createdAt, delivery] | delivery id (index: a recording's deliveries) |
 * | ["webhook_due", dueAt, delivery]             | delivery id (index: pending deliveries by due time) |
 * | ["webhook_wakeup"]                           | time (ms) deliveries were last added, for the delivery worker's `watch` |
 * | ["webhook_worker"]                           | {@link WorkerLease} (the instance that delivers webhooks) |
 * | ["live_encode", id]                          | {@link LiveEncodeClaim} (a recording's live encode: judged, claimed, leased, done; lib/live_encode/) |
 *
 * `recording_by_status` and `recording_by_word` are derived from a record's
 * `status` and `title` by lib/recordings/transitions.ts (records written before they existed carry
 * no `indexes` mark and are indexed by the start-up sweep).
 *
 * `["outputs_unflushed", id]` is written in the same commit that makes a
 * recording `complete` (its finished files are renamed into place without
 * fsync, to keep the flush off the path to "complete") and deleted once the
 * files and their folder are flushed. An entry that outlives its job is
 * handled by the sweep (lib/maintenance.ts): from this boot of the machine
 * the page cache still holds the files, so they are flushed; from another
 * boot (the machine went down before the flush) they may be torn, so the
 * recording is processed again.
 *
 * A record and its indexes are written in one atomic commit; indexes hold ids,
 * never copies. Every state change checks the record's versionstamp.
 */

/** The four states of docs/api.md. */
export type RecordingStatus =
  | "recording"
  | "processing"
  | "complete"
  | "failed";

/** What processing found in a recording (header or ffprobe) and made of it. */
export interface MediaFacts {
  container: string;
  durationS: number;
  video?: {
    codec: string;
    width: number;
    height: number;
    frames?: number;
  };
  audio?: { codec: string; channels?: number; sampleRate?: number };
  /** How each output was made: "copy" or the encoder used. */
  mp4Video?: string;
  mp4Audio?: string;
  /**
   * The MP4 is the live encode's segments remuxed (lib/live_encode/), not
   * an encode the job ran.
   */
  mp4Live?: boolean;
  /** Size in bytes of each finished file, by name. */
  sizes: Record<string, number>;
}

/** A recording session: the truth about one upload and its processing. */
export interface Recording {
  id: string;
  status: RecordingStatus;
  createdAt: number;
  updatedAt: number;
  /** Time of the last accepted chunk (ms since epoch). */
  lastChunkAt?: number;
  bytesReceived: number;
  chunksReceived: number;
  /** Order key given to the next chunk that comes without an index. */
  nextIndex: number;
  /** Content type of the first chunk, when the client sent one. */
  mimeType?: string;
  /** 0 to 1 while processing. */
  progress?: number;
  /** Where processing stands, in words ("queued", "remuxing", ...). */
  stage?: string;
  durationS?: number;
  /** Finished video files (docs/api.md `completed_videos`). */
  files: string[];
  poster?: string;
  media?: MediaFacts;
  /** Why processing failed, as a sentence. */
  error?: string;
  /** SHA-256 (hex) of the session's upload token; the token itself is never stored. */
  tokenHash?: string;
  /** When processing ended (complete or failed). */
  finishedAt?: number;
  /** Set when the session was finalized by the idle expiry, not by the client. */
  expired?: boolean;
  /** Only on the last change published for a deleted recording. */
  deleted?: boolean;
  /** The total length a tus client declared (Upload-Length), once known. */
  uploadLength?: number;
  /** tus Upload-Metadata (filename, filetype, ...), decoded. */
  metadata?: Record<string, string>;
  /** Set once the recording's first bytes were seen to be WebM/MP4. */
  mediaChecked?: boolean;
  /** How the recording arrives: the docs/api.md API or tus. */
  protocol?: "api" | "tus";
  /**
   * A tus `Upload-Concat: partial` upload: stored, never listed or
   * processed, until a final upload takes its bytes.
   */
  partial?: boolean;
  /** When the current processing run started (a worker claimed the job). */
  runStartedAt?: number;
  /**
   * When the client completed the recording (complete_job, or a chunk with
   * `last_chunk`): chunks arriving up to COMPLETE_GRACE_MS later are still
   * taken, and processing ends only once none can come any more.
   */
  closedAt?: number;
  /** The index of the recording's last chunk, when the client said it. */
  lastChunk?: number;
  /** A tus final upload: the partial uploads it was made of, in order. */
  concat?: string[];
  /** How many of its chunks are under MIN_CHUNK_BYTES. */
  smallChunks?: number;
  /**
   * What people call it (tus `filename` without its extension, `title` at
   * create, or a rename); none means "Recording <its creation time>".
   */
  title?: string;
  /** How the chunks arrived, for the picture of the upload (bounded). */
  arrivals?: ArrivalLog;
  /** Version of the derived indexes written for this record (status, title words). */
  indexes?: number;
  /**
   * The live encode of a recording whose MP4 needs a re-encode, while it is
   * recorded (lib/live_encode/contract.ts describes it and its files).
   */
  live?: LiveEncodeState;
}

/**
 * A recording's live encode as its record carries it for viewers
 * (`Recording.live`), written with the claim at most every few seconds
 * (lib/live_encode/contract.ts).
 */
export interface LiveEncodeState {
  mode: "encode";
  /**
   * `running`: segments are being added; `done`: the playlist is complete
   * (it ends with `#EXT-X-ENDLIST`) and covers the whole recording;
   * `abandoned`: no more segments will come (`reason` says why).
   */
  state: "running" | "done" | "abandoned";
  /** The playlist's file name: `live.m3u8`. */
  playlist: string;
  /** The init segment's file name: `live-init.mp4`. */
  init: string;
  /** Media segments published, `live-00001.m4s` to `live-<segments>.m4s`. */
  segments: number;
  /** Seconds of the recording the published segments hold. */
  encodedS: number;
  updatedAt: number;
  /** Why it was abandoned. */
  reason?: string;
  /** The live files were removed (LIVE_FILES_KEEP_S after the recording finished). */
  removed?: boolean;
}

/** Something worth marking in the picture of an upload. */
export interface ArrivalEvent {
  /**
   * `gap`: no chunk from `at` to `until` (`until` is where it resumed);
   * `late`: a chunk whose index is below one that arrived before it (out of
   * order, or resent after a loss); `duplicate`: a chunk that arrived again
   * with the same bytes (a retry whose first reply was lost); `skip`:
   * indexes `index` to `index + count - 1` were passed over (missing when
   * it arrived); `after_stop`: a chunk taken after the client completed.
   */
  kind: "gap" | "late" | "duplicate" | "skip" | "after_stop";
  at: number;
  index?: number;
  until?: number;
  count?: number;
}

/**
 * A bounded summary of a recording's chunk arrivals, updated in each
 * chunk's own commit (lib/recordings/arrivals.ts): bytes per time bucket
 * (buckets double in width when they fill) and the latest notable events.
 */
export interface ArrivalLog {
  /** Start of bucket 0 (ms since epoch). */
  start: number;
  /** Width of one bucket in ms. */
  bucketMs: number;
  /** Bytes that arrived in each bucket. */
  bytes: number[];
  /** The latest notable arrivals, oldest first (at most a few dozen). */
  events: ArrivalEvent[];
  /** How many events of each kind there were in all (events may have dropped some). */
  counts: Partial<Record<ArrivalEvent["kind"], number>>;
  /** Smoothed time between chunks (ms), to tell a gap from the usual pace. */
  paceMs?: number;
}

/** A chunk request under way (value of ["chunk_inflight", id, request]). */
export interface InflightChunk {
  /** When the request arrived (ms since epoch). */
  at: number;
  /** The marker is void after this (ms): its process died. */
  until: number;
}

/** One stored chunk of a recording. */
export interface ChunkEntry {
  /** Position in the recording (the client's index, or arrival order). */
  index: number;
  /** Storage name holding the chunk's bytes. */
  file: string;
  /** Where the chunk starts in `file`. */
  offset?: number;
  size: number;
  /** Whether the client gave the index. */
  explicit: boolean;
  at: number;
  /** Base64 of the first (up to 16) bytes, kept for the first few chunks. */
  head?: string;
}

/** States of a processing job. */
export type JobState = "queued" | "running" | "done" | "failed";

/** The processing job of one recording. */
export interface Job {
  videoId: string;
  state: JobState;
  attempts: number;
  maxAttempts: number;
  /** Not to be started before this time (ms): backoff after a failure. */
  runAfter: number;
  /** While running: the claim is void after this time (ms). */
  leaseUntil: number;
  workerId?: string;
  lastError?: string;
  createdAt: number;
  updatedAt: number;
  /**
   * Files a run made and published (not yet listed) while chunks could
   * still come: the job waits for the end of the recording's grace without
   * holding a worker, then lists them, or processes again if a chunk came.
   */
  made?: MadeFiles;
}

/** What one processing run made of a recording. */
export interface MadeFiles {
  files: string[];
  poster?: string;
  media: MediaFacts;
  durationS: number;
  /** The chunks the run read: the files hold exactly these. */
  input: { bytes: number; chunks: number };
  /**
   * Files that were moved into place without fsync. Whoever lists them
   * must record that, then flush them (`Storage.syncFiles`).
   */
  unflushed?: string[];
}

/**
 * Value of ["live_encode", id]: whether a recording gets a live encode and
 * how it stands. `skipped`: it needs none or got no slot (written once, so
 * it is judged once); `running`: `workerId` encodes it under a lease
 * (`leaseUntil`, renewed; lapsed means the worker died); `done`: its
 * segments hold exactly the chunks in `input`; `abandoned`: stopped
 * (`reason`). Written together with `Recording.live` (lib/live_encode/claim.ts).
 */
export interface LiveEncodeClaim {
  videoId: string;
  state: "skipped" | "running" | "done" | "abandoned";
  reason?: string;
  workerId?: string;
  /** While running: the claim is void after this (ms). */
  leaseUntil: number;
  startedAt: number;
  updatedAt: number;
  /** Media segments published so far. */
  segments: number;
  /** Seconds the published segments hold. */
  encodedS: number;
  /** When ffmpeg's output time last advanced (ms). */
  progressAt?: number;
  /** How far the encode lags the media received, in seconds (an estimate). */
  lagS?: number;
  /** Chunks handed to ffmpeg so far. */
  fed?: { bytes: number; chunks: number };
  /** Done: the chunks the segments hold, exactly. */
  input?: { bytes: number; chunks: number };
  /** Done: video frames encoded. */
  frames?: number;
}

/** Value of ["outputs_unflushed", id]: who published the files unflushed, and when. */
export interface UnflushedOutputs {
  /** /proc/sys/kernel/random/boot_id of the machine that wrote the files ("" when unknown). */
  bootId: string;
  /** When the recording was committed `complete` (ms since epoch). */
  at: number;
}

/** A committed change to a recording, for live fan-out across instances. */
export interface ChangeEntry {
  id: string;
  at: number;
  /** A deleted recording as it was, marked `deleted` (its record is gone). */
  deleted?: Recording;
}

/** ["recording", id] */
export function recordingKey(id: string): Deno.KvKey {
  return ["recording", id];
}

/** ["recording_by_created", createdAt, id] */
export function recordingByCreatedKey(
  createdAt: number,
  id: string,
): Deno.KvKey {
  return ["recording_by_created", createdAt, id];
}

/** Prefix of the by-creation index, for listing newest first. */
export function recordingByCreatedPrefix(): Deno.KvKey {
  return ["recording_by_created"];
}

/** ["recording_open", id]: present while the recording takes chunks. */
export function openRecordingKey(id: string): Deno.KvKey {
  return ["recording_open", id];
}

/** Prefix of the open-recordings index. */
export function openRecordingPrefix(): Deno.KvKey {
  return ["recording_open"];
}

/** ["recording_finished", finishedAt, id] */
export function finishedRecordingKey(
  finishedAt: number,
  id: string,
): Deno.KvKey {
  return ["recording_finished", finishedAt, id];
}

/** Prefix of the finished-recordings index, oldest first. */
export function finishedRecordingPrefix(): Deno.KvKey {
  return ["recording_finished"];
}

/** ["chunk", id, index] */
export function chunkKey(id: string, index: number): Deno.KvKey {
  return ["chunk", id, index];
}

/** Prefix of all chunks of a recording, in index order. */
export function chunkPrefix(id: string): Deno.KvKey {
  return ["chunk", id];
}

/** ["job", id] */
export function jobKey(id: string): Deno.KvKey {
  return ["job", id];
}

/** ["job_active", id]: present while the job is queued or running. */
export function activeJobKey(id: string): Deno.KvKey {
  return ["job_active", id];
}

/** Prefix of the active-jobs index. */
export function activeJobPrefix(): Deno.KvKey {
  return ["job_active"];
}

/** ["change", seq]: the change log, ordered by a time-based sequence. */
export function changeKey(seq: string): Deno.KvKey {
  return ["change", seq];
}

/** Prefix of the change log. */
export function changePrefix(): Deno.KvKey {
  return ["change"];
}

/** ["change_head"]: rewritten on every change so one `watch` sees them all. */
export function changeHeadKey(): Deno.KvKey {
  return ["change_head"];
}

/** ["job_wakeup"]: rewritten whenever a job is queued, so idle workers wake. */
export function jobWakeupKey(): Deno.KvKey {
  return ["job_wakeup"];
}

/** ["outputs_unflushed", id]: the finished files of a complete recording are not yet fsynced. */
export function unflushedOutputsKey(id: string): Deno.KvKey {
  return ["outputs_unflushed", id];
}

/** ["chunk_inflight", id, request]: a chunk request of recording `id` is under way. */
export function inflightChunkKey(id: string, request: string): Deno.KvKey {
  return ["chunk_inflight", id, request];
}

/** Prefix of the chunk requests under way for recording `id`. */
export function inflightChunkPrefix(id: string): Deno.KvKey {
  return ["chunk_inflight", id];
}

/** ["upload_partial", id]: present while a tus partial upload exists. */
export function partialUploadKey(id: string): Deno.KvKey {
  return ["upload_partial", id];
}

/** Prefix of the partial-uploads index. */
export function partialUploadPrefix(): Deno.KvKey {
  return ["upload_partial"];
}

/** Prefix of the unflushed-outputs index. */
export function unflushedOutputsPrefix(): Deno.KvKey {
  return ["outputs_unflushed"];
}

/** ["live_encode", id]: the live encode's claim of recording `id`. */
export function liveEncodeKey(id: string): Deno.KvKey {
  return ["live_encode", id];
}

/** Prefix of the live-encode claims. */
export function liveEncodePrefix(): Deno.KvKey {
  return ["live_encode"];
}

/** ["settings", name]: a value every instance of a cluster shares. */
export function settingKey(name: string): Deno.KvKey {
  return ["settings", name];
}

/** ["recording_by_status", status, createdAt, id] */
export function recordingByStatusKey(
  status: RecordingStatus,
  createdAt: number,
  id: string,
): Deno.KvKey {
  return ["recording_by_status", status, createdAt, id];
}

/** Prefix of the by-status index for one status, newest last. */
export function recordingByStatusPrefix(status: RecordingStatus): Deno.KvKey {
  return ["recording_by_status", status];
}

/** ["recording_by_word", term, createdAt, id]: `term` is a prefix of a title word. */
export function recordingByWordKey(
  term: string,
  createdAt: number,
  id: string,
): Deno.KvKey {
  return ["recording_by_word", term, createdAt, id];
}

/** Prefix of the title-word index for one term, newest last. */
export function recordingByWordPrefix(term: string): Deno.KvKey {
  return ["recording_by_word", term];
}

// Webhooks (issue 17: lib/webhooks/).

/** The webhook events (docs/webhooks.md). */
export type WebhookEvent =
  | "recording.created"
  | "recording.completed"
  | "video.ready"
  | "video.failed"
  | "recording.deleted";

/**
 * One event to be delivered to one URL, written in the commit of the
 * change it reports (lib/webhooks/events.ts) and then updated by each
 * attempt (lib/webhooks/deliveries.ts).
 */
export interface WebhookDelivery {
  id: string;
  /** The event's id: the same for every URL, attempt and replay. */
  eventId: string;
  event: WebhookEvent;
  recordingId: string;
  url: string;
  /** The JSON body, fixed when the event happened. */
  body: string;
  /** `failed`: given up after the retry window. */
  state: "pending" | "delivered" | "failed";
  attempts: number;
  createdAt: number;
  /** No attempt is made after this (24 h after the event or the last replay). */
  retryUntil: number;
  /** When the next attempt is due (ms); its ["webhook_due", ...] entry says the same. */
  dueAt: number;
  lastAttemptAt?: number;
  lastStatus?: number;
  lastError?: string;
  deliveredAt?: number;
  /** How many times it was replayed. */
  replays?: number;
  updatedAt: number;
}

/** Value of a singleton worker's lease: who holds it and until when (ms). */
export interface WorkerLease {
  holder: string;
  until: number;
}

/** ["webhook", delivery] */
export function webhookKey(id: string): Deno.KvKey {
  return ["webhook", id];
}

/** ["webhook_by_recording", recordingId, createdAt, delivery] */
export function webhookByRecordingKey(
  recordingId: string,
  createdAt: number,
  id: string,
): Deno.KvKey {
  return ["webhook_by_recording", recordingId, createdAt, id];
}

/** Prefix of a recording's deliveries, oldest first. */
export function webhookByRecordingPrefix(recordingId: string): Deno.KvKey {
  return ["webhook_by_recording", recordingId];
}

/** ["webhook_due", dueAt, delivery]: present while the delivery is pending. */
export function webhookDueKey(dueAt: number, id: string): Deno.KvKey {
  return ["webhook_due", dueAt, id];
}

/** Prefix of the pending deliveries, soonest due first. */
export function webhookDuePrefix(): Deno.KvKey {
  return ["webhook_due"];
}

/** ["webhook_wakeup"]: rewritten whenever deliveries are added or replayed. */
export function webhookWakeupKey(): Deno.KvKey {
  return ["webhook_wakeup"];
}

/** ["webhook_worker"]: the lease of the instance that delivers webhooks. */
export function webhookWorkerKey(): Deno.KvKey {
  return ["webhook_worker"];
}
