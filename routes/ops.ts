import { Hono } from "hono";
import type { AppContext } from "../lib/core/context.ts";
import { MethodNotAllowedError } from "../lib/core/errors.ts";
import { requireApiKey } from "../lib/http/access.ts";
import { checkReadiness } from "../lib/ops/health.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "../lib/ops/metrics.ts";

const NO_STORE = { "Cache-Control": "no-store" };

function onlyMethods(app: Hono, path: string, allowed: string[]): void {
  app.all(path, (c) => {
    throw new MethodNotAllowedError(c.req.method, allowed);
  });
}

/**
 * Operations endpoints: `/healthz` (the process answers), `/readyz` (KV
 * and storage reachable, workers alive; 503 otherwise) and `/metrics` (the
 * Prometheus text format, behind the API key when API_KEYS is set).
 */
export function opsRoutes(ctx: AppContext): Hono {
  const ops = new Hono({ strict: false });

  ops.get("/healthz", (c) => c.json({ status: "ok" }, 200, NO_STORE));

  ops.get("/readyz", async (c) => {
    const report = await checkReadiness(ctx);
    return c.json(
      { status: report.ready ? "ready" : "not ready", checks: report.checks },
      report.ready ? 200 : 503,
      NO_STORE,
    );
  });

  ops.get("/metrics", async (c) => {
    requireApiKey(ctx.config, c.req.raw);
    return c.body(await renderMetrics(ctx), 200, {
      "Content-Type": METRICS_CONTENT_TYPE,
      ...NO_STORE,
    });
  });

  onlyMethods(ops, "/healthz", ["GET", "HEAD"]);
  onlyMethods(ops, "/readyz", ["GET", "HEAD"]);
  onlyMethods(ops, "/metrics", ["GET", "HEAD"]);
  return ops;
}
