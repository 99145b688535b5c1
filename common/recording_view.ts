/**
 * The browser-safe view of a recording and the live WebSocket messages that
 * carry it. Shared by the server (pages, sockets) and the islands, so it
 * imports nothing but types.
 */

import type { Recording } from "../lib/kv/keys.ts";

/**
 * What pages and sockets show of a recording (serializable, no internals):
 * the record without its upload bookkeeping and token hash.
 */
export type RecordingView = Omit<
  Recording,
  | "nextIndex"
  | "tokenHash"
  | "uploadLength"
  | "metadata"
  | "mediaChecked"
  | "protocol"
  | "arrivals"
  | "indexes"
>;

/** The first message on `/ws`: a page of recordings, newest first. */
export interface ListSnapshotMessage {
  type: "snapshot";
  recordings: RecordingView[];
  /** Cursor of the next (older) page, or null at the end. */
  cursor: string | null;
  /** Server time (ms) when the snapshot was read. */
  now: number;
}

/** The first message on `/ws/<id>`: the recording as it is now. */
export interface RecordingSnapshotMessage {
  type: "snapshot";
  recording: RecordingView;
  now: number;
}

/** Every later message: one committed change to a recording. */
export interface ChangeMessage {
  type: "change";
  recording: RecordingView;
}

/** Any message a live socket sends. */
export type LiveMessage =
  | ListSnapshotMessage
  | RecordingSnapshotMessage
  | ChangeMessage;

/** Strips a stored recording down to what a page may show. */
export function toRecordingView(rec: Recording): RecordingView {
  return {
    id: rec.id,
    status: rec.status,
    createdAt: rec.createdAt,
    updatedAt: rec.updatedAt,
    lastChunkAt: rec.lastChunkAt,
    bytesReceived: rec.bytesReceived,
    chunksReceived: rec.chunksReceived,
    mimeType: rec.mimeType,
    progress: rec.progress,
    stage: rec.stage,
    durationS: rec.durationS,
    files: rec.files,
    poster: rec.poster,
    media: rec.media,
    error: rec.error,
    finishedAt: rec.finishedAt,
    expired: rec.expired,
    deleted: rec.deleted,
    title: rec.title,
    live: rec.live,
  };
}

/** Whether `next` is the same or a later state than `current` of one recording. */
export function isSameOrNewer(
  current: RecordingView | undefined,
  next: RecordingView,
): boolean {
  return !current || next.updatedAt >= current.updatedAt;
}

/**
 * Applies one change to a newest-first list: replaces the row if it is there
 * and older (removes it if it was deleted or `keep` no longer holds for
 * it), adds it in creation order when `addNew` is set and `keep` holds,
 * and ignores it otherwise. Returns the same array when
 * nothing changed.
 */
export function mergeRecording(
  list: RecordingView[],
  next: RecordingView,
  addNew: boolean,
  keep: (rec: RecordingView) => boolean = () => true,
): RecordingView[] {
  const at = list.findIndex((r) => r.id === next.id);
  if (at >= 0) {
    if (!isSameOrNewer(list[at], next)) return list;
    if (next.deleted || !keep(next)) {
      return list.filter((r) => r.id !== next.id);
    }
    const copy = list.slice();
    copy[at] = next;
    return copy;
  }
  if (!addNew || next.deleted || !keep(next)) return list;
  const copy = [...list, next];
  copy.sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
  return copy;
}

/** URL of a finished file of a recording. */
export function mediaUrl(id: string, name: string): string {
  return `/media/${id}/${encodeURIComponent(name)}`;
}

/** MIME type of a finished video file by its extension. */
export function videoType(name: string): string {
  if (name.endsWith(".mp4")) return "video/mp4";
  if (name.endsWith(".webm")) return "video/webm";
  if (name.endsWith(".mkv")) return "video/x-matroska";
  return "application/octet-stream";
}
