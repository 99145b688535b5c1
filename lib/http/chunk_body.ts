/**
 * Reads one `add_data` request in any of docs/api.md's three body forms (raw
 * bytes, JSON with base64 `blob_data`, multipart with a `blob_data` file
 * field), streams the bytes to storage and commits the chunk.
 */

import type { AppContext } from "../core/context.ts";
import { BadRequestError } from "../core/errors.ts";
import { withIdleTimeout } from "../storage/body_reader.ts";
import { decodeJsonChunk, JsonChunkError } from "./json_chunk.ts";
import {
  multipartBoundary,
  MultipartError,
  parseMultipart,
} from "./multipart.ts";
import {
  type AppendResult,
  assertAcceptsChunks,
  commitChunk,
  emptyChunk,
} from "../recordings/chunks.ts";
import { assertVideoId } from "../recordings/ids.ts";
import {
  beginChunkRequest,
  type ChunkRequest,
} from "../recordings/inflight.ts";
import {
  completeRecording,
  type CompleteResult,
} from "../recordings/sessions.ts";
import { chunkTooLarge, type StoredChunk } from "../storage/storage.ts";

/** The outcome of one `add_data` request. */
export interface ReceiveResult extends AppendResult {
  /** Set when the request carried `last_chunk: true`. */
  completed?: CompleteResult;
}

const MAX_INDEX = 1_000_000_000;

/** A chunk index from a request (0 to 1e9), undefined when absent; a 400 when malformed. */
export function parseIndex(
  raw: unknown,
  where: string,
): number | undefined {
  if (raw === undefined || raw === null || raw === "") return undefined;
  const text = typeof raw === "number" ? String(raw) : String(raw).trim();
  const value = /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < 0 || value > MAX_INDEX) {
    throw new BadRequestError(
      `The chunk index in ${where} must be a whole number from 0 to ${MAX_INDEX}, got ${
        JSON.stringify(String(raw).slice(0, 40))
      }.`,
    );
  }
  return value;
}

function parseFlag(raw: unknown): boolean {
  return raw === true || raw === 1 ||
    (typeof raw === "string" && /^(true|1|yes|on)$/i.test(raw.trim()));
}

function mergeIndex(
  fromRequest: number | undefined,
  fromBody: number | undefined,
): number | undefined {
  if (
    fromRequest !== undefined && fromBody !== undefined &&
    fromRequest !== fromBody
  ) {
    throw new BadRequestError(
      `The chunk index is given twice with different values (${fromRequest} and ${fromBody}).`,
    );
  }
  return fromRequest ?? fromBody;
}

interface ParsedBody {
  stored: StoredChunk;
  index?: number;
  lastChunk: boolean;
}

/**
 * Reads a JSON body as it arrives (lib/http/json_chunk.ts): the decoded
 * bytes of `blob_data` go to storage piece by piece, so memory stays the
 * same whatever the body size; a body found bad anywhere stores nothing.
 */
async function readJsonBody(
  ctx: AppContext,
  id: string,
  body: ReadableStream<Uint8Array>,
): Promise<ParsedBody> {
  const max = ctx.config.maxChunkBytes;
  const decoded = decodeJsonChunk(body, { maxBytes: max });
  let stored: StoredChunk;
  try {
    stored = await ctx.storage.writeChunk(id, decoded.bytes, max, {
      idleMs: ctx.config.bodyIdleTimeoutMs,
    });
  } catch (err) {
    throw jsonError(err, max);
  }
  try {
    const fields = await decoded.fields.catch((err) => {
      throw jsonError(err, max);
    });
    if (fields.size === 0) throw emptyChunk();
    return {
      stored,
      index: parseIndex(fields.order, "the order field"),
      lastChunk: parseFlag(fields.last_chunk),
    };
  } catch (err) {
    await stored.settle(false);
    throw err;
  }
}

/** The typed error a JSON body decoding error stands for. */
function jsonError(err: unknown, max: number): unknown {
  if (!(err instanceof JsonChunkError)) return err;
  if (err.kind === "too_large") return chunkTooLarge(max);
  if (err.kind === "empty") return emptyChunk();
  return new BadRequestError(err.message);
}

