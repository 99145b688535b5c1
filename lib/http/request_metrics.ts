/**
 * Counts every answered request in `tapedeck_http_requests_total` by the
 * route pattern that answered it (`/add_data/:id`, never the id, so the
 * label stays bounded; `other` when no route matched), method and status,
 * and times the 2xx chunk requests (`add_data`, tus `PATCH`) into the
 * chunk latency histogram.
 */

import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { AppContext } from "../core/context.ts";
import { metricsOf } from "../ops/metrics.ts";

/** Methods kept as labels; others are counted as `OTHER`. */
const METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
]);

/** The chunk endpoints' protocol label, by route pattern and method. */
function chunkProtocol(route: string, method: string): string | null {
  if (method === "POST" && route.startsWith("/add_data")) return "api";
  if (method === "PATCH" && route.startsWith("/files")) return "tus";
  return null;
}

/** Middleware counting requests for `/metrics`. */
export function requestMetrics(ctx: AppContext): MiddlewareHandler {
  const metrics = metricsOf(ctx);
  return async (c, next) => {
    // The method-override middleware answers through a second dispatch of
    // the overridden request, which is counted.
    if (c.req.header("x-http-method-override")) return await next();
    const started = performance.now();
    await next();
    let route = "other";
    try {
      const path = routePath(c);
      if (path && path !== "*" && path !== "/*") route = path;
    } catch {
      // no route matched
    }
    const method = METHODS.has(c.req.method) ? c.req.method : "OTHER";
    const status = c.res.status;
    metrics.requests.inc({ route, method, status: String(status) });
    const protocol = status < 300 ? chunkProtocol(route, method) : null;
    if (protocol) {
      metrics.chunkSeconds.observe(
        { protocol },
        (performance.now() - started) / 1000,
      );
    }
  };
}
