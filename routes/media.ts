import { Hono } from "hono";
import type { AppContext } from "../lib/core/context.ts";
import { MethodNotAllowedError } from "../lib/core/errors.ts";
import { serveFinishedFile, serveSource } from "../lib/http/media.ts";

/** `/media/<id>/<name>`: finished files with byte ranges. */
export function mediaRoutes(ctx: AppContext): Hono {
  const media = new Hono({ strict: false });
  media.on(
    ["GET", "HEAD"],
    "/media/:id/source",
    (c) => serveSource(ctx, c.req.raw, c.req.param("id")),
  );
  media.on(["GET", "HEAD"], "/media/:id/:name", (c) =>
    serveFinishedFile(
      ctx,
      c.req.raw,
      c.req.param("id"),
      c.req.param("name"),
    ));
  media.all("/media/:id/:name", (c) => {
    throw new MethodNotAllowedError(c.req.method, ["GET", "HEAD"]);
  });
  return media;
}
