/**
 * Which finished files a recording lists (docs/api.md `completed_videos`,
 * its poster, and the names `/media` serves). A file is listed once it is
 * made and no chunk can join the recording any more, and it never changes
 * after: while the recording is `processing` the files made early (the
 * seekable WebM or MKV and the poster, before a re-encoded MP4) are
 * listed, and every file once it is `complete`. Nothing is listed while it
 * records, nor while it is `failed` (a retry lists again what was listed).
 */

import type { Recording } from "../kv/keys.ts";

/** The files a recording lists now: video names, and its poster's name. */
export interface ListedFiles {
  files: string[];
  poster?: string;
}

/** See the module's description. */
export function listedFiles(rec: Recording): ListedFiles {
  if (rec.status !== "processing" && rec.status !== "complete") {
    return { files: [] };
  }
  return { files: rec.files, poster: rec.poster };
}

/** Whether `name` is a video or the poster that `rec` lists now. */
export function listsFile(rec: Recording, name: string): boolean {
  const listed = listedFiles(rec);
  return listed.files.includes(name) || listed.poster === name;
}
