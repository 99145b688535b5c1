import { Hono } from "hono";
import type { AppContext } from "../lib/core/context.ts";
import { BadRequestError, MethodNotAllowedError } from "../lib/core/errors.ts";
import { authorizeDelete, authorizeView } from "../lib/http/access.ts";
import { loadRecordPage, parsePageQuery } from "../lib/http/dashboard.ts";
import { authorizeList, authorizeRename } from "../lib/http/library_access.ts";
import { recordingBody } from "../lib/http/library_responses.ts";
import { readTitleField } from "../lib/http/title_request.ts";
import { getRecording } from "../lib/recordings/ids.ts";
import {
  loadUploadPicture,
  parseTitle,
  renameRecording,
} from "../lib/recordings/library.ts";
import { deleteRecording } from "../lib/recordings/sessions.ts";

function onlyMethods(app: Hono, path: string, allowed: string[]): void {
  app.all(path, (c) => {
    throw new MethodNotAllowedError(c.req.method, allowed);
  });
}

/**
 * The library API (docs/api.md, "The library"): list with search and a
 * status filter, read, rename and delete recordings, and the picture of
 * an upload.
 */
export function libraryRoutes(ctx: AppContext): Hono {
  const library = new Hono({ strict: false });

  library.get("/api/recordings", async (c) => {
    authorizeList(ctx, c.req.raw);
    const query = parsePageQuery(new URL(c.req.url).searchParams);
    const page = await loadRecordPage(ctx, query);
    return c.json({
      recordings: page.recordings.map(recordingBody),
      cursor: page.cursor,
    });
  });

  library.get("/api/recordings/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeView(ctx, id, c.req.raw);
    return c.json(recordingBody(await getRecording(ctx, id)));
  });

  library.patch("/api/recordings/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeRename(ctx, id, c.req.raw);
    const field = await readTitleField(c.req.raw, "rename");
    if (!field.given) {
      throw new BadRequestError(
        'Send the new title as {"title": "<title>"} (null or "" for none).',
      );
    }
    const rec = await renameRecording(ctx, id, parseTitle(field.value));
    return c.json(recordingBody(rec));
  });

  library.delete("/api/recordings/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeDelete(ctx, id, c.req.raw);
    await deleteRecording(ctx, id);
    return c.json({
      message:
        `Recording ${id} was deleted: its files, chunks and record are gone.`,
      id,
    });
  });

  library.get("/api/recordings/:id/upload", async (c) => {
    const id = c.req.param("id");
    await authorizeView(ctx, id, c.req.raw);
    return c.json(await loadUploadPicture(ctx, id));
  });

  onlyMethods(library, "/api/recordings", ["GET", "HEAD"]);
  onlyMethods(library, "/api/recordings/:id", [
    "GET",
    "HEAD",
    "PATCH",
    "DELETE",
  ]);
  onlyMethods(library, "/api/recordings/:id/upload", ["GET", "HEAD"]);
  return library;
}
