import { Hono } from "hono";
import type { AppContext } from "../lib/core/context.ts";
import { MethodNotAllowedError } from "../lib/core/errors.ts";
import { authorizeView, hasApiKey, requireApiKey } from "../lib/http/access.ts";
import { assertVideoId } from "../lib/recordings/ids.ts";
import {
  deliveryView,
  getDelivery,
  listDeliveries,
  replayDelivery,
} from "../lib/webhooks/deliveries.ts";

function onlyMethods(app: Hono, path: string, allowed: string[]): void {
  app.all(path, (c) => {
    throw new MethodNotAllowedError(c.req.method, allowed);
  });
}

/**
 * Webhook deliveries (docs/webhooks.md): a recording's list, one delivery,
 * and replaying one. All need an API key when API_KEYS is set; a private
 * recording's list (PRIVATE_RECORDINGS) also takes its upload token.
 */
export function webhookRoutes(ctx: AppContext): Hono {
  const hooks = new Hono({ strict: false });

  hooks.get("/api/recordings/:id/webhooks", async (c) => {
    const id = c.req.param("id");
    requireApiKey(ctx.config, c.req.raw);
    assertVideoId(id);
    if (!hasApiKey(ctx.config, c.req.raw)) {
      await authorizeView(ctx, id, c.req.raw);
    }
    return c.json(await listDeliveries(ctx, id));
  });

  hooks.get("/api/webhooks/:delivery", async (c) => {
    requireApiKey(ctx.config, c.req.raw);
    const entry = await getDelivery(ctx, c.req.param("delivery"));
    return c.json(deliveryView(entry.value));
  });

  hooks.post("/api/webhooks/:delivery/replay", async (c) => {
    requireApiKey(ctx.config, c.req.raw);
    return c.json(await replayDelivery(ctx, c.req.param("delivery")));
  });

  onlyMethods(hooks, "/api/recordings/:id/webhooks", ["GET", "HEAD"]);
  onlyMethods(hooks, "/api/webhooks/:delivery", ["GET", "HEAD"]);
  onlyMethods(hooks, "/api/webhooks/:delivery/replay", ["POST"]);
  return hooks;
}
