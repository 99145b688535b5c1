/**
 * Serving a recording's finished files with byte ranges, so a `<video>`
 * element can seek in them. Only names the recording lists are served.
 */

import type { AppContext } from "../core/context.ts";
import { NotFoundError } from "../core/errors.ts";
import { contentTypeFor, fileResponse } from "./http_file.ts";
import type { Recording } from "../kv/keys.ts";
import { readSourceFile } from "../recordings/source.ts";
import { getRecording } from "../recordings/ids.ts";
import { listsFile } from "../recordings/listing.ts";
import { authorizeView } from "./access.ts";
import { canLinkFiles } from "../storage/storage.ts";

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

/**
 * Whether `name` is a finished file (video or poster) this recording lists
 * now: all of them once complete, the ones made early while processing.
 */
function isFinishedFile(rec: Recording, name: string): boolean {
  return listsFile(rec, name);
}

function missingFile(id: string, name: string): NotFoundError {
  const shown = name.length > 80 ? `${name.slice(0, 80)}...` : name;
  return new NotFoundError(
    `Recording ${id} has no finished file named "${shown}"; GET /video/${id}/ lists its files.`,
  );
}

/**
 * Answers GET or HEAD for `/media/<id>/<name>` (200, 206, 304 or 416), the
 * bytes proxied from storage; with MEDIA_REDIRECT and a storage that hands
 * out direct URLs (object storage), a 302 to a presigned URL for that
 * method instead, once the recording and the name are checked.
 */
export async function serveFinishedFile(
  ctx: AppContext,
  req: Request,
  id: string,
  name: string,
): Promise<Response> {
  await authorizeView(ctx, id, req);
  const rec = await getRecording(ctx, id);
  if (!SAFE_NAME.test(name) || !isFinishedFile(rec, name)) {
    throw missingFile(id, name);
  }
  const storage = ctx.storage;
  if (ctx.config.mediaRedirect && canLinkFiles(storage)) {
    const method = req.method === "HEAD" ? "HEAD" : "GET";
    return new Response(null, {
      status: 302,
      headers: {
        Location: await storage.fileUrl(
          id,
          name,
          method,
          ctx.config.mediaRedirectTtlS,
        ),
        "Cache-Control": "private, no-store",
      },
    });
  }
  const info = await storage.statFile(id, name);
  if (!info) throw missingFile(id, name);
  return await fileResponse(
    req,
    info,
    contentTypeFor(name),
    (start, end) => ctx.storage.openFile(id, name, start, end),
    { cacheControl: "private, max-age=3600" },
  );
}

/**
 * Answers GET or HEAD for `/media/<id>/source`: the recording exactly as
 * uploaded (the held chunks in order), for checks, archiving and live
 * viewers, with byte ranges over what is held now (200, 206, 304 or 416).
 * `X-Settled-Length` says how many bytes from the start can no longer
 * change (lib/recordings/source.ts): a live viewer asks for
 * `Range: bytes=<what it has>-` and appends up to there.
 */
export async function serveSource(
  ctx: AppContext,
  req: Request,
  id: string,
): Promise<Response> {
  await authorizeView(ctx, id, req);
  const source = await readSourceFile(ctx, id);
  return await fileResponse(
    req,
    {
      size: source.size,
      // The held chunks only grow, so their count and length name them;
      // no Last-Modified: a second's resolution would hide a chunk.
      etag: `"src-${source.chunks}-${source.size}"`,
      mtime: new Date(NaN),
    },
    source.recording.mimeType?.split(";")[0] ?? "application/octet-stream",
    // The first bytes are read before answering, so a store that is down
    // is a clean 503 rather than a 206 whose body breaks off.
    (start, end) => primed(source.open(start, end)),
    {
      cacheControl: "no-store",
      headers: {
        "Content-Disposition": `attachment; filename="${id}.source"`,
        "X-Settled-Length": String(source.settled),
      },
    },
  );
}

/** `stream` with its first piece read already (errors of opening it thrown). */
async function primed(
  stream: ReadableStream<Uint8Array>,
): Promise<ReadableStream<Uint8Array>> {
  const reader = stream.getReader();
  let first: ReadableStreamReadResult<Uint8Array> | undefined = await reader
    .read();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = first ?? await reader.read();
      first = undefined;
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
