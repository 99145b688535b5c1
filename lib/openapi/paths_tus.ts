/**
 * tus 1.0.0 under `/files/` in the OpenAPI document, with its headers and
 * extensions, as routes/tus.ts and lib/tus/ serve them (docs/api.md,
 * "resumable uploads with tus"). Longer than most modules because it is
 * data: each operation with its headers and the example requests the tests
 * send.
 */

import {
  errorResponse,
  EXAMPLE_CHUNK,
  EXAMPLE_ID,
  EXAMPLE_TOKEN,
  type JsonObject,
  ref,
  withExamples,
} from "./builders.ts";
import { KEY_SECURITY, TOKEN_SECURITY } from "./components.ts";

const h = (name: string) => ref("headers", name);
const TUS = { "Tus-Resumable": "1.0.0" };
const tusParams: JsonObject[] = [
  ref("parameters", "TusResumable"),
  ref("parameters", "MethodOverride"),
];
const idParam = ref("parameters", "Id");
const reqHeader = (
  name: string,
  description: string,
  type = "string",
): JsonObject => ({ name, in: "header", description, schema: { type } });

const e401 = errorResponse("A credential is missing or wrong.", {
  "WWW-Authenticate": h("WwwAuthenticate"),
  "Tus-Resumable": h("TusResumable"),
});
const e412 = errorResponse("`Tus-Resumable` is missing or not `1.0.0`.", {
  "Tus-Version": h("TusVersion"),
});
const tusError = (description: string) =>
  errorResponse(description, { "Tus-Resumable": h("TusResumable") });

const options = (id: boolean) =>
  withExamples({
    operationId: id ? "tusOptionsUpload" : "tusOptions",
    tags: ["tus"],
    summary: "tus discovery",
    description:
      "What the server speaks. No `Tus-Resumable` needed. A CORS preflight (with `Origin` and `Access-Control-Request-Method`) is answered as one.",
    parameters: id ? [idParam] : [],
    security: [{}],
    responses: {
      "204": {
        description: "The server's tus abilities.",
        headers: {
          "Tus-Resumable": h("TusResumable"),
          "Tus-Version": h("TusVersion"),
          "Tus-Extension": {
            description:
              "`creation,creation-with-upload,creation-defer-length,checksum,termination,expiration,concatenation`.",
            schema: { type: "string" },
          },
          "Tus-Max-Size": {
            description: "`MAX_RECORDING_BYTES`.",
            schema: { type: "integer" },
          },
          "Tus-Checksum-Algorithm": {
            description: "`sha1,sha256,md5`.",
            schema: { type: "string" },
          },
        },
      },
      "421": errorResponse(
        "The `Host` is not one this server answers to (`ALLOWED_HOSTS`).",
      ),
    },
  }, [
    {
      name: "discover",
      summary: "Ask what the server speaks",
      ...(id ? { given: "tus_upload" as const } : {}),
      status: 204,
    },
  ]);

