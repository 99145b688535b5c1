import { Hono } from "hono";
import type { AppContext } from "../lib/context.ts";

/** WebSocket endpoints for live recording changes (filled in by the dashboard work). */
export function liveRoutes(_ctx: AppContext): Hono {
  return new Hono({ strict: false });
}
