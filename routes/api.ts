import { Hono } from "hono";
import { receiveChunk } from "../lib/chunk_body.ts";
import type { AppContext } from "../lib/context.ts";
import { MethodNotAllowedError } from "../lib/errors.ts";
import {
  completeRecording,
  createRecording,
  finishedFilesBody,
  getRecording,
  statusBody,
} from "../lib/recordings.ts";

function endpointUrls(id: string) {
  return {
    add_data: `/add_data/${id}/`,
    complete_job: `/complete_job/${id}/`,
    check_status: `/check_status/${id}/`,
    video: `/video/${id}/`,
    page: `/videos/${id}`,
  };
}

function onlyMethods(app: Hono, path: string, allowed: string[]): void {
  app.all(path, (c) => {
    throw new MethodNotAllowedError(c.req.method, allowed);
  });
}

/** The five endpoints of SPEC.md. */
export function apiRoutes(ctx: AppContext): Hono {
  const api = new Hono({ strict: false });

  api.post("/create", async (c) => {
    const rec = await createRecording(ctx);
    return c.json({ video_id: rec.id, urls: endpointUrls(rec.id) });
  });

  api.post("/add_data/:id", async (c) => {
    const result = await receiveChunk(ctx, c.req.param("id"), c.req.raw);
    return c.json({
      message: "Chunk received",
      index: result.index,
      duplicate: result.duplicate,
      bytes_received: result.recording.bytesReceived,
      chunks_received: result.recording.chunksReceived,
      ...(result.completed
        ? { status: result.completed.recording.status }
        : {}),
    });
  });

  api.post("/complete_job/:id", async (c) => {
    const result = await completeRecording(ctx, c.req.param("id"));
    return c.json({
      message: result.message,
      status: result.recording.status,
    });
  });

  api.get("/check_status/:id", async (c) => {
    const rec = await getRecording(ctx, c.req.param("id"));
    return c.json(statusBody(rec));
  });

  api.get("/video/:id", async (c) => {
    const rec = await getRecording(ctx, c.req.param("id"));
    return c.json(finishedFilesBody(rec));
  });

  onlyMethods(api, "/create", ["POST"]);
  onlyMethods(api, "/add_data/:id", ["POST"]);
  onlyMethods(api, "/complete_job/:id", ["POST"]);
  onlyMethods(api, "/check_status/:id", ["GET", "HEAD"]);
  onlyMethods(api, "/video/:id", ["GET", "HEAD"]);
  return api;
}
