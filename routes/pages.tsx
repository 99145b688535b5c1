import { Hono } from "hono";
import type { AppContext } from "../lib/context.ts";

/** Server-rendered pages (filled in by the dashboard work). */
export function pageRoutes(_ctx: AppContext): Hono {
  return new Hono({ strict: false });
}
