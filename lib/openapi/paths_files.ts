// Over 400 lines: a declarative part of the OpenAPI document (media, live, docs paths with their headers); data, not logic.
/**
 * The rest of the HTTP surface in the OpenAPI document: finished files and
 * the source under `/media/` (ranges, HEAD, validators; routes/media.ts),
 * the live sockets' handshakes (`/ws`, routes/live.ts) and this document
 * itself (`/openapi.json`).
 */

import {
  errorResponse,
  EXAMPLE_ID,
  EXAMPLE_TOKEN,
  type ExampleRequest,
  type JsonObject,
  ref,
  withExamples,
} from "./builders.ts";
import { ID_PARAMS, KEY_SECURITY, TOKEN_SECURITY } from "./components.ts";
import { PAGE_PARAMS } from "./paths_library.ts";

const h = (name: string) => ref("headers", name);
const e401 = errorResponse("A credential is missing or wrong.", {
  "WWW-Authenticate": h("WwwAuthenticate"),
});

const binary = (types: string[]): JsonObject =>
  Object.fromEntries(types.map((t) => [t, {}]));

const FILE_TYPES = [
  "video/mp4",
  "video/webm",
  "video/x-matroska",
  "image/jpeg",
  "application/vnd.apple.mpegurl",
  "video/iso.segment",
];

const fileHeaders: JsonObject = {
  "Content-Length": h("ContentLength"),
  "Accept-Ranges": h("AcceptRanges"),
  ETag: h("ETag"),
  "Last-Modified": h("LastModified"),
  "Cache-Control": h("CacheControl"),
};

const nameParam: JsonObject = {
  name: "name",
  in: "path",
  required: true,
  description:
    "A name the recording lists: one of its `completed_videos` or its poster; or, while it has a live encode, `live.m3u8`, `live-init.mp4` or `live-<n>.m4s`.",
  schema: { type: "string" },
  example: `${EXAMPLE_ID}.mp4`,
};

const conditionalParams: JsonObject[] = [
  {
    name: "Range",
    in: "header",
    description:
      "One range, `bytes=a-b`, `bytes=a-` or `bytes=-n` (GET only); malformed and multi-range headers get the whole file.",
    schema: { type: "string" },
  },
  {
    name: "If-None-Match",
    in: "header",
    description: "A matching ETag gets 304.",
    schema: { type: "string" },
  },
  {
    name: "If-Modified-Since",
    in: "header",
    description: "Without If-None-Match: not older than the file gets 304.",
    schema: { type: "string" },
  },
  {
    name: "If-Range",
    in: "header",
    description: "An ETag or date that does not match gives the whole file.",
    schema: { type: "string" },
  },
];

const fileResponses = (head: boolean): JsonObject => ({
  "200": {
    description: head ? "The headers of the whole file." : "The whole file.",
    headers: fileHeaders,
    ...(head ? {} : { content: binary(FILE_TYPES) }),
  },
  ...(head ? {} : {
    "206": {
      description: "One satisfiable range.",
      headers: { ...fileHeaders, "Content-Range": h("ContentRange") },
      content: binary(FILE_TYPES),
    },
  }),
  "304": { description: "Not modified.", headers: { ETag: h("ETag") } },
  "401": head ? { description: "A credential is missing or wrong." } : e401,
  "404": head ? { description: "No such recording or file." } : errorResponse(
    "No such recording or file, the recording is not complete, a name it does not list, or a live file of a recording without a live encode.",
  ),
  ...(head ? {} : {
    "416": errorResponse("An unsatisfiable range.", {
      "Content-Range": h("ContentRange"),
    }),
  }),
});

const file = (name: string) => ({ name: `${EXAMPLE_ID}.${name}` });

const fileExamples: ExampleRequest[] = [
  {
    name: "mp4",
    summary: "The MP4",
    given: "complete",
    path: file("mp4"),
    status: 200,
  },
  {
    name: "range",
    summary: "The first 100 bytes",
    given: "complete",
    path: file("mp4"),
    headers: { Range: "bytes=0-99" },
    status: 206,
  },
  {
    name: "unsatisfiable",
    summary: "A range past the end",
    given: "complete",
    path: file("mp4"),
    headers: { Range: "bytes=999999999-" },
    status: 416,
  },
  {
    name: "not_modified",
    summary: "Any ETag matches *",
    given: "complete",
    path: file("webm"),
    headers: { "If-None-Match": "*" },
    status: 304,
  },
  {
    name: "poster",
    summary: "The poster",
    given: "complete",
    path: file("jpg"),
    status: 200,
  },
  {
    name: "not_listed",
    summary: "A name the recording does not list",
    given: "complete",
    path: file("avi"),
    status: 404,
  },
  {
    name: "not_complete",
    summary: "A recording not processed yet",
    given: "recording_with_data",
    path: file("mp4"),
    status: 404,
  },
  {
    name: "private_no_token",
    summary: "PRIVATE_RECORDINGS: without the token",
    given: "recording",
    settings: "secured",
    path: file("mp4"),
    status: 401,
  },
  {
    name: "no_live_encode",
    summary: "The live playlist of a recording without a live encode",
    given: "recording_with_data",
    path: { name: "live.m3u8" },
    status: 404,
  },
];

