/**
 * The OpenAPI 3.1 document of tapedeck's HTTP API, served at
 * `/openapi.json` (routes/openapi.ts). It says what docs/api.md says, in a
 * form tools read; tests/openapi_test.ts keeps it true: every path and
 * method it lists is served and every API route served is listed in it (or
 * in lib/openapi/not_api.ts), every example request gets its status from a
 * real server, and it passes Redocly's recommended rules
 * (tools/lint_openapi.ts).
 */

import type { JsonObject } from "./builders.ts";
import { COMPONENTS } from "./components.ts";
import { FILE_PATHS } from "./paths_files.ts";
import { LIBRARY_PATHS, LIBRARY_SCHEMAS } from "./paths_library.ts";
import { OPS_PATHS, OPS_SCHEMAS } from "./paths_ops.ts";
import { RECORDING_PATHS } from "./paths_recording.ts";
import { TUS_PATHS } from "./paths_tus.ts";

/** The document's version: bump it when the API changes. */
export const API_VERSION = "1.1.0";

const DESCRIPTION =
  `Receives screen and camera recordings while they are being recorded and turns each into a seekable video.

Two layers: **SPEC**, the five endpoints of the public "Video Recording API" (\`create\`, \`add_data\`, \`complete_job\`, \`check_status\`, \`video\`) whose paths, methods and JSON keys never change, and **extensions** (marked so), which only add. docs/api.md is the contract in prose.

Conventions: paths work with and without the trailing slash; an \`id\` is a lower-case UUID v4 and anything else is a 404; every answer is JSON except media files, and errors are \`{"error": "<sentence>"}\` with a 4xx or 5xx status. The API routes answer CORS (\`CORS_ORIGINS\`, by default any origin), preflight \`OPTIONS\` included; \`/media/\` and \`/ws\` only for origins \`CORS_ORIGINS\` names. On every path: a \`Host\` the server does not answer to gets 421, a method the path does not have gets 405 with \`Allow\`, and a request cut off while the server stops gets 503 with \`Retry-After\`. Slow request heads and bodies get 408.

Credentials are all off by default (then an id is its recording's capability): \`API_KEYS\` makes \`create\`, \`POST /files/\` and \`/ws\` need a key; \`REQUIRE_UPLOAD_TOKEN\` makes writes to a recording need its \`upload_token\`; \`PRIVATE_RECORDINGS\` makes reads need it too. Hence every operation also allows no credentials (\`{}\`).

Every operation's \`x-examples\` are requests a client can send as they are, each with the status it gets (\`given\` says what must be true first; the id and \`<upload_token>\` are the given recording's). The pages (\`/\`, \`/videos/<id>\`, \`/record\`, \`/login\`, \`/logout\`, the player \`/embed/<id>\`), \`/static/\` and the recorder SDK (\`/sdk/recorder.js\`) are not API.`;

/** The whole document (a fresh copy on each call). */
export function openApiDocument(): JsonObject {
  return {
    openapi: "3.1.0",
    info: {
      title: "tapedeck",
      version: API_VERSION,
      description: DESCRIPTION,
      license: { name: "Proprietary", identifier: "LicenseRef-tapedeck" },
    },
    servers: [{
      url: "{origin}",
      description: "The tapedeck server.",
      variables: {
        origin: {
          default: "http://127.0.0.1:8000",
          description: "Where tapedeck listens.",
        },
      },
    }],
    tags: [
      {
        name: "recording",
        description: "The recording API: SPEC endpoints and extensions.",
      },
      { name: "files", description: "Finished files and the source." },
      { name: "tus", description: "Resumable uploads with tus 1.0.0." },
      { name: "live", description: "Live updates over WebSocket." },
      {
        name: "library",
        description: "Listing, reading, renaming and deleting recordings.",
      },
      { name: "webhooks", description: "Webhook deliveries." },
      {
        name: "operations",
        description: "Health, readiness and metrics for operators.",
      },
      { name: "meta", description: "About the API." },
    ],
    paths: structuredClone({
      ...RECORDING_PATHS,
      ...FILE_PATHS,
      ...TUS_PATHS,
      ...LIBRARY_PATHS,
      ...OPS_PATHS,
    }),
    components: structuredClone({
      ...COMPONENTS,
      schemas: {
        ...COMPONENTS.schemas as JsonObject,
        ...LIBRARY_SCHEMAS,
        ...OPS_SCHEMAS,
      },
    }),
  };
}