const create = withExamples({
  operationId: "tusCreate",
  tags: ["tus"],
  summary: "Create an upload (a recording)",
  description:
    "`creation`, `creation-defer-length` (a recording's usual case: send `Upload-Length` with a later PATCH), `creation-with-upload` (a body of `application/offset+octet-stream` is the first chunk) and `concatenation` (`Upload-Concat: partial`, then `final;<url> <url> ...` joins finished partial uploads into one recording and completes it; with `REQUIRE_UPLOAD_TOKEN` the final request carries each part's token in order, comma-separated). `Upload-Metadata` (at most 4096 bytes) is kept and echoed: `filename` a plain name, `filetype` a `video/*` or `audio/*` type.",
  parameters: [
    ...tusParams,
    reqHeader("Upload-Length", "The upload's length.", "integer"),
    reqHeader("Upload-Defer-Length", "`1`: the length comes later."),
    reqHeader("Upload-Metadata", "Comma-separated `key base64value` pairs."),
    reqHeader("Upload-Concat", "`partial`, or `final;<url> <url> ...`."),
    reqHeader(
      "X-Upload-Token",
      "For a final concatenation with `REQUIRE_UPLOAD_TOKEN`: the parts' tokens, comma-separated, in order.",
    ),
  ],
  security: KEY_SECURITY,
  requestBody: {
    required: false,
    description: "creation-with-upload: the first chunk.",
    content: { "application/offset+octet-stream": {} },
  },
  responses: {
    "201": {
      description: "Created.",
      headers: {
        Location: {
          description: "`/files/<id>`.",
          schema: { type: "string" },
        },
        "Upload-Offset": h("UploadOffset"),
        "X-Video-Id": {
          description: "The recording's id.",
          schema: { type: "string", format: "uuid" },
        },
        "X-Upload-Token": {
          description: "The recording's upload token.",
          schema: { type: "string" },
        },
        "Tus-Resumable": h("TusResumable"),
      },
    },
    "400": tusError(
      "No length, both headers, a length of 0, bad metadata, or a bad `Upload-Concat` (unknown, unfinished or repeated parts, a final with a length or body).",
    ),
    "401": e401,
    "412": e412,
    "413": tusError("Over `Tus-Max-Size`."),
    "415": tusError(
      "A body of another type, or a first part that is not WebM/Matroska or MP4.",
    ),
    "503": errorResponse("Too many open recordings.", {
      "Retry-After": h("RetryAfter"),
    }),
  },
}, [
  {
    name: "deferred",
    summary: "A recording of unknown length",
    headers: { ...TUS, "Upload-Defer-Length": "1" },
    status: 201,
  },
  {
    name: "with_metadata",
    summary: "A known length and metadata",
    headers: {
      ...TUS,
      "Upload-Length": "48",
      "Upload-Metadata": "filename bWVldGluZy53ZWJt,filetype dmlkZW8vd2VibQ==",
    },
    status: 201,
  },
  {
    name: "with_upload",
    summary: "creation-with-upload",
    headers: { ...TUS, "Upload-Defer-Length": "1" },
    body: {
      contentType: "application/offset+octet-stream",
      base64: EXAMPLE_CHUNK,
    },
    status: 201,
  },
  {
    name: "final",
    summary: "Join a finished partial upload into one recording",
    given: "tus_partial",
    headers: { ...TUS, "Upload-Concat": `final;/files/${EXAMPLE_ID}` },
    status: 201,
  },
  {
    name: "no_version",
    summary: "Without Tus-Resumable",
    headers: { "Upload-Defer-Length": "1" },
    status: 412,
  },
  {
    name: "no_length",
    summary: "Neither Upload-Length nor Upload-Defer-Length",
    headers: TUS,
    status: 400,
  },
  {
    name: "no_key",
    summary: "API_KEYS set, no key",
    settings: "secured",
    headers: { ...TUS, "Upload-Defer-Length": "1" },
    status: 401,
  },
]);

const head = withExamples({
  operationId: "tusHead",
  tags: ["tus"],
  summary: "Where an upload stands",
  description:
    "The offset to resume from. (GET is a 405: tus reads with HEAD.)",
  parameters: [idParam, ...tusParams],
  security: TOKEN_SECURITY,
  responses: {
    "200": {
      description: "The upload's state; `Cache-Control: no-store`.",
      headers: {
        "Upload-Offset": h("UploadOffset"),
        "Upload-Length": h("UploadLength"),
        "Upload-Defer-Length": h("UploadDeferLength"),
        "Upload-Metadata": h("UploadMetadata"),
        "Upload-Expires": h("UploadExpires"),
        "Upload-Concat": h("UploadConcat"),
        "Tus-Resumable": h("TusResumable"),
      },
    },
    "401": { description: "A credential is missing or wrong (private)." },
    "404": { description: "Unknown or deleted upload." },
    "412": { description: "`Tus-Resumable` missing or not `1.0.0`." },
  },
}, [
  {
    name: "offset",
    summary: "Ask for the offset",
    given: "tus_upload",
    headers: TUS,
    status: 200,
  },
  {
    name: "unknown",
    summary: "An unknown upload",
    given: "unknown",
    headers: TUS,
    status: 404,
  },
]);

