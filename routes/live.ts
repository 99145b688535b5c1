import { Hono } from "hono";
import type { Context } from "hono";
import { getConnInfo } from "hono/deno";
import {
  authorizeView,
  clientAddress,
  requireApiKey,
} from "../lib/http/access.ts";
import type { AppContext } from "../lib/core/context.ts";
import { parsePageQuery } from "../lib/http/dashboard.ts";
import { acceptLiveSocket } from "../lib/live/socket.ts";

/** The client's address, for the per-address socket cap. */
function client(ctx: AppContext, c: Context): string {
  let remote: string | undefined;
  try {
    remote = getConnInfo(c).remote.address;
  } catch {
    remote = undefined; // not served by Deno.serve or node:http (app.request in tests)
  }
  return clientAddress(ctx.config, c.req.raw, remote);
}

/**
 * WebSocket endpoints: `/ws` follows a page of all recordings (`?limit=`,
 * `?cursor=` as on the dashboard), `/ws/<id>` one recording. Each sends a
 * snapshot, then every committed change. Access is checked as for the
 * pages they feed: the dashboard's API key, the recording's view rights;
 * sockets are capped per client address and in total (503).
 */
export function liveRoutes(ctx: AppContext): Hono {
  const live = new Hono({ strict: false });

  live.get("/ws", (c) => {
    requireApiKey(ctx.config, c.req.raw);
    const page = parsePageQuery(new URL(c.req.url).searchParams);
    return acceptLiveSocket(
      ctx,
      c.req.raw,
      { kind: "list", page },
      client(ctx, c),
    );
  });

  live.get("/ws/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeView(ctx, id, c.req.raw);
    return await acceptLiveSocket(
      ctx,
      c.req.raw,
      { kind: "recording", id },
      client(ctx, c),
    );
  });

  return live;
}
