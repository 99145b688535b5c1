/**
 * Reads what a `complete_job` request may say: the index of the client's
 * last chunk (`last_chunk`), from the query string, a JSON body or a form.
 * Seed clients send no body at all.
 */

import { BadRequestError, TooLargeError } from "../core/errors.ts";
import { parseIndex } from "./chunk_body.ts";

/** The largest complete_job body read. */
const MAX_BODY_BYTES = 4096;

/** The `last_chunk` index a complete_job request gives, if any. */
export async function readLastChunkHint(
  req: Request,
): Promise<number | undefined> {
  const query = new URL(req.url).searchParams.get("last_chunk");
  if (query !== null) return parseIndex(query, "the last_chunk parameter");
  if (!req.body) return undefined;
  if (Number(req.headers.get("content-length") ?? 0) > MAX_BODY_BYTES) {
    req.body.cancel().catch(() => {});
    throw new TooLargeError(
      `A complete_job body may hold at most ${MAX_BODY_BYTES} bytes; send only {"last_chunk": <index>}.`,
    );
  }
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim()
    .toLowerCase();
  const text = await req.text();
  if (text.length > MAX_BODY_BYTES) {
    throw new TooLargeError(
      `A complete_job body may hold at most ${MAX_BODY_BYTES} bytes; send only {"last_chunk": <index>}.`,
    );
  }
  if (text.trim() === "") return undefined;
  if (type === "application/json") {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new BadRequestError(
        'The complete_job body is not valid JSON; send {"last_chunk": <index>} or nothing.',
      );
    }
    const value = (body && typeof body === "object")
      ? (body as Record<string, unknown>).last_chunk
      : undefined;
    return parseIndex(value, "the last_chunk field");
  }
  if (type === "application/x-www-form-urlencoded") {
    return parseIndex(
      new URLSearchParams(text).get("last_chunk"),
      "the last_chunk field",
    );
  }
  if (type === "multipart/form-data") {
    const form = await new Response(text, {
      headers: { "content-type": req.headers.get("content-type")! },
    }).formData().catch(() => {
      throw new BadRequestError("The complete_job form is malformed.");
    });
    const value = form.get("last_chunk");
    return parseIndex(
      typeof value === "string" ? value : undefined,
      "the last_chunk field",
    );
  }
  return undefined;
}