const media = {
  get: withExamples({
    operationId: "mediaFile",
    tags: ["files"],
    summary: "Download a finished file",
    description:
      "_Extension_. Only the names the recording lists (once `complete`; the WebM and poster already while `processing`); made for `<video>` elements that seek. `Content-Type` by extension, `Cache-Control: private, max-age=3600`. CORS only for origins `CORS_ORIGINS` names. While a recording has a live encode (its record's `live`), also its HLS files, with the same access rules: `live.m3u8` (`application/vnd.apple.mpegurl`, `Cache-Control: private, no-cache`; with `?token=` its URIs carry the token), `live-init.mp4` (`video/mp4`, `private, no-cache`) and `live-<n>.m4s` (`video/iso.segment`, `private, max-age=31536000, immutable` once the playlist lists it, `private, no-store` before).",
    parameters: [...ID_PARAMS, nameParam, ...conditionalParams],
    security: TOKEN_SECURITY,
    responses: fileResponses(false),
  }, fileExamples),
  head: withExamples({
    operationId: "mediaFileHead",
    tags: ["files"],
    summary: "A finished file's headers",
    description: "The headers of the 200 and no body.",
    parameters: [...ID_PARAMS, nameParam, ...conditionalParams],
    security: TOKEN_SECURITY,
    responses: fileResponses(true),
  }, [
    {
      name: "head",
      summary: "The MP4's headers",
      given: "complete",
      path: file("mp4"),
      status: 200,
    },
  ]),
};

const settledHeader: JsonObject = {
  description:
    "How many bytes from the start can no longer change: the chunks from the first up to the first missing index, or all of them once the recording is `complete` or `failed`. A live viewer appends only these.",
  schema: { type: "integer", minimum: 0 },
};

const sourceHeaders: JsonObject = {
  "Content-Length": h("ContentLength"),
  "Accept-Ranges": h("AcceptRanges"),
  ETag: h("ETag"),
  "Cache-Control": h("CacheControl"),
  "X-Settled-Length": settledHeader,
};

const SOURCE_TYPES = ["video/webm", "video/mp4", "application/octet-stream"];

const sourceResponses = (head: boolean): JsonObject => ({
  "200": {
    description:
      "The held chunks in index order: `Content-Type` the recording's type, `Content-Length` the bytes held now, `Content-Disposition: attachment`, `Cache-Control: no-store`, an `ETag` that changes with every chunk (no `Last-Modified`).",
    headers: sourceHeaders,
    ...(head ? {} : { content: binary(SOURCE_TYPES) }),
  },
  ...(head ? {} : {
    "206": {
      description:
        "One satisfiable range of what is held now; `Content-Range` ends with the length held. A live viewer asks for `bytes=<what it has>-` as the recording grows.",
      headers: { ...sourceHeaders, "Content-Range": h("ContentRange") },
      content: binary(SOURCE_TYPES),
    },
  }),
  "304": { description: "Not modified.", headers: { ETag: h("ETag") } },
  "401": head ? { description: "A credential is missing or wrong." } : e401,
  "404": head
    ? { description: "Unknown or malformed id." }
    : errorResponse("Unknown or malformed id."),
  ...(head ? {} : {
    "416": errorResponse(
      "A range that starts at or past the length held (nothing new yet).",
      {
        "Content-Range": h("ContentRange"),
        "X-Settled-Length": settledHeader,
      },
    ),
  }),
});

const sourceParams: JsonObject[] = [
  ...ID_PARAMS,
  ...conditionalParams.filter((p) => p.name !== "If-Modified-Since"),
];

const sourceExamples: ExampleRequest[] = [
  {
    name: "source",
    summary: "What was uploaded so far",
    given: "recording_with_data",
    status: 200,
  },
  {
    name: "range",
    summary: "The first byte",
    given: "recording_with_data",
    headers: { Range: "bytes=0-0" },
    status: 206,
  },
  {
    name: "nothing_new",
    summary: "From past what is held",
    given: "recording_with_data",
    headers: { Range: "bytes=999999999-" },
    status: 416,
  },
  { name: "unknown", summary: "An unknown id", given: "unknown", status: 404 },
  {
    name: "private_with_token",
    summary: "PRIVATE_RECORDINGS: with the token",
    given: "recording_with_data",
    settings: "secured",
    query: { token: EXAMPLE_TOKEN },
    status: 200,
  },
];

