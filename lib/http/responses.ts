/**
 * The JSON bodies of the docs/api.md endpoints, built from a recording record.
 */

import type { Recording } from "../kv/keys.ts";
import { listedFiles } from "../recordings/listing.ts";

/** The status object of a recording (docs/api.md), with our extensions. */
export function statusBody(rec: Recording): Record<string, unknown> {
  const body: Record<string, unknown> = {
    status: rec.status,
    bytes_received: rec.bytesReceived,
    chunks_received: rec.chunksReceived,
    created_at: new Date(rec.createdAt).toISOString(),
    updated_at: new Date(rec.updatedAt).toISOString(),
  };
  if (rec.status === "processing") body.progress = rec.progress ?? 0;
  if (rec.status === "complete") body.progress = 1;
  if (rec.stage && rec.status === "processing") body.stage = rec.stage;
  if (rec.durationS !== undefined) body.duration_s = rec.durationS;
  if (rec.status === "failed" && rec.error) body.error = rec.error;
  // Which finished files can be fetched already (the WebM before a
  // re-encoded MP4); `complete` still means all of them.
  if (rec.status === "processing" || rec.status === "complete") {
    body.ready_files = listedFiles(rec).files;
  }
  return body;
}

/**
 * The finished-files object of docs/api.md, with download URLs: every
 * file once `complete`, and while `processing` those made already
 * (lib/recordings/listing.ts), each listed once and never changed after.
 */
export function finishedFilesBody(rec: Recording): Record<string, unknown> {
  const { files, poster } = listedFiles(rec);
  return {
    completed_videos: files,
    urls: files.map((name) => `/media/${rec.id}/${name}`),
    poster: poster ? `/media/${rec.id}/${poster}` : null,
  };
}

/** The URLs of a session's endpoints, returned by `create`. */
export function endpointUrls(id: string): Record<string, string> {
  return {
    add_data: `/add_data/${id}/`,
    complete_job: `/complete_job/${id}/`,
    check_status: `/check_status/${id}/`,
    video: `/video/${id}/`,
    retry_job: `/retry_job/${id}/`,
    page: `/videos/${id}`,
  };
}
