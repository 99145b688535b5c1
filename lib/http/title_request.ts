/**
 * Reads the `title` field of a request body: JSON (`{"title": "..."}`), an
 * urlencoded form or a multipart form. `POST /create/` may send it (seed
 * clients send no body at all); `PATCH /api/recordings/<id>` must.
 */

import { BadRequestError, TooLargeError } from "../core/errors.ts";

/** The largest body read for a title. */
const MAX_BODY_BYTES = 8192;

/** What a body said about the title: whether it had the field, and its value. */
export interface TitleField {
  given: boolean;
  value?: unknown;
}

/** Reads `title` from a request body; `what` names the request in errors. */
export async function readTitleField(
  req: Request,
  what: string,
): Promise<TitleField> {
  if (!req.body) return { given: false };
  if (Number(req.headers.get("content-length") ?? 0) > MAX_BODY_BYTES) {
    req.body.cancel().catch(() => {});
    throw tooLarge(what);
  }
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim()
    .toLowerCase();
  const text = await req.text();
  if (text.length > MAX_BODY_BYTES) throw tooLarge(what);
  if (text.trim() === "") return { given: false };
  if (type === "application/json") {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new BadRequestError(
        `The ${what} body is not valid JSON; send {"title": "<title>"}.`,
      );
    }
    if (!body || typeof body !== "object" || Array.isArray(body)) {
      throw new BadRequestError(
        `The ${what} body must be a JSON object such as {"title": "<title>"}.`,
      );
    }
    const fields = body as Record<string, unknown>;
    return "title" in fields
      ? { given: true, value: fields.title }
      : { given: false };
  }
  let form: URLSearchParams | FormData;
  if (type === "application/x-www-form-urlencoded") {
    form = new URLSearchParams(text);
  } else if (type === "multipart/form-data") {
    form = await new Response(text, {
      headers: { "content-type": req.headers.get("content-type")! },
    }).formData().catch(() => {
      throw new BadRequestError(`The ${what} form is malformed.`);
    });
  } else {
    return { given: false };
  }
  if (!form.has("title")) return { given: false };
  const value = form.get("title");
  if (typeof value !== "string") {
    throw new BadRequestError(`The ${what} form's title must be text.`);
  }
  return { given: true, value };
}

function tooLarge(what: string): TooLargeError {
  return new TooLargeError(
    `A ${what} body may hold at most ${MAX_BODY_BYTES} bytes; send only the title.`,
  );
}
