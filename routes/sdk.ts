import { Hono } from "hono";
import { MethodNotAllowedError } from "../lib/core/errors.ts";
import { serveSdkFile } from "../lib/http/sdk_assets.ts";

/**
 * `/sdk/*`: the recorder SDK for other origins and extensions
 * (lib/http/sdk_assets.ts; the module is client/sdk/recorder.ts).
 */
export function sdkRoutes(): Hono {
  const sdk = new Hono({ strict: false });
  sdk.on(
    ["GET", "HEAD"],
    "/sdk/:name",
    (c) => serveSdkFile(c.req.raw, c.req.param("name")),
  );
  sdk.all("/sdk/:name", (c) => {
    throw new MethodNotAllowedError(c.req.method, ["GET", "HEAD"]);
  });
  return sdk;
}
