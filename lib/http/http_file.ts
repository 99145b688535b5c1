/**
 * Turns a stored file into an HTTP response that a seeking `<video>` element
 * can use: full and single-range bodies, conditional requests and HEAD.
 * Follows RFC 9110 sections 13 (conditional requests) and 14 (range requests).
 */

import type { StoredFileInfo } from "../storage/storage.ts";

export type { StoredFileInfo };

/** Opens the byte range [start, end] (inclusive) of the file as a stream. */
export type OpenRange = (
  start: number,
  end: number,
) => Promise<ReadableStream<Uint8Array>>;

/** Extra settings for {@link fileResponse}. */
export interface FileResponseOptions {
  /** Cache-Control value; defaults to `private, max-age=0, must-revalidate`. */
  cacheControl?: string;
  /** Extra headers added to every reply (the file's own headers win on clashes). */
  headers?: Record<string, string>;
}

const DEFAULT_CACHE_CONTROL = "private, max-age=0, must-revalidate";

const CONTENT_TYPES: Record<string, string> = {
  mp4: "video/mp4",
  webm: "video/webm",
  mkv: "video/x-matroska",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  png: "image/png",
  json: "application/json",
};

const MONTHS = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
];
const IMF_FIXDATE =
  /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const RFC850_DATE =
  /^[A-Za-z]+, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const ASCTIME_DATE =
  /^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;

type RangeRequest =
  | { kind: "none" }
  | { kind: "single"; start: number; end: number }
  | { kind: "unsatisfiable" };

/**
 * Answers GET or HEAD for a file: 200 with the whole file, 206 for one
 * satisfiable `Range: bytes=a-b | a- | -n`, 416 (an unsatisfied-range
 * Content-Range, `bytes *` then `/size`, and a JSON error) for an
 * unsatisfiable one, 304 for a matching If-None-Match (weak comparison, `*`,
 * lists) or, without If-None-Match, an If-Modified-Since not older than the
 * file. If-Range (ETag or HTTP-date)
 * that does not match gives the whole file. Malformed and multi-range headers
 * are ignored (200 with the whole file), as RFC 9110 allows. Range applies to
 * GET only (RFC 9110 section 14.2), so HEAD always gets the 200 headers with
 * no body and never opens the file. Other methods get 405.
 */
export async function fileResponse(
  req: Request,
  info: StoredFileInfo,
  contentType: string,
  open: OpenRange,
  options: FileResponseOptions = {},
): Promise<Response> {
  const method = req.method.toUpperCase();
  if (method !== "GET" && method !== "HEAD") {
    return jsonError(
      405,
      `Method ${req.method} is not allowed here; use GET or HEAD.`,
      { ...options.headers, Allow: "GET, HEAD" },
    );
  }

  const validators = validatorHeaders(info, options);
  if (isNotModified(req.headers, info)) {
    return new Response(null, { status: 304, headers: validators });
  }

  const headers = new Headers(validators);
  headers.set("Content-Type", contentType);
  headers.set("Accept-Ranges", "bytes");

  const range = method === "GET" && rangeApplies(req.headers, info)
    ? parseRange(req.headers.get("range"), info.size)
    : { kind: "none" } as RangeRequest;

  if (range.kind === "unsatisfiable") {
    return jsonError(
      416,
      `The requested range is not satisfiable; the file is ${info.size} bytes long.`,
      {
        ...options.headers,
        "Accept-Ranges": "bytes",
        "Content-Range": `bytes */${info.size}`,
      },
    );
  }

  let status = 200;
  let start = 0;
  let end = info.size - 1;
  if (range.kind === "single") {
    status = 206;
    start = range.start;
    end = range.end;
    headers.set("Content-Range", `bytes ${start}-${end}/${info.size}`);
  }
  const length = end - start + 1;
  headers.set("Content-Length", String(length));

  if (method === "HEAD" || length === 0) {
    return new Response(null, { status, headers });
  }
  return new Response(await open(start, end), { status, headers });
}

