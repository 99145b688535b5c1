import { Hono } from "hono";
import type { AppContext } from "../lib/core/context.ts";
import { MethodNotAllowedError } from "../lib/core/errors.ts";
import { serveFinishedFile, serveSource } from "../lib/http/media.ts";
import { isLiveFileName, serveLiveFile } from "../lib/http/live_media.ts";

/**
 * `/media/<id>/<name>`: finished files with byte ranges, the source as
 * uploaded, and the live encode's HLS files (`live.m3u8`, `live-init.mp4`,
 * `live-<n>.m4s`) while there is one.
 */
export function mediaRoutes(ctx: AppContext): Hono {
  const media = new Hono({ strict: false });
  media.on(
    ["GET", "HEAD"],
    "/media/:id/source",
    (c) => serveSource(ctx, c.req.raw, c.req.param("id")),
  );
  media.on(["GET", "HEAD"], "/media/:id/:name", (c) => {
    const [id, name] = [c.req.param("id"), c.req.param("name")];
    return isLiveFileName(name)
      ? serveLiveFile(ctx, c.req.raw, id, name)
      : serveFinishedFile(ctx, c.req.raw, id, name);
  });
  media.all("/media/:id/:name", (c) => {
    throw new MethodNotAllowedError(c.req.method, ["GET", "HEAD"]);
  });
  return media;
}
