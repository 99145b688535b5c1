/**
 * The recording API in the OpenAPI document: the five SPEC endpoints
 * (`create`, `add_data` with its three body forms, `complete_job`,
 * `check_status`, `video`) and the extensions `retry_job` and `chunks`, as
 * routes/api.ts serves them and docs/api.md describes them. Longer than
 * most modules because it is data: each operation with its answers and the
 * example requests the tests send.
 */

import {
  errorResponse,
  EXAMPLE_CHUNK,
  EXAMPLE_KEY,
  EXAMPLE_TOKEN,
  type ExampleRequest,
  type JsonObject,
  jsonResponse,
  ref,
  withExamples,
} from "./builders.ts";
import { ID_PARAMS, KEY_SECURITY, TOKEN_SECURITY } from "./components.ts";

const e401 = errorResponse(
  "A credential is missing or wrong (API key or upload token).",
  { "WWW-Authenticate": ref("headers", "WwwAuthenticate") },
);
const e404 = errorResponse(
  "Unknown or malformed id (or the recording was deleted).",
);

/** Examples shared by the read endpoints (`check_status`, `video`, `chunks`). */
function readExamples(extra: ExampleRequest[] = []): ExampleRequest[] {
  return [
    {
      name: "recording",
      summary: "A recording being made",
      given: "recording_with_data",
      status: 200,
    },
    {
      name: "complete",
      summary: "A processed recording",
      given: "complete",
      status: 200,
    },
    {
      name: "unknown",
      summary: "An id the server does not know",
      given: "unknown",
      status: 404,
    },
    {
      name: "malformed",
      summary: "An id that is not a UUID v4",
      path: { id: "not-a-uuid" },
      status: 404,
    },
    {
      name: "private_no_token",
      summary: "PRIVATE_RECORDINGS: without the upload token",
      given: "recording",
      settings: "secured",
      status: 401,
    },
    {
      name: "private_with_token",
      summary: "PRIVATE_RECORDINGS: with the upload token",
      given: "recording",
      settings: "secured",
      headers: { "X-Upload-Token": EXAMPLE_TOKEN },
      status: 200,
    },
    ...extra,
  ];
}

/** GET and HEAD of a read endpoint. */
function readOperations(
  id: string,
  tag: string,
  summary: string,
  description: string,
  schema: string,
  extra: ExampleRequest[] = [],
): JsonObject {
  const responses = {
    "200": jsonResponse("The answer.", schema),
    "401": e401,
    "404": e404,
  };
  return {
    get: withExamples({
      operationId: id,
      tags: [tag],
      summary,
      description,
      parameters: ID_PARAMS,
      security: TOKEN_SECURITY,
      responses,
    }, readExamples(extra)),
    head: withExamples({
      operationId: `${id}Head`,
      tags: [tag],
      summary: `${summary} (headers only)`,
      description: "As GET, without a body.",
      parameters: ID_PARAMS,
      security: TOKEN_SECURITY,
      responses: {
        "200": { description: "The headers of the GET answer." },
        "401": { description: "A credential is missing or wrong." },
        "404": { description: "Unknown or malformed id." },
      },
    }, [
      {
        name: "head",
        summary: "Headers only",
        given: "recording",
        status: 200,
      },
      { name: "unknown", summary: "Unknown id", given: "unknown", status: 404 },
    ]),
  };
}

const rawChunk = {
  schema: {
    description:
      "Raw bytes: any `Content-Type` but `application/json` and `multipart/form-data` (`video/webm`, `application/octet-stream`, none); streamed to disk. A `video/*` or `audio/*` type is kept as the recording's type.",
  },
};

const create = withExamples({
  operationId: "create",
  tags: ["recording"],
  summary: "Create a session",
  description:
    "_SPEC_. No body needed. The session starts in status `recording`. With `API_KEYS` set it needs an API key. _Extension_: an optional `title` (JSON, urlencoded or multipart; at most 200 characters).",
  security: KEY_SECURITY,
  requestBody: {
    required: false,
    content: {
      "application/json": { schema: ref("schemas", "Title") },
      "application/x-www-form-urlencoded": { schema: ref("schemas", "Title") },
      "multipart/form-data": { schema: ref("schemas", "Title") },
    },
  },
  responses: {
    "200": jsonResponse("The new session.", "Created"),
    "400": errorResponse("A bad `title` (over 200 characters, not text)."),
    "401": e401,
    "429": errorResponse(
      "More than `CREATE_RATE_PER_MINUTE` creates from this address in a minute.",
      { "Retry-After": ref("headers", "RetryAfter") },
    ),
    "503": errorResponse(
      "`MAX_OPEN_RECORDINGS` sessions are recording already, or the server is stopping.",
      { "Retry-After": ref("headers", "RetryAfter") },
    ),
  },
}, [
  { name: "create", summary: "Open a session", status: 200 },
  {
    name: "titled",
    summary: "Open a session with a title",
    body: { contentType: "application/json", json: { title: "Weekly demo" } },
    status: 200,
  },
  {
    name: "long_title",
    summary: "A title over 200 characters",
    body: { contentType: "application/json", json: { title: "x".repeat(201) } },
    status: 400,
  },
  {
    name: "no_key",
    summary: "API_KEYS set, no key sent",
    settings: "secured",
    status: 401,
  },
  {
    name: "with_key",
    summary: "API_KEYS set, a key sent",
    settings: "secured",
    headers: { Authorization: `Bearer ${EXAMPLE_KEY}` },
    status: 200,
  },
]);

