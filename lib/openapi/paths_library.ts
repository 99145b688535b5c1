/**
 * The library API under `/api/recordings` in the OpenAPI document
 * (docs/api.md, "the library": list, read, rename, delete, the picture of an
 * upload; routes/library.ts), with the schemas of its bodies.
 */

import {
  CREDENTIAL_ERROR,
  errorResponse,
  EXAMPLE_KEY,
  EXAMPLE_TOKEN,
  type ExampleRequest,
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

/** Schemas of the library's bodies. */
export const LIBRARY_SCHEMAS: JsonObject = {
  Recording: {
    type: "object",
    required: [
      "id",
      "title",
      "status",
      "created_at",
      "updated_at",
      "bytes_received",
      "chunks_received",
      "duration_s",
      "poster",
      "files",
      "urls",
    ],
    properties: {
      id: { type: "string", format: "uuid" },
      title: nullable("string", "At most 200 characters; null: none."),
      status: ref("schemas", "Status"),
      created_at: { type: "string", format: "date-time" },
      updated_at: { type: "string", format: "date-time" },
      bytes_received: { type: "integer", minimum: 0 },
      chunks_received: { type: "integer", minimum: 0 },
      duration_s: nullable("number"),
      poster: nullable("string", "The poster's path once complete."),
      files: {
        type: "array",
        description: "The finished files; empty until complete.",
        items: {
          type: "object",
          required: ["name", "url", "type", "size"],
          properties: {
            name: { type: "string" },
            url: { type: "string" },
            type: { type: "string" },
            size: nullable("integer"),
          },
        },
      },
      urls: {
        type: "object",
        description:
          "The endpoints of `create`, plus `embed` and `api` (this resource).",
        additionalProperties: { type: "string" },
      },
      progress: { type: "number", minimum: 0, maximum: 1 },
      stage: { type: "string" },
      error: { type: "string" },
      mime_type: { type: "string" },
    },
  },
  RecordingPage: {
    type: "object",
    required: ["recordings", "cursor"],
    properties: {
      recordings: { type: "array", items: ref("schemas", "Recording") },
      cursor: nullable("string", "The next page, or null."),
    },
  },
  Deleted: {
    type: "object",
    required: ["message", "id"],
    properties: {
      message: { type: "string" },
      id: { type: "string", format: "uuid" },
    },
  },
  UploadPicture: {
    type: "object",
    description:
      "The picture of an upload as the recording's page draws it (docs/api.md): `start`, `end`, `bucketMs`, `bytes`, `peakBytesPerS`, `events`, `counts`, `missing`, `chunks`, `totalBytes`, `stoppedAt`, `live`, `rebuilt`.",
    required: ["bytes", "events"],
    properties: {
      bytes: { type: "array", items: { type: "number" } },
      events: { type: "array", items: { type: "object" } },
    },
  },
  Title: {
    type: "object",
    properties: {
      title: nullable(
        "string",
        'The title (at most 200 characters); `""` or null: none.',
      ),
    },
  },
};

/** Parameters of a page of recordings, as on the dashboard. */
export const PAGE_PARAMS: JsonObject[] = [
  {
    name: "limit",
    in: "query",
    description: "Recordings per page (1 to 200, default 50).",
    schema: { type: "integer", minimum: 1, maximum: 200 },
  },
  {
    name: "cursor",
    in: "query",
    description: "The `cursor` of the previous page.",
    schema: { type: "string" },
  },
  {
    name: "q",
    in: "query",
    description:
      "Search: every word must start a word of the title (accents and case ignored).",
    schema: { type: "string" },
  },
  {
    name: "status",
    in: "query",
    description: "Only recordings in this status.",
    schema: ref("schemas", "Status"),
  },
];

const titleBody: JsonObject = {
  content: {
    "application/json": { schema: ref("schemas", "Title") },
    "application/x-www-form-urlencoded": { schema: ref("schemas", "Title") },
    "multipart/form-data": { schema: ref("schemas", "Title") },
  },
};

const unknown: ExampleRequest = {
  name: "unknown",
  summary: "An unknown id",
  given: "unknown",
  status: 404,
};

const list = withExamples({
  operationId: "listRecordings",
  tags: ["library"],
  summary: "List recordings",
  description:
    "_Extension_. Newest first. Needs an API key when `API_KEYS` is set, and always with `PRIVATE_RECORDINGS`.",
  parameters: PAGE_PARAMS,
  security: KEY_SECURITY,
  responses: {
    "200": jsonResponse("A page of recordings.", "RecordingPage"),
    "400": errorResponse("A bad `limit`, `cursor`, `q` or `status`."),
    "401": e401,
  },
}, [
  { name: "newest", summary: "The newest recordings", status: 200 },
  {
    name: "search",
    summary: "Complete ones whose title has a word starting with 'dem'",
    query: { q: "dem", status: "complete", limit: "10" },
    status: 200,
  },
  {
    name: "bad_limit",
    summary: "A limit out of range",
    query: { limit: "0" },
    status: 400,
  },
  {
    name: "no_key",
    summary: "API_KEYS set, no key",
    settings: "secured",
    status: 401,
  },
  {
    name: "with_key",
    summary: "API_KEYS set, with a key",
    settings: "secured",
    headers: { "X-API-Key": EXAMPLE_KEY },
    status: 200,
  },
]);

const one = {
  get: withExamples({
    operationId: "getRecording",
    tags: ["library"],
    summary: "Read a recording",
    description: "_Extension_. Follows the view rules (`PRIVATE_RECORDINGS`).",
    parameters: ID_PARAMS,
    security: TOKEN_SECURITY,
    responses: {
      "200": jsonResponse("The recording.", "Recording"),
      "401": e401,
      "404": e404,
    },
  }, [
    {
      name: "recording",
      summary: "One being made",
      given: "recording_with_data",
      status: 200,
    },
    {
      name: "complete",
      summary: "A processed one",
      given: "complete",
      status: 200,
    },
    unknown,
  ]),
  patch: withExamples({
    operationId: "renameRecording",
    tags: ["library"],
    summary: "Rename a recording",
    description:
      "_Extension_. Needs an API key, a login session or the upload token, except when none of `API_KEYS`, `REQUIRE_UPLOAD_TOKEN` and `PRIVATE_RECORDINGS` is set.",
    parameters: ID_PARAMS,
    security: TOKEN_SECURITY,
    requestBody: { required: true, ...titleBody },
    responses: {
      "200": jsonResponse("The renamed recording.", "Recording"),
      "400": errorResponse("No `title` field, or a bad one."),
      "401": e401,
      "404": e404,
    },
  }, [
    {
      name: "rename",
      summary: "Give it a title",
      given: "recording",
      body: { contentType: "application/json", json: { title: "Weekly demo" } },
      status: 200,
    },
    {
      name: "form",
      summary: "From a form",
      given: "recording",
      body: {
        contentType: "application/x-www-form-urlencoded",
        form: { title: "Design review" },
        urlencoded: true,
      },
      status: 200,
    },
    {
      name: "drop",
      summary: "Drop the title",
      given: "recording",
      body: { contentType: "application/json", json: { title: null } },
      status: 200,
    },
    {
      name: "no_title",
      summary: "A body without a title",
      given: "recording",
      body: { contentType: "application/json", json: {} },
      status: 400,
    },
    {
      name: "no_token",
      summary: "Tokens required, none sent",
      given: "recording",
      settings: "secured",
      body: { contentType: "application/json", json: { title: "x" } },
      status: 401,
    },
  ]),
  delete: withExamples({
    operationId: "deleteRecording",
    tags: ["library"],
    summary: "Delete a recording",
    description:
      "_Extension_. Its record, job, chunks and files are gone. Needs an API key or the upload token (a tus upload still recording may also be deleted by its id while ids are capabilities).",
    parameters: ID_PARAMS,
    security: TOKEN_SECURITY,
    responses: {
      "200": jsonResponse("Deleted.", "Deleted"),
      "401": e401,
      "404": e404,
    },
  }, [
    {
      name: "with_token",
      summary: "With its upload token",
      given: "recording_with_data",
      headers: { "X-Upload-Token": EXAMPLE_TOKEN },
      status: 200,
    },
    {
      name: "by_id_alone",
      summary: "By its id alone",
      given: "recording_with_data",
      status: 401,
    },
  ]),
};

const upload = withExamples({
  operationId: "uploadPicture",
  tags: ["library"],
  summary: "The picture of an upload",
  description: "_Extension_. How the chunks arrived, bucketed in time.",
  parameters: ID_PARAMS,
  security: TOKEN_SECURITY,
  responses: {
    "200": jsonResponse("The picture.", "UploadPicture"),
    "401": e401,
    "404": e404,
  },
}, [
  {
    name: "picture",
    summary: "A recording being made",
    given: "recording_with_data",
    status: 200,
  },
  unknown,
]);

/** The library's paths. */
export const LIBRARY_PATHS: JsonObject = {
  "/api/recordings": { get: list },
  "/api/recordings/{id}": one,
  "/api/recordings/{id}/upload": { get: upload },
};
