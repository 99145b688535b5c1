/**
 * One log line per answered request: at `warn` for a 4xx, `error` for a
 * 5xx (method, path, status, recording id, the error sentence, duration),
 * and at `debug` for everything else, so successful chunk requests (the hot
 * path) are logged only with LOG_LEVEL=debug.
 */

import type { MiddlewareHandler } from "hono";
import type { Logger, LogLevel } from "../core/log.ts";

const RECORDING_IN_PATH =
  /\/([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})(?:[/.]|$)/;

/** The error sentence of a JSON error reply, if it is one. */
async function errorSentence(res: Response): Promise<string | undefined> {
  if (!/^application\/json/.test(res.headers.get("content-type") ?? "")) {
    return undefined;
  }
  try {
    const body = await res.clone().json();
    return typeof body?.error === "string" ? body.error : undefined;
  } catch {
    return undefined;
  }
}

/** Middleware writing the request lines to `log`. */
export function requestLog(log: Logger): MiddlewareHandler {
  return async (c, next) => {
    // The method-override middleware answers through a second dispatch of
    // the overridden request, which logs it.
    if (c.req.header("x-http-method-override")) return await next();
    const started = performance.now();
    await next();
    const status = c.res.status;
    const level: LogLevel = status >= 500
      ? "error"
      : status >= 400
      ? "warn"
      : "debug";
    if (!log.enabled(level)) return;
    const path = c.req.path;
    log.log(level, "request", {
      method: c.req.method,
      path,
      status,
      recording: path.match(RECORDING_IN_PATH)?.[1],
      error: status >= 400 ? await errorSentence(c.res) : undefined,
      duration_ms: Math.round((performance.now() - started) * 10) / 10,
    });
  };
}
