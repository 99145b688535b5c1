import { Hono } from "hono";
import type { MiddlewareHandler } from "hono";
import { requireApiKey } from "../lib/http/access.ts";
import type { AppContext } from "../lib/core/context.ts";
import { MethodNotAllowedError } from "../lib/core/errors.ts";
import { authorizeUpload, authorizeView } from "../lib/recordings/recordings.ts";
import {
  createUpload,
  headUpload,
  patchUpload,
  terminateUpload,
  tusDiscoveryHeaders,
  tusHeaders,
} from "../lib/tus/uploads.ts";

/**
 * Runs before CORS on `/files*`: honours X-HTTP-Method-Override and puts the
 * tus headers on every answer, discovery headers on OPTIONS.
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

  const patch = async (id: string, req: Request) => {
    await authorizeUpload(ctx, id, req);
    return await patchUpload(ctx, id, req);
  };
  const terminate = async (id: string, req: Request) => {
    await authorizeUpload(ctx, id, req);
    await terminateUpload(ctx, id, req);
  };

  tus.patch(
    "/files/:id",
    async (c) => c.body(null, 204, await patch(c.req.param("id"), c.req.raw)),
  );

  tus.delete("/files/:id", async (c) => {
    await terminate(c.req.param("id"), c.req.raw);
    return c.body(null, 204);
  });

  tus.post("/files/:id", async (c) => {
    const override = c.req.header("x-http-method-override")?.toUpperCase();
    if (override === "PATCH") {
      return c.body(null, 204, await patch(c.req.param("id"), c.req.raw));
    }
    if (override === "DELETE") {
      await terminate(c.req.param("id"), c.req.raw);
      return c.body(null, 204);
    }
    throw new MethodNotAllowedError("POST", ["HEAD", "PATCH", "DELETE"]);
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
