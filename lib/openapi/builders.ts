/**
 * The pieces the OpenAPI document (lib/openapi/document.ts) is written
 * with: JSON and error responses, references, and the example requests.
 *
 * Every operation carries `x-examples`: requests that a client can send as
 * they are, each with the status it gets. tests/openapi_test.ts sends every
 * one to a real server, set up as the example's `given` says, and checks the
 * status and (for JSON) the documented schema; JSON and form bodies are also
 * shown as the request body's own `examples`.
 */

/** A JSON value of the document. */
export type Json =
  | string
  | number
  | boolean
  | null
  | Json[]
  | { [key: string]: Json };

/** An object of the document. */
export type JsonObject = { [key: string]: Json };

/**
 * What is true before an example request is sent; the test makes it so and
 * puts the recording's id (and upload token) in the request wherever the
 * example has {@link EXAMPLE_ID} (and {@link EXAMPLE_TOKEN}).
 */
export type Given =
  /** No recording: the id is one the server does not know. */
  | "unknown"
  /** A recording made with `create`, no chunk yet. */
  | "recording"
  /** A recording with one chunk (index 0) of {@link EXAMPLE_CHUNK}. */
  | "recording_with_data"
  /** A processed recording: `complete` with its files. */
  | "complete"
  /** A recording whose processing failed. */
  | "failed"
  /** A tus upload made with `Upload-Defer-Length: 1`, nothing sent yet. */
  | "tus_upload"
  /** A finished tus partial upload (`Upload-Concat: partial`). */
  | "tus_partial";

/** A body of an example request. */
export interface ExampleBody {
  contentType: string;
  /** A JSON body. */
  json?: Json;
  /** Bytes, base64. */
  base64?: string;
  /** Form fields; a field written `{ base64, type }` is a file. */
  form?: Record<string, string | { base64: string; type: string }>;
  /** Send the form urlencoded instead of multipart. */
  urlencoded?: boolean;
}

/** A request a client can send as it is, and the status it gets. */
export interface ExampleRequest {
  /** Unique in its operation; also names the body's example. */
  name: string;
  summary: string;
  given?: Given;
  /** Path parameters other than `id` (given by {@link given}). */
  path?: Record<string, string>;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: ExampleBody;
  /** Sent with this method instead (with `X-HTTP-Method-Override`). */
  method?: string;
  /**
   * The server's settings: `default`, or `secured`: `API_KEYS=example-key`,
   * `REQUIRE_UPLOAD_TOKEN=true` and `PRIVATE_RECORDINGS=true`.
   */
  settings?: "default" | "secured";
  status: number;
}

/** The id examples use; replaced by the given recording's id. */
export const EXAMPLE_ID = "0b9d6f3e-2c1a-4f59-9a8e-7d2f4c1b3a10";
/** The upload token examples use; replaced by the given recording's token. */
export const EXAMPLE_TOKEN = "<upload_token>";
/** The API key of the `secured` examples. */
export const EXAMPLE_KEY = "example-key";
/**
 * A first chunk: the first 48 bytes of a WebM file (its EBML header and the
 * start of its Segment), as a MediaRecorder's first blob starts, base64.
 */
export const EXAMPLE_CHUNK =
  "GkXfo59ChoEBQveBAULygQRC84EIQoKEd2VibUKHgQRChYECGFOAZwH/////////";

/** A `$ref` to a component. */
export function ref(kind: string, name: string): JsonObject {
  return { $ref: `#/components/${kind}/${name}` };
}

/** A response with a JSON body of a schema component, and optional headers. */
export function jsonResponse(
  description: string,
  schema: string,
  headers: JsonObject = {},
): JsonObject {
  return {
    description,
    ...(Object.keys(headers).length ? { headers } : {}),
    content: { "application/json": { schema: ref("schemas", schema) } },
  };
}

/** An error response: `{"error": "<sentence>"}`, with optional headers. */
export function errorResponse(
  description: string,
  headers: JsonObject = {},
): JsonObject {
  return jsonResponse(description, "Error", headers);
}

/** The `x-examples` of an operation, with its body's examples filled in. */
export function withExamples(
  operation: JsonObject,
  examples: ExampleRequest[],
): JsonObject {
  const body = operation.requestBody as JsonObject | undefined;
  const content = body?.content as Record<string, JsonObject> | undefined;
  for (const example of examples) {
    const type = example.body?.contentType.split(";")[0];
    const media = type ? content?.[type] : undefined;
    if (!media || !example.body) continue;
    const value = example.body.json ??
      (example.body.form
        ? Object.fromEntries(
          Object.entries(example.body.form).map((
            [k, v],
          ) => [k, typeof v === "string" ? v : `<${v.type} bytes>`]),
        )
        : undefined);
    if (value === undefined) continue;
    const named = (media.examples ?? {}) as JsonObject;
    named[example.name] = { summary: example.summary, value };
    media.examples = named;
  }
  return {
    ...operation,
    "x-examples": examples as unknown as Json,
  };
}

/** A schema of `type` or null. */
export function nullable(type: string, description?: string): JsonObject {
  return { type: [type, "null"], ...(description ? { description } : {}) };
}

/** The 401 answer of an endpoint that takes an API key or a token. */
export const CREDENTIAL_ERROR: JsonObject = errorResponse(
  "A credential is missing or wrong.",
  { "WWW-Authenticate": ref("headers", "WwwAuthenticate") },
);

/** The 404 answer of an endpoint named by a recording id. */
export const UNKNOWN_ID_ERROR: JsonObject = errorResponse(
  "Unknown or malformed id.",
);