const addData = withExamples({
  operationId: "addData",
  tags: ["recording"],
  summary: "Add a chunk",
  description:
    "_SPEC_. The body is the next piece of the recording, in one of three forms chosen by `Content-Type`. A 200 means the bytes are on disk (fsynced) and recorded in KV: a crash right after loses nothing. A request cut off mid-body stores nothing. The first bytes of a recording must be WebM/Matroska or MP4. Chunks whose request arrives up to `COMPLETE_GRACE_MS` after `complete_job` are still taken.",
  parameters: [
    ...ID_PARAMS,
    ref("parameters", "ChunkIndexHeader"),
    ref("parameters", "ChunkIndexQuery"),
  ],
  security: TOKEN_SECURITY,
  requestBody: {
    required: true,
    description:
      "_SPEC_: raw bytes, JSON with base64, or multipart with a `blob_data` file field.",
    content: {
      "application/octet-stream": rawChunk,
      "video/webm": rawChunk,
      "video/mp4": rawChunk,
      "application/json": { schema: ref("schemas", "ChunkJson") },
      "multipart/form-data": {
        schema: ref("schemas", "ChunkForm"),
        encoding: {
          blob_data: {
            contentType: "video/webm, video/mp4, application/octet-stream",
          },
        },
      },
    },
  },
  responses: {
    "200": jsonResponse("The chunk is stored.", "ChunkReceived"),
    "400": errorResponse(
      "Empty or malformed body or index (also: one more chunk under `MIN_CHUNK_BYTES` than the 64 a recording may hold).",
    ),
    "401": e401,
    "404": e404,
    "408": errorResponse("The body stalled; nothing was stored."),
    "409": errorResponse(
      "The session no longer takes chunks, or a different body for an index already held.",
    ),
    "413": errorResponse(
      "Over `MAX_CHUNK_BYTES`, `MAX_RECORDING_BYTES` or `MAX_CHUNKS_PER_RECORDING`.",
    ),
    "415": errorResponse(
      "The recording's first bytes are not WebM/Matroska or MP4.",
    ),
    "507": errorResponse("Storage full: nothing was stored, retry later.", {
      "Retry-After": ref("headers", "RetryAfter"),
    }),
  },
}, [
  {
    name: "raw",
    summary: "Raw bytes with an index",
    given: "recording",
    headers: { "X-Chunk-Index": "0" },
    body: { contentType: "video/webm", base64: EXAMPLE_CHUNK },
    status: 200,
  },
  {
    name: "json",
    summary: "JSON with base64",
    given: "recording",
    body: {
      contentType: "application/json",
      json: { blob_data: EXAMPLE_CHUNK, order: 0 },
    },
    status: 200,
  },
  {
    name: "multipart",
    summary: "Multipart with a blob_data file",
    given: "recording",
    body: {
      contentType: "multipart/form-data",
      form: {
        blob_data: { base64: EXAMPLE_CHUNK, type: "video/webm" },
        order: "0",
      },
    },
    status: 200,
  },
  {
    name: "last_chunk",
    summary: "The last chunk completes the session",
    given: "recording",
    body: {
      contentType: "application/json",
      json: { blob_data: EXAMPLE_CHUNK, order: 0, last_chunk: true },
    },
    status: 200,
  },
  {
    name: "duplicate",
    summary: "A retry of a chunk already held",
    given: "recording_with_data",
    query: { index: "0" },
    body: { contentType: "video/webm", base64: EXAMPLE_CHUNK },
    status: 200,
  },
  {
    name: "empty",
    summary: "An empty body",
    given: "recording",
    body: { contentType: "video/webm", base64: "" },
    status: 400,
  },
  {
    name: "not_media",
    summary: "A first chunk that is not WebM or MP4",
    given: "recording",
    body: {
      contentType: "application/octet-stream",
      base64: "aGVsbG8gd29ybGQ=",
    },
    status: 415,
  },
  {
    name: "finished",
    summary: "A new chunk for a processed recording",
    given: "complete",
    headers: { "X-Chunk-Index": "999" },
    body: { contentType: "video/webm", base64: EXAMPLE_CHUNK },
    status: 409,
  },
  {
    name: "unknown",
    summary: "An unknown id",
    given: "unknown",
    body: { contentType: "video/webm", base64: EXAMPLE_CHUNK },
    status: 404,
  },
  {
    name: "no_token",
    summary: "REQUIRE_UPLOAD_TOKEN: without the token",
    given: "recording",
    settings: "secured",
    body: { contentType: "video/webm", base64: EXAMPLE_CHUNK },
    status: 401,
  },
  {
    name: "with_token",
    summary: "REQUIRE_UPLOAD_TOKEN: with the token",
    given: "recording",
    settings: "secured",
    headers: { "X-Upload-Token": EXAMPLE_TOKEN },
    body: { contentType: "video/webm", base64: EXAMPLE_CHUNK },
    status: 200,
  },
]);