const source = {
  get: withExamples({
    operationId: "mediaSource",
    tags: ["files"],
    summary: "The recording as uploaded",
    description:
      "_Extension_. The recording exactly as uploaded, in any status, with byte ranges over what is held now (live viewers read it as it grows).",
    parameters: sourceParams,
    security: TOKEN_SECURITY,
    responses: sourceResponses(false),
  }, sourceExamples),
  head: withExamples({
    operationId: "mediaSourceHead",
    tags: ["files"],
    summary: "The uploaded recording's headers",
    description: "The headers of the 200 and no body.",
    parameters: sourceParams,
    security: TOKEN_SECURITY,
    responses: sourceResponses(true),
  }, [{
    name: "head",
    summary: "Headers only",
    given: "recording_with_data",
    status: 200,
  }]),
};

const socketResponses = (extra: JsonObject): JsonObject => ({
  "101": {
    description:
      'The WebSocket is open. JSON text frames: first `{"type": "snapshot", ...}` (with `now`, the server time in ms), then `{"type": "change", "recording": {...}}` for every committed change in scope (a deleted recording once more with `"deleted": true`). Closes with 1008 (reconnecting cannot help), 1011 (the server failed) or 1013 (the client fell more than 4 MiB behind; reconnect).',
  },
  ...extra,
  "401": e401,
  "403": errorResponse(
    "A page of another origin that `CORS_ORIGINS` does not name.",
  ),
  "426": errorResponse("A plain HTTP request: use a WebSocket.", {
    Upgrade: { description: "`websocket`.", schema: { type: "string" } },
  }),
  "503": errorResponse(
    "Too many sockets (`WS_MAX_PER_CLIENT`, `WS_MAX_TOTAL`).",
    { "Retry-After": h("RetryAfter") },
  ),
});

/** The headers of a WebSocket handshake. */
const HANDSHAKE = {
  Connection: "Upgrade",
  Upgrade: "websocket",
  "Sec-WebSocket-Version": "13",
  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
};

const ws = {
  get: withExamples({
    operationId: "liveList",
    tags: ["live"],
    summary: "Follow a page of all recordings (WebSocket)",
    description:
      '_Extension_. A WebSocket handshake. The snapshot is `{"type": "snapshot", "recordings": [...], "cursor": <next page or null>, "now": <ms>}`, newest first; recordings as `common/recording_view.ts` has them. Needs an API key when `API_KEYS` is set.',
    parameters: PAGE_PARAMS,
    security: KEY_SECURITY,
    responses: socketResponses({
      "400": errorResponse(
        "A bad `limit`, `cursor`, `q` or `status` (before the upgrade).",
      ),
    }),
  }, [
    { name: "plain", summary: "A plain HTTP GET", status: 426 },
    {
      name: "bad_limit",
      summary: "A limit out of range",
      query: { limit: "0" },
      status: 400,
    },
  ]),
};

const wsOne = {
  get: withExamples({
    operationId: "liveRecording",
    tags: ["live"],
    summary: "Follow one recording (WebSocket)",
    description:
      '_Extension_. A WebSocket handshake. The snapshot is `{"type": "snapshot", "recording": {...}, "now": <ms>}`.',
    parameters: [ref("parameters", "Id")],
    security: TOKEN_SECURITY,
    responses: socketResponses({
      "404": errorResponse("Unknown or malformed id (before the upgrade)."),
    }),
  }, [
    {
      name: "plain",
      summary: "A plain HTTP GET",
      given: "recording",
      status: 426,
    },
    {
      name: "unknown",
      summary: "A handshake for an unknown id",
      given: "unknown",
      headers: HANDSHAKE,
      status: 404,
    },
  ]),
};

const openapi = {
  get: withExamples({
    operationId: "openapi",
    tags: ["meta"],
    summary: "This document",
    description: "The OpenAPI 3.1 description of the API, as JSON.",
    security: [{}],
    responses: {
      "200": {
        description: "The document.",
        content: { "application/json": { schema: { type: "object" } } },
      },
      "421": errorResponse(
        "The `Host` is not one this server answers to (`ALLOWED_HOSTS`); every path answers so.",
      ),
    },
  }, [{ name: "document", summary: "Read it", status: 200 }]),
};

/** Paths of files, sockets and the document. */
export const FILE_PATHS: JsonObject = {
  "/media/{id}/source": source,
  "/media/{id}/{name}": media,
  "/ws": ws,
  "/ws/{id}": wsOne,
  "/openapi.json": openapi,
};
