/**
 * The live encode: what it stores and what the record says about it, for
 * the viewer side (routes, pages) and the job.
 *
 * While a recording whose MP4 needs a re-encode (a VP8 WebM) is being
 * recorded, a worker with a free slot (LIVE_ENCODE_SLOTS per worker) feeds
 * its committed chunks, in index order, to one ffmpeg (nice 19) that
 * encodes H.264 with a keyframe every 2 s (variable frame rate kept, Opus
 * copied) into fragmented-MP4 HLS segments. Each finished segment, then
 * the playlist that lists it, is published as a file of the recording
 * (`Storage.publishFile`, both backends), under flat names:
 *
 * | file                | what                                                               |
 * | ------------------- | ------------------------------------------------------------------ |
 * | `live.m3u8`         | the playlist (`#EXT-X-PLAYLIST-TYPE:EVENT`; `#EXT-X-ENDLIST` once done), URIs relative |
 * | `live-init.mp4`     | the init segment (`#EXT-X-MAP`), published before the first media segment |
 * | `live-00001.m4s` ... | media segments, numbered from 1, about 2 s each, each published (flushed) before the playlist lists it; never changed after |
 *
 * The record carries the viewers' view (`Recording.live`,
 * {@link LiveEncodeState} in lib/kv/keys.ts), written through
 * lib/recordings/transitions.ts together with the claim, at most every
 * {@link LIVE_WRITE_MS} (and at each end):
 *
 * ```text
 * live: { mode: "encode", state: "running" | "done" | "abandoned",
 *         playlist: "live.m3u8", init: "live-init.mp4",
 *         segments: N,       // live-00001.m4s .. live-<N>.m4s are published and listed
 *         encodedS: S,       // seconds those segments hold
 *         updatedAt, reason?, removed? }
 * ```
 *
 * `done`: the playlist ends with `#EXT-X-ENDLIST` and holds the whole
 * recording; the job then remuxes the segments into the MP4 (`-c copy`)
 * instead of encoding. `abandoned`: no more segments come (the worker died,
 * the encode fell LIVE_ENCODE_MAX_LAG_S behind, ffmpeg failed; `reason`);
 * the job encodes the MP4 as without a live encode. A recording that got
 * no live encode has no `live` at all.
 *
 * Storage and deletion: the live files are files of the recording like its
 * finished files, so they go when it is deleted (every backend), and a run
 * that publishes after a delete removes what it stored. They are not
 * finished files: never in `completed_videos`. Once the recording is
 * `complete` or `failed` they are removed LIVE_FILES_KEEP_S later (default
 * 300 s, so a viewer playing the live stream has time to switch to the
 * finished files) by the sweep, which then sets `removed: true`.
 */

/** The playlist's name. */
export const LIVE_PLAYLIST = "live.m3u8";

/** The init segment's name. */
export const LIVE_INIT = "live-init.mp4";

/** Seconds per segment (and between forced keyframes). */
export const LIVE_SEGMENT_S = 2;

/** The record's `live` and the claim are written at most this often while running (ms). */
export const LIVE_WRITE_MS = 2_000;

/** The name of media segment `n` (from 1): `live-00001.m4s`. */
export function liveSegmentName(n: number): string {
  return `live-${String(n).padStart(5, "0")}.m4s`;
}

/** Every live file of a live encode that published `segments` segments. */
export function liveFileNames(segments: number): string[] {
  const names = [LIVE_PLAYLIST, LIVE_INIT];
  for (let n = 1; n <= segments; n++) names.push(liveSegmentName(n));
  return names;
}
