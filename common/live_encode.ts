/**
 * What the viewer side needs of a recording's live encode: the H.264 HLS
 * segments the processing side makes while a recording runs and stores as
 * files of the recording (`live.m3u8`, `live-init.mp4`, `live-00001.m4s`;
 * lib/live_encode/contract.ts), with its state on the record (`live`,
 * `LiveEncodeState` in lib/kv/keys.ts). Imported by the server (`/media`)
 * and the page, so it imports nothing but types.
 */

import type { LiveEncodeState } from "../lib/kv/keys.ts";

export type { LiveEncodeState };

/** File names of a live encode: the playlist, the init segment, the media segments. */
export const LIVE_FILE_NAME = /^live(?:\.m3u8|-init\.mp4|-\d{5,9}\.m4s)$/;

/** The record's live encode, or undefined when it has none. */
export function liveEncodeOf(
  rec: { live?: LiveEncodeState },
): LiveEncodeState | undefined {
  const live = rec.live;
  return live && typeof live === "object" ? live : undefined;
}

/**
 * The playlist's name when the live encode can be watched now: it runs (or
 * finished), lists at least one segment, and its files are still kept.
 */
export function livePlaylistOf(
  rec: { live?: LiveEncodeState },
): string | undefined {
  const live = liveEncodeOf(rec);
  if (!live || live.removed) return undefined;
  if (live.state !== "running" && live.state !== "done") return undefined;
  if (!(live.segments > 0)) return undefined;
  return LIVE_FILE_NAME.test(live.playlist) && live.playlist.endsWith(".m3u8")
    ? live.playlist
    : undefined;
}

/** Whether a live encode runs but lists no segment yet (its first one is coming). */
export function liveEncodeStarting(rec: { live?: LiveEncodeState }): boolean {
  const live = liveEncodeOf(rec);
  return !!live && !live.removed && live.state === "running" &&
    !(live.segments > 0);
}

/** The segment number of a media segment's name (`live-00012.m4s` is 12), else undefined. */
export function segmentNumber(name: string): number | undefined {
  const m = /^live-(\d{5,9})\.m4s$/.exec(name);
  return m ? Number(m[1]) : undefined;
}
