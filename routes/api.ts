import { Hono } from "hono";
import { getConnInfo } from "hono/deno";
import {
  authorizeUpload,
  authorizeView,
  clientAddress,
  RateLimiter,
  requireApiKey,
} from "../lib/http/access.ts";
import { receiveChunk } from "../lib/http/chunk_body.ts";
import type { AppContext } from "../lib/core/context.ts";
import { MethodNotAllowedError } from "../lib/core/errors.ts";
import { readLastChunkHint } from "../lib/http/complete_request.ts";
import {
  endpointUrls,
  finishedFilesBody,
  statusBody,
} from "../lib/http/responses.ts";
import { chunkLedger } from "../lib/recordings/chunks.ts";
import { getRecording } from "../lib/recordings/ids.ts";
import { parseTitle } from "../lib/recordings/library.ts";
import { readTitleField } from "../lib/http/title_request.ts";
import {
  completeRecording,
  createRecording,
  retryRecording,
} from "../lib/recordings/sessions.ts";

function onlyMethods(app: Hono, path: string, allowed: string[]): void {
  app.all(path, (c) => {
    throw new MethodNotAllowedError(c.req.method, allowed);
  });
}

/** The five public endpoints of docs/api.md, plus `retry_job` and `chunks`. */
export function apiRoutes(ctx: AppContext): Hono {
  const api = new Hono({ strict: false });
  const createLimiter = new RateLimiter(ctx.config.createRatePerMinute);

  api.post("/create", async (c) => {
    requireApiKey(ctx.config, c.req.raw);
    let remote: string | undefined;
    try {
      remote = getConnInfo(c).remote.address;
    } catch {
      remote = undefined;
    }
    createLimiter.take(clientAddress(ctx.config, c.req.raw, remote));
    const title = parseTitle(
      (await readTitleField(c.req.raw, "create")).value,
    );
    const { recording, uploadToken } = await createRecording(ctx, { title });
    return c.json({
      video_id: recording.id,
      upload_token: uploadToken,
      urls: endpointUrls(recording.id),
    });
  });

  api.post("/add_data/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeUpload(ctx, id, c.req.raw);
    const result = await receiveChunk(ctx, id, c.req.raw);
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
    const id = c.req.param("id");
    await authorizeUpload(ctx, id, c.req.raw);
    const lastChunk = await readLastChunkHint(c.req.raw);
    const result = await completeRecording(ctx, id, { lastChunk });
    return c.json({
      message: result.message,
      status: result.recording.status,
    });
  });

  api.post("/retry_job/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeUpload(ctx, id, c.req.raw);
    const result = await retryRecording(ctx, id);
    return c.json({
      message: result.message,
      status: result.recording.status,
    });
  });

  api.get("/check_status/:id", async (c) => {
    await authorizeView(ctx, c.req.param("id"), c.req.raw);
    const rec = await getRecording(ctx, c.req.param("id"));
    return c.json(statusBody(rec));
  });

  api.get("/video/:id", async (c) => {
    await authorizeView(ctx, c.req.param("id"), c.req.raw);
    const rec = await getRecording(ctx, c.req.param("id"));
    return c.json(finishedFilesBody(rec));
  });

  api.get("/chunks/:id", async (c) => {
    await authorizeView(ctx, c.req.param("id"), c.req.raw);
    return c.json(await chunkLedger(ctx, c.req.param("id")));
  });

  onlyMethods(api, "/create", ["POST"]);
  onlyMethods(api, "/add_data/:id", ["POST"]);
  onlyMethods(api, "/complete_job/:id", ["POST"]);
  onlyMethods(api, "/retry_job/:id", ["POST"]);
  onlyMethods(api, "/check_status/:id", ["GET", "HEAD"]);
  onlyMethods(api, "/video/:id", ["GET", "HEAD"]);
  onlyMethods(api, "/chunks/:id", ["GET", "HEAD"]);
  return api;
}
