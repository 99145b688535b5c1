/**
 * The JSON bodies of the library API (`/api/recordings`), in the style of
 * the docs/api.md endpoints (snake_case keys, ISO 8601 times).
 */

import type { Recording } from "../kv/keys.ts";
import { mediaUrl, videoType } from "../../common/recording_view.ts";
import { endpointUrls } from "./responses.ts";
import { listedFiles } from "../recordings/listing.ts";

/** One recording as the library API shows it. */
export function recordingBody(rec: Recording): Record<string, unknown> {
  // The files made so far while processing (lib/recordings/listing.ts).
  const { files, poster } = listedFiles(rec);
  const sizes = rec.media?.sizes ?? {};
  const body: Record<string, unknown> = {
    id: rec.id,
    title: rec.title ?? null,
    status: rec.status,
    created_at: new Date(rec.createdAt).toISOString(),
    updated_at: new Date(rec.updatedAt).toISOString(),
    bytes_received: rec.bytesReceived,
    chunks_received: rec.chunksReceived,
    duration_s: rec.durationS ?? null,
    poster: poster ? mediaUrl(rec.id, poster) : null,
    files: files.map((name) => ({
      name,
      url: mediaUrl(rec.id, name),
      type: videoType(name),
      size: sizes[name] ?? null,
    })),
    urls: {
      ...endpointUrls(rec.id),
      embed: `/embed/${rec.id}`,
      api: `/api/recordings/${rec.id}`,
    },
  };
  if (rec.status === "processing") body.progress = rec.progress ?? 0;
  if (rec.status === "complete") body.progress = 1;
  if (rec.stage && rec.status === "processing") body.stage = rec.stage;
  if (rec.status === "failed" && rec.error) body.error = rec.error;
  if (rec.mimeType) body.mime_type = rec.mimeType;
  return body;
}