const completeJob = withExamples({
  operationId: "completeJob",
  tags: ["recording"],
  summary: "Complete the session",
  description:
    "_SPEC_. The status becomes `processing` at once and a background job makes the finished files. Again: harmless, the message says where the job stands. _Extension_: `last_chunk` (the index of the last chunk, in the query, a JSON body or a form; at most 4096 bytes) says no later chunk will come, so no grace is needed.",
  parameters: [
    ...ID_PARAMS,
    {
      name: "last_chunk",
      in: "query",
      description: "The index of the client's last chunk.",
      schema: { type: "integer", minimum: 0 },
    },
  ],
  security: TOKEN_SECURITY,
  requestBody: {
    required: false,
    content: {
      "application/json": { schema: ref("schemas", "LastChunkHint") },
      "application/x-www-form-urlencoded": {
        schema: ref("schemas", "LastChunkHint"),
      },
      "multipart/form-data": { schema: ref("schemas", "LastChunkHint") },
    },
  },
  responses: {
    "200": jsonResponse("Processing started, or where it stands.", "JobAnswer"),
    "400": errorResponse("A malformed `last_chunk`."),
    "401": e401,
    "404": e404,
    "409": errorResponse(
      "The session has no data yet (it ends as `failed` unless a chunk arrives within the grace), or it ended that way.",
    ),
  },
}, [
  {
    name: "complete",
    summary: "Complete a session with data",
    given: "recording_with_data",
    status: 200,
  },
  {
    name: "hint",
    summary: "Say which chunk was the last",
    given: "recording_with_data",
    body: { contentType: "application/json", json: { last_chunk: 0 } },
    status: 200,
  },
  {
    name: "again",
    summary: "Again, once processed",
    given: "complete",
    status: 200,
  },
  {
    name: "no_data",
    summary: "A session without data",
    given: "recording",
    status: 409,
  },
  {
    name: "bad_hint",
    summary: "A malformed last_chunk",
    given: "recording_with_data",
    query: { last_chunk: "soon" },
    status: 400,
  },
  { name: "unknown", summary: "An unknown id", given: "unknown", status: 404 },
]);

const retryJob = withExamples({
  operationId: "retryJob",
  tags: ["recording"],
  summary: "Process a failed recording again",
  description:
    "_Extension_. Queues a `failed` recording for processing again with fresh attempts; for one that is `processing` or `complete` it changes nothing and the message says where the job stands.",
  parameters: ID_PARAMS,
  security: TOKEN_SECURITY,
  responses: {
    "200": jsonResponse("Queued again, or where the job stands.", "JobAnswer"),
    "401": e401,
    "404": e404,
    "409": errorResponse("The recording is still `recording`: complete it."),
  },
}, [
  {
    name: "failed",
    summary: "A failed recording",
    given: "failed",
    status: 200,
  },
  {
    name: "complete",
    summary: "A processed recording",
    given: "complete",
    status: 200,
  },
  {
    name: "recording",
    summary: "A recording not completed",
    given: "recording_with_data",
    status: 409,
  },
  { name: "unknown", summary: "An unknown id", given: "unknown", status: 404 },
]);

/** The recording API's paths. */
export const RECORDING_PATHS: JsonObject = {
  "/create/": { post: create },
  "/add_data/{id}/": { post: addData },
  "/complete_job/{id}/": { post: completeJob },
  "/check_status/{id}/": readOperations(
    "checkStatus",
    "recording",
    "Check the status",
    "_SPEC_. `status` is SPEC; the counters and times always, `progress` and `stage` while processing, `duration_s` once known, `error` when failed.",
    "StatusBody",
  ),
  "/video/{id}/": readOperations(
    "video",
    "recording",
    "List the finished files",
    "_SPEC_. `completed_videos` is empty until `complete`; `urls` are their `/media/` paths and `poster` the poster's (not in `completed_videos`).",
    "FinishedFiles",
  ),
  "/retry_job/{id}/": { post: retryJob },
  "/chunks/{id}/": readOperations(
    "chunks",
    "recording",
    "The chunk ledger",
    "_Extension_. Which chunks the server holds, so a client that lost track resends only what is lacking.",
    "ChunkLedger",
  ),
};
