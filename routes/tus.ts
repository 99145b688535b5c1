import { Hono } from "hono";
import type { MiddlewareHandler } from "hono";
import {
  authorizeDelete,
  authorizeUpload,
  authorizeView,
  requireApiKey,
} from "../lib/http/access.ts";
import type { AppContext } from "../lib/core/context.ts";
import { MethodNotAllowedError } from "../lib/core/errors.ts";
import { tusDiscoveryHeaders, tusHeaders } from "../lib/tus/protocol.ts";
import {
  createUpload,
  headUpload,
  patchUpload,
  terminateUpload,
} from "../lib/tus/uploads.ts";

/**
 * Runs before CORS on `/files*`: puts the tus headers on every answer,
 * discovery headers on OPTIONS.
 */
export function tusMiddleware(ctx: AppContext): MiddlewareHandler {
  return async (c, next) => {
    await next();
    const headers = c.req.method === "OPTIONS"
      ? tusDiscoveryHeaders(ctx)
      : tusHeaders();
    for (const [k, v] of Object.entries(headers)) c.res.headers.set(k, v);
  };
}

/** tus 1.0.0 under `/files/`. */
export function tusRoutes(ctx: AppContext): Hono {
  const tus = new Hono({ strict: false });

  tus.options("/files/:id?", (c) => c.body(null, 204));

  tus.post("/files", async (c) => {
    requireApiKey(ctx.config, c.req.raw);
    const { recording, uploadToken } = await createUpload(ctx, c.req.raw);
    return c.body(null, 201, {
      Location: `/files/${recording.id}`,
      "Upload-Offset": String(recording.bytesReceived),
      "X-Upload-Token": uploadToken,
      "X-Video-Id": recording.id,
    });
  });

  tus.get("/files/:id", async (c) => {
    if (c.req.method !== "HEAD") {
      throw new MethodNotAllowedError(c.req.method, [
        "HEAD",
        "PATCH",
        "DELETE",
      ]);
    }
    await authorizeView(ctx, c.req.param("id"), c.req.raw);
    return c.body(
      null,
      200,
      await headUpload(ctx, c.req.param("id"), c.req.raw),
    );
  });

  tus.patch("/files/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeUpload(ctx, id, c.req.raw);
    return c.body(null, 204, await patchUpload(ctx, id, c.req.raw));
  });

  tus.delete("/files/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeDelete(ctx, id, c.req.raw);
    await terminateUpload(ctx, id, c.req.raw);
    return c.body(null, 204);
  });

  tus.all("/files", (c) => {
    throw new MethodNotAllowedError(c.req.method, ["POST", "OPTIONS"]);
  });
  tus.all("/files/:id", (c) => {
    throw new MethodNotAllowedError(c.req.method, [
      "HEAD",
      "PATCH",
      "DELETE",
      "OPTIONS",
    ]);
  });
  return tus;
}
