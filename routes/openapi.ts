import { Hono } from "hono";
import { openApiDocument } from "../lib/openapi/document.ts";

/**
 * `GET /openapi.json`: the OpenAPI 3.1 document (lib/openapi/document.ts),
 * readable from any origin (it holds nothing private).
 */
export function openApiRoutes(): Hono {
  const openapi = new Hono({ strict: false });
  const body = JSON.stringify(openApiDocument());
  openapi.get("/openapi.json", (c) =>
    c.body(body, 200, {
      "Content-Type": "application/json; charset=utf-8",
      "Access-Control-Allow-Origin": "*",
      "Cache-Control": "no-cache",
    }));
  return openapi;
}
