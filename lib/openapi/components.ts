/**
 * The reusable parts of the OpenAPI document: schemas of the JSON bodies
 * (as lib/http/responses.ts and common/chunk_ledger.ts build them),
 * parameters, headers and the credentials of docs/api.md.
 */

import { EXAMPLE_ID, type JsonObject, ref } from "./builders.ts";

const UUID_PATTERN =
  "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$";

const STATUS: JsonObject = {
  type: "string",
  enum: ["recording", "processing", "complete", "failed"],
  description:
    "_SPEC_. `recording` takes chunks, `processing` makes the finished files, `complete` has them, `failed` gave up (`error` says why).",
};

const count = (description: string): JsonObject => ({
  type: "integer",
  minimum: 0,
  description,
});

const schemas: JsonObject = {
  Error: {
    type: "object",
    required: ["error"],
    properties: {
      error: {
        type: "string",
        description: "A sentence that says what to do; never a stack trace.",
      },
    },
  },
  Status: STATUS,
  Created: {
    type: "object",
    required: ["video_id", "upload_token", "urls"],
    properties: {
      video_id: {
        type: "string",
        format: "uuid",
        description: "_SPEC_. The new session's id.",
      },
      upload_token: {
        type: "string",
        description:
          "_Extension_. The session's upload token (needed with `REQUIRE_UPLOAD_TOKEN`); the server keeps only its hash.",
      },
      urls: {
        type: "object",
        description: "_Extension_. The session's endpoints.",
        required: [
          "add_data",
          "complete_job",
          "check_status",
          "video",
          "retry_job",
          "page",
        ],
        properties: Object.fromEntries(
          ["add_data", "complete_job", "check_status", "video", "retry_job"]
            .map((
              name,
            ) => [name, { type: "string", description: `/${name}/<id>/` }])
            .concat([["page", {
              type: "string",
              description: "/videos/<id>",
            }]]),
        ),
      },
    },
  },
  ChunkReceived: {
    type: "object",
    required: [
      "message",
      "index",
      "duplicate",
      "bytes_received",
      "chunks_received",
    ],
    properties: {
      message: { const: "Chunk received", description: "_SPEC_." },
      index: count("The chunk's index."),
      duplicate: {
        type: "boolean",
        description: "The same bytes were already held at this index.",
      },
      bytes_received: count("Bytes the recording holds."),
      chunks_received: count("Chunks the recording holds."),
      status: {
        ...STATUS,
        description: "Only when `last_chunk` completed the session.",
      },
    },
  },
  JobAnswer: {
    type: "object",
    required: ["message", "status"],
    properties: {
      message: {
        type: "string",
        description:
          "_SPEC_ for complete_job: `Processing started`, or where the job stands.",
      },
      status: ref("schemas", "Status"),
    },
  },
  StatusBody: {
    type: "object",
    required: [
      "status",
      "bytes_received",
      "chunks_received",
      "created_at",
      "updated_at",
    ],
    properties: {
      status: ref("schemas", "Status"),
      progress: {
        type: "number",
        minimum: 0,
        maximum: 1,
        description: "While `processing`; `1` once `complete`.",
      },
      stage: { type: "string", description: "While `processing`, in words." },
      bytes_received: count("Bytes held."),
      chunks_received: count("Chunks held."),
      duration_s: { type: "number", minimum: 0, description: "Once known." },
      created_at: { type: "string", format: "date-time" },
      updated_at: { type: "string", format: "date-time" },
      error: { type: "string", description: "When `failed`: why." },
      ready_files: {
        type: "array",
        items: { type: "string" },
        description:
          "While `processing` and once `complete`: the finished videos that can be fetched already (the seekable WebM or MKV before a re-encoded MP4), as `completed_videos` lists them.",
      },
    },
  },
  FinishedFiles: {
    type: "object",
    required: ["completed_videos", "urls", "poster"],
    properties: {
      completed_videos: {
        type: "array",
        items: { type: "string" },
        description:
          "_SPEC_. Names of the finished videos: all of them once `complete` (the MP4 first); while `processing`, those made already (the seekable WebM or MKV before a re-encoded MP4), each listed once and never changed after; empty while recording or `failed`.",
      },
      urls: {
        type: "array",
        items: { type: "string" },
        description: "Their download paths, in the same order.",
      },
      poster: {
        type: ["string", "null"],
        description: "The poster's path, or null.",
      },
    },
  },
  ChunkLedger: {
    type: "object",
    required: [
      "bytes_received",
      "chunks_received",
      "next_index",
      "received",
      "missing",
    ],
    properties: {
      bytes_received: count("Bytes held."),
      chunks_received: count("Chunks held."),
      next_index: count("The index a chunk sent without one gets."),
      received: {
        type: "array",
        description: "Held indexes as inclusive `[first, last]` ranges.",
        items: {
          type: "array",
          prefixItems: [{ type: "integer" }, { type: "integer" }],
          minItems: 2,
          maxItems: 2,
        },
      },
      missing: {
        type: "array",
        items: { type: "integer" },
        description:
          "Indexes below `next_index` not held (at most 10,000 listed).",
      },
    },
  },
  ChunkJson: {
    type: "object",
    required: ["blob_data"],
    properties: {
      blob_data: {
        type: "string",
        contentEncoding: "base64",
        description:
          "_SPEC_. The chunk's bytes in base64 (standard or URL alphabet, padded or not, an optional `data:…,` prefix).",
      },
      order: {
        type: ["integer", "string"],
        description: "The chunk's 0-based index (0 to 10⁹).",
      },
      last_chunk: {
        type: ["boolean", "integer", "string"],
        description:
          '`true` (also `1`, `"true"`, `"yes"`, `"on"`): store the chunk, then complete the session.',
      },
    },
  },
  ChunkForm: {
    type: "object",
    required: ["blob_data"],
    properties: {
      blob_data: {
        type: "string",
        contentMediaType: "application/octet-stream",
        description:
          "_SPEC_. The chunk, as a file field (the first one named so).",
      },
      order: { type: "string", description: "The chunk's 0-based index." },
      last_chunk: {
        type: "string",
        description: "`true`: store the chunk, then complete the session.",
      },
    },
  },
  LastChunkHint: {
    type: "object",
    properties: {
      last_chunk: {
        type: ["integer", "string"],
        description: "The index of the client's last chunk: no grace needed.",
      },
    },
  },
};

