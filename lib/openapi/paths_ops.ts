/**
 * Webhook deliveries (routes/webhooks.ts) and the operations endpoints
 * `/healthz`, `/readyz` and `/metrics` (routes/ops.ts) in the OpenAPI
 * document, with the schemas of their bodies.
 */

import {
  CREDENTIAL_ERROR,
  errorResponse,
  type JsonObject,
  jsonResponse,
  nullable,
  ref,
  UNKNOWN_ID_ERROR,
  withExamples,
} from "./builders.ts";
import { ID_PARAMS, KEY_SECURITY, TOKEN_SECURITY } from "./components.ts";

const e401 = CREDENTIAL_ERROR;
const e404 = UNKNOWN_ID_ERROR;

/** Schemas of the webhook and operations bodies. */
export const OPS_SCHEMAS: JsonObject = {
  WebhookDelivery: {
    type: "object",
    required: ["id", "event", "video_id", "state", "attempts"],
    properties: {
      id: { type: "string", format: "uuid" },
      event_id: { type: "string" },
      event: { type: "string" },
      video_id: { type: "string", format: "uuid" },
      url: { type: "string" },
      state: { type: "string" },
      attempts: { type: "integer", minimum: 0 },
      created_at: { type: "string", format: "date-time" },
      last_attempt_at: nullable("string"),
      next_attempt_at: nullable("string"),
      last_status: nullable("integer"),
      last_error: nullable("string"),
      delivered_at: nullable("string"),
      retry_until: { type: "string", format: "date-time" },
    },
  },
  WebhookDeliveries: {
    type: "object",
    required: ["enabled", "deliveries"],
    properties: {
      enabled: {
        type: "boolean",
        description: "Whether `WEBHOOK_URLS` is set.",
      },
      deliveries: { type: "array", items: ref("schemas", "WebhookDelivery") },
    },
  },
  Health: {
    type: "object",
    required: ["status"],
    properties: {
      status: { type: "string", enum: ["ok", "ready", "not ready"] },
      checks: {
        type: "object",
        description: "`kv`, `storage`, `worker:<name>`: `{ok, ms, error?}`.",
        additionalProperties: { type: "object" },
      },
    },
  },
};

const deliveryParam: JsonObject = {
  name: "delivery",
  in: "path",
  required: true,
  description: "A delivery's id (a UUID).",
  schema: { type: "string", format: "uuid" },
};

const webhooks = withExamples({
  operationId: "recordingWebhooks",
  tags: ["webhooks"],
  summary: "A recording's webhook deliveries",
  description:
    "_Extension_. Newest first (at most 200). Needs an API key when `API_KEYS` is set (or, for a private recording, its upload token).",
  parameters: ID_PARAMS,
  security: TOKEN_SECURITY,
  responses: {
    "200": jsonResponse("The deliveries.", "WebhookDeliveries"),
    "401": e401,
    "404": e404,
  },
}, [
  {
    name: "list",
    summary: "Deliveries of a recording",
    given: "recording",
    status: 200,
  },
  {
    name: "malformed",
    summary: "An id that is not a UUID",
    path: { id: "nope" },
    status: 404,
  },
]);

const delivery = withExamples({
  operationId: "webhookDelivery",
  tags: ["webhooks"],
  summary: "One webhook delivery",
  description: "_Extension_. Needs an API key when `API_KEYS` is set.",
  parameters: [deliveryParam],
  security: KEY_SECURITY,
  responses: {
    "200": jsonResponse("The delivery.", "WebhookDelivery"),
    "401": e401,
    "404": errorResponse("No such delivery."),
  },
}, [{
  name: "unknown",
  summary: "No such delivery",
  path: { delivery: "4a7e1f3c-9b2d-4e8f-a1c5-6d3b2e9f0a17" },
  status: 404,
}]);

const replay = withExamples({
  operationId: "replayWebhook",
  tags: ["webhooks"],
  summary: "Send a webhook delivery again",
  description:
    "_Extension_. Queues the delivery again with a fresh retry window. Needs an API key when `API_KEYS` is set.",
  parameters: [deliveryParam],
  security: KEY_SECURITY,
  responses: {
    "200": jsonResponse("The delivery, pending again.", "WebhookDelivery"),
    "401": e401,
    "404": errorResponse("No such delivery."),
    "409": errorResponse("Webhooks are off (`WEBHOOK_URLS` is not set)."),
  },
}, [{
  name: "off",
  summary: "Webhooks are off",
  path: { delivery: "4a7e1f3c-9b2d-4e8f-a1c5-6d3b2e9f0a17" },
  status: 409,
}]);

const health = (
  id: string,
  summary: string,
  description: string,
  extra: JsonObject,
) => ({
  get: withExamples({
    operationId: id,
    tags: ["operations"],
    summary,
    description,
    security: [{}],
    responses: {
      "200": jsonResponse("Yes; `Cache-Control: no-store`.", "Health"),
      ...extra,
    },
  }, [{ name: "ask", summary: "Ask", status: 200 }]),
});

const metrics = {
  get: withExamples({
    operationId: "metrics",
    tags: ["operations"],
    summary: "Prometheus metrics",
    description:
      "_Extension_. The Prometheus text format. Needs an API key when `API_KEYS` is set.",
    security: KEY_SECURITY,
    responses: {
      "200": {
        description: "The metrics; `Cache-Control: no-store`.",
        content: { "text/plain": { schema: { type: "string" } } },
      },
      "401": e401,
    },
  }, [
    { name: "scrape", summary: "Scrape", status: 200 },
    {
      name: "no_key",
      summary: "API_KEYS set, no key",
      settings: "secured",
      status: 401,
    },
  ]),
};

/** The webhook and operations paths. */
export const OPS_PATHS: JsonObject = {
  "/api/recordings/{id}/webhooks": { get: webhooks },
  "/api/webhooks/{delivery}": { get: delivery },
  "/api/webhooks/{delivery}/replay": { post: replay },
  "/healthz": health(
    "healthz",
    "Is the process up?",
    "_Extension_. Answers while the process serves.",
    {
      "421": errorResponse(
        "The `Host` is not one this server answers to (`ALLOWED_HOSTS`).",
      ),
    },
  ),
  "/readyz": health(
    "readyz",
    "Can it take work?",
    "_Extension_. KV and storage reachable, workers alive.",
    {
      "503": jsonResponse(
        "Not ready: `checks` says what failed.",
        "Health",
      ),
      "421": errorResponse(
        "The `Host` is not one this server answers to (`ALLOWED_HOSTS`).",
      ),
    },
  ),
  "/metrics": metrics,
};