const patch = withExamples({
  operationId: "tusPatch",
  tags: ["tus"],
  summary: "Send bytes at the offset",
  description:
    "One PATCH body is stored like one `add_data` chunk (at most `MAX_CHUNK_BYTES`) and acknowledged only once it is on disk and in KV; one cut off mid-body stores nothing. When the offset reaches `Upload-Length` the recording is completed as `complete_job` would.",
  parameters: [
    idParam,
    ...tusParams,
    {
      name: "Upload-Offset",
      in: "header",
      required: true,
      description: "Must equal the server's offset.",
      schema: { type: "integer", minimum: 0 },
    },
    reqHeader(
      "Upload-Length",
      "Once, for a deferred length; not below the bytes held.",
      "integer",
    ),
    reqHeader(
      "Upload-Checksum",
      "`sha1|sha256|md5 <base64 digest>` of the body.",
    ),
  ],
  security: TOKEN_SECURITY,
  requestBody: {
    required: true,
    content: { "application/offset+octet-stream": {} },
  },
  responses: {
    "204": {
      description: "Stored.",
      headers: {
        "Upload-Offset": h("UploadOffset"),
        "Tus-Resumable": h("TusResumable"),
      },
    },
    "400": tusError(
      "No `Upload-Offset`, a changed or too small `Upload-Length`, a malformed checksum.",
    ),
    "401": e401,
    "403": tusError("A PATCH to a final concatenated upload."),
    "404": tusError("Unknown or deleted upload."),
    "409": tusError(
      "A wrong `Upload-Offset` (the message says where to resume), or the recording no longer takes chunks.",
    ),
    "410": tusError("The upload expired (it was finalized)."),
    "412": e412,
    "413": tusError("Over a size limit."),
    "415": tusError("Not `application/offset+octet-stream`."),
    "460": tusError("`Upload-Checksum` does not match; nothing was stored."),
  },
}, [
  {
    name: "first",
    summary: "The first bytes",
    given: "tus_upload",
    headers: { ...TUS, "Upload-Offset": "0" },
    body: {
      contentType: "application/offset+octet-stream",
      base64: EXAMPLE_CHUNK,
    },
    status: 204,
  },
  {
    name: "last",
    summary: "The last bytes, with the length: completes the recording",
    given: "tus_upload",
    headers: { ...TUS, "Upload-Offset": "0", "Upload-Length": "48" },
    body: {
      contentType: "application/offset+octet-stream",
      base64: EXAMPLE_CHUNK,
    },
    status: 204,
  },
  {
    name: "wrong_offset",
    summary: "An offset the server does not have",
    given: "tus_upload",
    headers: { ...TUS, "Upload-Offset": "5" },
    body: {
      contentType: "application/offset+octet-stream",
      base64: EXAMPLE_CHUNK,
    },
    status: 409,
  },
  {
    name: "checksum",
    summary: "A checksum that does not match",
    given: "tus_upload",
    headers: {
      ...TUS,
      "Upload-Offset": "0",
      "Upload-Checksum": "sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    },
    body: {
      contentType: "application/offset+octet-stream",
      base64: EXAMPLE_CHUNK,
    },
    status: 460,
  },
  {
    name: "wrong_type",
    summary: "A body of another type",
    given: "tus_upload",
    headers: { ...TUS, "Upload-Offset": "0" },
    body: { contentType: "video/webm", base64: EXAMPLE_CHUNK },
    status: 415,
  },
  {
    name: "no_version",
    summary: "Without Tus-Resumable",
    given: "tus_upload",
    headers: { "Upload-Offset": "0" },
    body: {
      contentType: "application/offset+octet-stream",
      base64: EXAMPLE_CHUNK,
    },
    status: 412,
  },
  {
    name: "override",
    summary: "A POST overridden to PATCH",
    given: "tus_upload",
    method: "POST",
    headers: {
      ...TUS,
      "X-HTTP-Method-Override": "PATCH",
      "Upload-Offset": "0",
    },
    body: {
      contentType: "application/offset+octet-stream",
      base64: EXAMPLE_CHUNK,
    },
    status: 204,
  },
]);

const remove = withExamples({
  operationId: "tusDelete",
  tags: ["tus"],
  summary: "Terminate an upload",
  description:
    "`termination`: the recording and its space are gone (a running job is stopped); HEAD then gets 404. Needs the upload token or an API key, except for a tus upload still recording while `REQUIRE_UPLOAD_TOKEN` and `PRIVATE_RECORDINGS` are off (its id is its capability).",
  parameters: [idParam, ...tusParams],
  security: TOKEN_SECURITY,
  responses: {
    "204": {
      description: "Gone.",
      headers: { "Tus-Resumable": h("TusResumable") },
    },
    "401": e401,
    "404": tusError("Unknown or deleted upload."),
    "412": e412,
  },
}, [
  {
    name: "abandon",
    summary: "Abandon an upload still recording",
    given: "tus_upload",
    headers: TUS,
    status: 204,
  },
  {
    name: "with_token",
    summary: "Delete a recording with its token",
    given: "recording_with_data",
    headers: { ...TUS, "X-Upload-Token": EXAMPLE_TOKEN },
    status: 204,
  },
  {
    name: "by_id_alone",
    summary: "A recording made with create, by its id alone",
    given: "recording_with_data",
    headers: TUS,
    status: 401,
  },
]);

/** The tus paths. */
export const TUS_PATHS: JsonObject = {
  "/files/": { options: options(false), post: create },
  "/files/{id}": {
    options: options(true),
    head,
    patch,
    delete: remove,
  },
};