const header = (description: string, type = "string"): JsonObject => ({
  description,
  schema: { type },
});

const headers: JsonObject = {
  RetryAfter: header("Seconds to wait before trying again.", "integer"),
  WwwAuthenticate: header('`Bearer realm="tapedeck"`.'),
  TusResumable: header("`1.0.0` on every tus answer."),
  TusVersion: header("`1.0.0`."),
  UploadOffset: header("Bytes the upload holds.", "integer"),
  UploadLength: header("The upload's length, once known.", "integer"),
  UploadDeferLength: header("`1` while the length is not known."),
  UploadMetadata: header("The metadata sent at creation, echoed."),
  UploadExpires: header(
    "When an idle upload expires (an HTTP date), while recording.",
  ),
  UploadConcat: header("`partial`, or `final;<urls>`."),
  ETag: header("The file's validator."),
  LastModified: header("The file's time (an HTTP date)."),
  AcceptRanges: header("`bytes`."),
  ContentLength: header(
    "Bytes in the body (or, for HEAD, in the file).",
    "integer",
  ),
  ContentRange: header("`bytes a-b/size`, or `bytes */size` on a 416."),
  CacheControl: header("How long the answer may be cached."),
};

const parameters: JsonObject = {
  Id: {
    name: "id",
    in: "path",
    required: true,
    description:
      "The recording's id: a lower-case UUID v4. Anything else is a 404, like an unknown id.",
    schema: { type: "string", pattern: UUID_PATTERN },
    example: EXAMPLE_ID,
  },
  ChunkIndexHeader: {
    name: "X-Chunk-Index",
    in: "header",
    description:
      "_Extension_. The chunk's 0-based index (0 to 10⁹): a retry is stored once, chunks out of order end up in order.",
    schema: { type: "integer", minimum: 0, maximum: 1000000000 },
  },
  ChunkIndexQuery: {
    name: "index",
    in: "query",
    description: "_Extension_. The chunk's index, as `X-Chunk-Index`.",
    schema: { type: "integer", minimum: 0, maximum: 1000000000 },
  },
  TokenQuery: {
    name: "token",
    in: "query",
    description:
      "_Extension_. The session's upload token, as `X-Upload-Token` (for clients that cannot set headers).",
    schema: { type: "string" },
  },
  TusResumable: {
    name: "Tus-Resumable",
    in: "header",
    required: true,
    description: "`1.0.0`; a 412 otherwise.",
    schema: { const: "1.0.0" },
  },
  MethodOverride: {
    name: "X-HTTP-Method-Override",
    in: "header",
    description: "Turns a POST into the method it names (PATCH, DELETE).",
    schema: { type: "string", enum: ["PATCH", "DELETE", "HEAD"] },
  },
};

const securitySchemes: JsonObject = {
  bearer: {
    type: "http",
    scheme: "bearer",
    description:
      "`Authorization: Bearer <key or token>`: an API key (`API_KEYS`) where one is needed, or the session's upload token where that is.",
  },
  apiKeyHeader: {
    type: "apiKey",
    in: "header",
    name: "X-API-Key",
    description: "An API key (`API_KEYS`).",
  },
  session: {
    type: "apiKey",
    in: "cookie",
    name: "tapedeck_key",
    description:
      "The signed login session the `/login` page sets (a page, not API).",
  },
  uploadToken: {
    type: "apiKey",
    in: "header",
    name: "X-Upload-Token",
    description:
      "The session's upload token (also `?token=`): needed with `REQUIRE_UPLOAD_TOKEN` to send, complete, retry and delete; with `PRIVATE_RECORDINGS`, also to read.",
  },
};

/** The `components` object of the document. */
export const COMPONENTS: JsonObject = {
  schemas,
  headers,
  parameters,
  securitySchemes,
};

/** Security of operations that need an API key when `API_KEYS` is set. */
export const KEY_SECURITY: JsonObject[] = [
  {},
  { bearer: [] },
  { apiKeyHeader: [] },
  { session: [] },
];

/** Security of operations on one recording (its token, or an API key). */
export const TOKEN_SECURITY: JsonObject[] = [
  {},
  { uploadToken: [] },
  { bearer: [] },
  { apiKeyHeader: [] },
  { session: [] },
];

/** Path parameter `id` and the optional `?token=`. */
export const ID_PARAMS: JsonObject[] = [
  ref("parameters", "Id"),
  ref("parameters", "TokenQuery"),
];
