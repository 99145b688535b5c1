/**
 * The URLs ffmpeg and ffprobe are given for local files: `file:` for a whole
 * file, the `subfile` protocol for its first bytes.
 */

import { resolve } from "node:path";

/** ffmpeg's URL for a local file. */
export function fileUrl(path: string): string {
  return `file:${resolve(path)}`;
}

/**
 * ffmpeg's URL for bytes [0, end) of a local file (the `subfile` protocol;
 * its options end at ",,:", so the path must hold no comma).
 */
export function subfileUrl(path: string, end: number): string {
  return `subfile,,start,0,end,${end},,:${fileUrl(path)}`;
}