async function readMultipartBody(
  ctx: AppContext,
  id: string,
  body: ReadableStream<Uint8Array>,
  boundary: string,
): Promise<ParsedBody> {
  let stored: StoredChunk | undefined;
  let fields: Record<string, string>;
  try {
    ({ fields } = await parseMultipart(body, boundary, async (part) => {
      if (part.name !== "blob_data" || stored) {
        await part.body.cancel();
        return;
      }
      stored = await ctx.storage.writeChunk(
        id,
        part.body,
        ctx.config.maxChunkBytes,
      );
    }, { fileFields: ["blob_data"] }));
  } catch (err) {
    await stored?.settle(false);
    if (err instanceof MultipartError) {
      throw new BadRequestError(
        `The multipart body is malformed: ${err.message}`,
      );
    }
    throw err;
  }
  if (!stored) {
    throw new BadRequestError(
      'The form has no "blob_data" file field; put the chunk there.',
    );
  }
  try {
    return {
      stored,
      index: parseIndex(fields.order, "the order field"),
      lastChunk: parseFlag(fields.last_chunk),
    };
  } catch (err) {
    await stored.settle(false);
    throw err;
  }
}

/**
 * Receives one chunk request for recording `id`: marks it under way (so a
 * completion waits for it, lib/recordings/inflight.ts), checks the session,
 * reads the body in its form, stores it, commits it, and completes the
 * recording when the body says `last_chunk: true`.
 */
export async function receiveChunk(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<ReceiveResult> {
  const arrivedAt = Date.now();
  assertVideoId(id);
  const request = await beginChunkRequest(ctx, id, arrivedAt);
  try {
    return await receiveStarted(ctx, id, req, arrivedAt, request);
  } finally {
    await request.end();
  }
}

/**
 * How long an unindexed chunk waits for the chunk requests that arrived
 * before it to end, so it takes its place after them.
 */
const ARRIVAL_ORDER_WAIT_MS = 10_000;

async function receiveStarted(
  ctx: AppContext,
  id: string,
  req: Request,
  arrivedAt: number,
  request: ChunkRequest,
): Promise<ReceiveResult> {
  const url = new URL(req.url);
  const headerIndex = req.headers.get("x-chunk-index");
  const queryIndex = url.searchParams.get("index");
  const contentType = req.headers.get("content-type") ?? "";
  const mediaType = contentType.split(";")[0].trim().toLowerCase();
  const form = mediaType === "application/json" ||
    mediaType === "multipart/form-data";
  const requestIndex = mergeIndex(
    parseIndex(headerIndex, "the X-Chunk-Index header"),
    parseIndex(queryIndex, "the index query parameter"),
  );
  // A closed session still reads bodies that carry an index, so that the
  // retry of a chunk it already holds is answered as a duplicate.
  const entry = await assertAcceptsChunks(ctx, id, {
    arrivedAt,
    index: requestIndex,
    allowClosed: form || requestIndex !== undefined,
    remembered: true,
  });
  const max = ctx.config.maxChunkBytes;
  const declared = Number(req.headers.get("content-length") ?? NaN);
  const slack = mediaType === "application/json"
    ? Math.ceil(max / 3) * 4 + 64 * 1024
    : mediaType === "multipart/form-data"
    ? max + 64 * 1024
    : max;
  if (declared > slack) {
    req.body?.cancel().catch(() => {});
    throw chunkTooLarge(max);
  }
  if (!req.body || declared === 0) throw emptyChunk();
  const idleMs = ctx.config.bodyIdleTimeoutMs;

  let parsed: ParsedBody;
  if (mediaType === "application/json") {
    parsed = await readJsonBody(ctx, id, req.body);
  } else if (mediaType === "multipart/form-data") {
    const boundary = multipartBoundary(contentType);
    if (!boundary) {
      throw new BadRequestError(
        "The multipart Content-Type has no boundary; let the browser set it by sending FormData.",
      );
    }
    parsed = await readMultipartBody(
      ctx,
      id,
      withIdleTimeout(req.body, idleMs),
      boundary,
    );
  } else {
    parsed = {
      stored: await ctx.storage.writeChunk(id, req.body, max, {
        idleMs,
        length: Number.isSafeInteger(declared) ? declared : undefined,
      }),
      lastChunk: false,
    };
  }
  let index: number | undefined;
  try {
    // An empty body is refused before it could wait for earlier requests.
    if (parsed.stored.size === 0) throw emptyChunk();
    index = mergeIndex(requestIndex, parsed.index);
  } catch (err) {
    await parsed.stored.settle(false);
    throw err;
  }
  // Without an index, the chunk's place is its arrival: a body that came in
  // faster than an earlier one's waits for it.
  if (index === undefined) {
    await request.waitForEarlier(ARRIVAL_ORDER_WAIT_MS);
  }
  const result: ReceiveResult = await commitChunk(ctx, id, parsed.stored, {
    entry,
    index,
    arrivedAt,
    contentType: form ? undefined : contentType,
  });
  if (parsed.lastChunk) {
    result.completed = await completeRecording(ctx, id, {
      lastChunk: result.index,
    });
  }
  return result;
}