/** Content type for a finished-file name by extension: .mp4 video/mp4, .webm video/webm, .mkv video/x-matroska, .jpg/.jpeg image/jpeg, .png image/png, .json application/json; otherwise application/octet-stream. */
export function contentTypeFor(name: string): string {
  const base = name.slice(name.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  if (dot < 0) return "application/octet-stream";
  return CONTENT_TYPES[base.slice(dot + 1).toLowerCase()] ??
    "application/octet-stream";
}

function validatorHeaders(
  info: StoredFileInfo,
  options: FileResponseOptions,
): Headers {
  const headers = new Headers(options.headers);
  headers.set("ETag", info.etag);
  const modified = lastModifiedMs(info);
  if (modified !== undefined) {
    headers.set("Last-Modified", new Date(modified).toUTCString());
  }
  headers.set("Cache-Control", options.cacheControl ?? DEFAULT_CACHE_CONTROL);
  return headers;
}

function jsonError(
  status: number,
  message: string,
  headers: Record<string, string>,
): Response {
  const body = JSON.stringify({ error: message });
  return new Response(body, {
    status,
    headers: {
      ...headers,
      "Content-Type": "application/json",
      "Content-Length": String(new TextEncoder().encode(body).length),
    },
  });
}

function isNotModified(headers: Headers, info: StoredFileInfo): boolean {
  const ifNoneMatch = headers.get("if-none-match");
  if (ifNoneMatch !== null) {
    if (ifNoneMatch.trim() === "*") return true;
    const ours = opaqueTag(info.etag);
    return ours !== undefined &&
      listedTags(ifNoneMatch).includes(ours);
  }
  const ifModifiedSince = headers.get("if-modified-since");
  const modified = lastModifiedMs(info);
  if (ifModifiedSince === null || modified === undefined) return false;
  const since = parseHttpDate(ifModifiedSince);
  return since !== undefined && modified <= since;
}

function rangeApplies(headers: Headers, info: StoredFileInfo): boolean {
  const ifRange = headers.get("if-range");
  if (ifRange === null) return true;
  const value = ifRange.trim();
  if (value.startsWith("W/")) return false;
  if (value.startsWith('"')) {
    return !info.etag.startsWith("W/") && value === info.etag.trim();
  }
  const date = parseHttpDate(value);
  const modified = lastModifiedMs(info);
  return date !== undefined && date === modified;
}

function parseRange(header: string | null, size: number): RangeRequest {
  if (header === null || size <= 0) return { kind: "none" };
  const match = /^bytes=(.*)$/i.exec(header.trim());
  if (!match) return { kind: "none" };
  const specs = match[1].split(",").map((s) => s.trim()).filter((s) =>
    s !== ""
  );
  if (specs.length === 0) return { kind: "none" };
  const parsed = specs.map((spec) => /^(\d*)-(\d*)$/.exec(spec));
  for (const m of parsed) {
    if (!m || (m[1] === "" && m[2] === "")) return { kind: "none" };
    if (m[1] !== "" && m[2] !== "" && Number(m[2]) < Number(m[1])) {
      return { kind: "none" };
    }
  }
  if (parsed.length > 1) return { kind: "none" };

  const [, first, last] = parsed[0]!;
  if (first === "") {
    const suffix = Number(last);
    if (suffix === 0) return { kind: "unsatisfiable" };
    return { kind: "single", start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  if (start >= size) return { kind: "unsatisfiable" };
  const end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  return { kind: "single", start, end };
}

function lastModifiedMs(info: StoredFileInfo): number | undefined {
  const ms = info.mtime.getTime();
  return Number.isFinite(ms) ? Math.floor(ms / 1000) * 1000 : undefined;
}

function opaqueTag(tag: string): string | undefined {
  const m = /^(?:W\/)?("[^"]*")$/.exec(tag.trim());
  return m ? m[1] : undefined;
}

function listedTags(list: string): string[] {
  return [...list.matchAll(/(?:W\/)?("[^"]*")/g)].map((m) => m[1]);
}

function parseHttpDate(value: string): number | undefined {
  const text = value.trim();
  let parts: [string, string, number, string, string, string];
  let m: RegExpExecArray | null;
  if ((m = IMF_FIXDATE.exec(text))) {
    parts = [m[1], m[2], Number(m[3]), m[4], m[5], m[6]];
  } else if ((m = RFC850_DATE.exec(text))) {
    const thisYear = new Date().getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + Number(m[3]);
    if (year > thisYear + 50) year -= 100;
    parts = [m[1], m[2], year, m[4], m[5], m[6]];
  } else if ((m = ASCTIME_DATE.exec(text))) {
    parts = [m[2], m[1], Number(m[6]), m[3], m[4], m[5]];
  } else {
    return undefined;
  }
  const [day, month, year, hour, minute, second] = parts;
  const wanted = [
    year,
    MONTHS.indexOf(month),
    Number(day),
    Number(hour),
    Number(minute),
    Number(second),
  ];
  const date = new Date(0);
  date.setUTCFullYear(wanted[0], wanted[1], wanted[2]);
  date.setUTCHours(wanted[3], wanted[4], wanted[5], 0);
  const actual = [
    date.getUTCFullYear(),
    date.getUTCMonth(),
    date.getUTCDate(),
    date.getUTCHours(),
    date.getUTCMinutes(),
    date.getUTCSeconds(),
  ];
  return actual.every((v, i) => v === wanted[i]) ? date.getTime() : undefined;
}
