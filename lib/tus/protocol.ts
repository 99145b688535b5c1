/**
 * The tus 1.0.0 protocol's vocabulary: version and extensions, its errors,
 * and the parsing and formatting of its headers (lengths, Upload-Metadata,
 * Upload-Checksum, Upload-Expires).
 */

import { fromBase64, toBase64 } from "../core/base64.ts";
import type { AppContext } from "../core/context.ts";
import { AppError, BadRequestError } from "../core/errors.ts";
import type { Recording } from "../kv/keys.ts";

/** The protocol version spoken. */
export const TUS_VERSION = "1.0.0";
/** Extensions supported, as announced by OPTIONS. */
export const TUS_EXTENSIONS = [
  "creation",
  "creation-with-upload",
  "creation-defer-length",
  "checksum",
  "termination",
  "expiration",
  "concatenation",
];
/** Upload-Checksum algorithms supported. */
export const CHECKSUMS = ["sha1", "sha256", "md5"] as const;
/** One of {@link CHECKSUMS}. */
export type ChecksumAlgorithm = typeof CHECKSUMS[number];
/** The Content-Type of a PATCH body. */
export const OFFSET_TYPE = "application/offset+octet-stream";

/** 412: the client speaks a tus version we do not. */
export class TusVersionError extends AppError {
  constructor(got: string | null) {
    super(
      "precondition_failed",
      got
        ? `tus version ${got} is not supported; this server speaks ${TUS_VERSION}.`
        : `The Tus-Resumable header is missing; send Tus-Resumable: ${TUS_VERSION}.`,
      { "Tus-Version": TUS_VERSION },
    );
  }
}

/** 460: the Upload-Checksum did not match the bytes received. */
export class ChecksumMismatchError extends AppError {
  constructor(algorithm: string) {
    super(
      "checksum_mismatch",
      `The ${algorithm} checksum of the body does not match Upload-Checksum; nothing was stored. Send the chunk again.`,
    );
  }
}

/** 410: the upload expired (it was finalized or removed for being idle). */
export class GoneError extends AppError {
  constructor(message: string) {
    super("gone", message);
  }
}

/** 415 for a PATCH whose Content-Type is not application/offset+octet-stream. */
export class OffsetTypeError extends AppError {
  constructor() {
    super(
      "unsupported_media",
      `A tus PATCH must have Content-Type: ${OFFSET_TYPE}.`,
    );
  }
}

/** Headers every tus response carries. */
export function tusHeaders(): Record<string, string> {
  return { "Tus-Resumable": TUS_VERSION };
}

/** The headers of the OPTIONS (discovery) answer. */
export function tusDiscoveryHeaders(ctx: AppContext): Record<string, string> {
  return {
    "Tus-Resumable": TUS_VERSION,
    "Tus-Version": TUS_VERSION,
    "Tus-Max-Size": String(ctx.config.maxRecordingBytes),
    "Tus-Extension": TUS_EXTENSIONS.join(","),
    "Tus-Checksum-Algorithm": CHECKSUMS.join(","),
  };
}

/** What an Upload-Concat header asks for. */
export type UploadConcat =
  | { kind: "partial" }
  | { kind: "final"; ids: string[]; urls: string[] };

/** Most partial uploads one final upload may name. */
export const MAX_CONCAT_PARTS = 256;

const UPLOAD_PATH =
  /^\/files\/([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})\/?$/;

/**
 * Parses Upload-Concat (the concatenation extension): `partial`, or
 * `final;<url> <url> ...` naming uploads of this server (absolute URLs or
 * paths `/files/<id>`). Throws a 400 for anything else.
 */
export function parseUploadConcat(
  raw: string | null,
): UploadConcat | undefined {
  if (raw === null) return undefined;
  const value = raw.trim();
  if (value === "partial") return { kind: "partial" };
  const bad = (why: string) =>
    new BadRequestError(
      `Upload-Concat ${why}; send "partial", or "final;" followed by the space-separated URLs of finished partial uploads.`,
    );
  if (!value.startsWith("final;")) {
    throw bad(`"${value.slice(0, 60)}" is not understood`);
  }
  const urls = value.slice("final;".length).trim().split(/\s+/).filter(Boolean);
  if (urls.length === 0) throw bad("final names no upload");
  if (urls.length > MAX_CONCAT_PARTS) {
    throw bad(
      `final names ${urls.length} uploads, more than ${MAX_CONCAT_PARTS}`,
    );
  }
  const ids = urls.map((url) => {
    let path: string;
    try {
      path = new URL(url, "http://tus.invalid").pathname;
    } catch {
      throw bad(`names "${url.slice(0, 80)}", which is not a URL`);
    }
    const id = path.match(UPLOAD_PATH)?.[1];
    if (!id) {
      throw bad(
        `names "${url.slice(0, 80)}", which is not an upload of this server`,
      );
    }
    return id;
  });
  if (new Set(ids).size !== ids.length) {
    throw bad("final names an upload twice");
  }
  return { kind: "final", ids, urls };
}

/** Throws a 412 unless the request says Tus-Resumable: 1.0.0. */
export function assertTusVersion(req: Request): void {
  const got = req.headers.get("tus-resumable");
  if (got !== TUS_VERSION) throw new TusVersionError(got);
}

/** A tus length header as a number; a 400 when malformed. */
export function parseLength(
  raw: string | null,
  name: string,
): number | undefined {
  if (raw === null) return undefined;
  if (!/^\d{1,16}$/.test(raw.trim())) {
    throw new BadRequestError(
      `${name} must be a non-negative whole number, got "${raw.slice(0, 40)}".`,
    );
  }
  return Number(raw.trim());
}

/**
 * Decodes and validates Upload-Metadata: comma-separated `key base64value`
 * pairs. `filename` must be a plain name, `filetype` a video or audio type.
 */
export function parseUploadMetadata(
  raw: string | null,
): Record<string, string> | undefined {
  if (raw === null || raw.trim() === "") return undefined;
  if (raw.length > 4096) {
    throw new BadRequestError("Upload-Metadata is longer than 4096 bytes.");
  }
  const out: Record<string, string> = {};
  for (const pair of raw.split(",")) {
    const [key, value, extra] = pair.trim().split(" ");
    if (!key || extra !== undefined || !/^[\x21-\x2b\x2d-\x7e]+$/.test(key)) {
      throw new BadRequestError(
        `Upload-Metadata has a malformed pair "${
          pair.slice(0, 60)
        }"; use "key base64value".`,
      );
    }
    if (Object.hasOwn(out, key)) {
      throw new BadRequestError(`Upload-Metadata repeats the key "${key}".`);
    }
    let decoded = "";
    if (value !== undefined && value !== "") {
      try {
        const bytes = fromBase64(value);
        decoded = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      } catch {
        throw new BadRequestError(
          `Upload-Metadata value of "${key}" is not base64 of UTF-8 text.`,
        );
      }
    }
    out[key] = decoded;
  }
  const filename = out.filename;
  if (
    filename !== undefined &&
    (filename.length > 255 || /[\/\\]/.test(filename) ||
      [...filename].some((ch) => ch.charCodeAt(0) < 0x20))
  ) {
    throw new BadRequestError(
      "Upload-Metadata filename must be a plain file name (no slashes or control characters, at most 255 characters).",
    );
  }
  const filetype = out.filetype;
  if (
    filetype !== undefined &&
    !/^(video|audio)\/[\w.+-]+(\s*;.{0,200})?$/i.test(filetype)
  ) {
    throw new BadRequestError(
      `Upload-Metadata filetype must be a video or audio type, got "${
        filetype.slice(0, 60)
      }".`,
    );
  }
  return out;
}

/** Encodes metadata back into Upload-Metadata form. */
export function formatUploadMetadata(meta: Record<string, string>): string {
  return Object.entries(meta).map(([k, v]) =>
    v === "" ? k : `${k} ${toBase64(new TextEncoder().encode(v))}`
  ).join(",");
}

/** Upload-Checksum as algorithm and expected base64 digest; a 400 when malformed. */
export function parseChecksum(
  raw: string | null,
): { algorithm: ChecksumAlgorithm; expected: string } | undefined {
  if (raw === null) return undefined;
  const [algorithm, expected] = raw.trim().split(" ");
  if (!CHECKSUMS.includes(algorithm as ChecksumAlgorithm)) {
    throw new BadRequestError(
      `Upload-Checksum algorithm "${
        (algorithm ?? "").slice(0, 20)
      }" is not supported; use one of ${CHECKSUMS.join(", ")}.`,
    );
  }
  if (!expected || !/^[A-Za-z0-9+/]+={0,2}$/.test(expected)) {
    throw new BadRequestError(
      "Upload-Checksum must be '<algorithm> <base64>'.",
    );
  }
  return { algorithm: algorithm as ChecksumAlgorithm, expected };
}

/** Upload-Expires for a recording, when idle expiry is on. */
export function uploadExpires(
  ctx: AppContext,
  rec: Recording,
): string | undefined {
  const idle = ctx.config.recordingIdleTimeoutS;
  if (idle <= 0 || rec.status !== "recording") return undefined;
  return new Date((rec.lastChunkAt ?? rec.createdAt) + idle * 1000)
    .toUTCString();
}

/** The headers of HEAD (and of a PATCH answer) for an upload. */
export function uploadHeaders(
  ctx: AppContext,
  rec: Recording,
): Record<string, string> {
  const h: Record<string, string> = {
    ...tusHeaders(),
    "Upload-Offset": String(rec.bytesReceived),
    "Cache-Control": "no-store",
  };
  const length = rec.uploadLength ??
    (rec.status === "recording" ? undefined : rec.bytesReceived);
  if (length !== undefined) h["Upload-Length"] = String(length);
  else h["Upload-Defer-Length"] = "1";
  if (rec.metadata) h["Upload-Metadata"] = formatUploadMetadata(rec.metadata);
  if (rec.partial && !rec.concat) h["Upload-Concat"] = "partial";
  if (rec.concat) h["Upload-Concat"] = `final;${rec.concat.join(" ")}`;
  const expires = uploadExpires(ctx, rec);
  if (expires) h["Upload-Expires"] = expires;
  return h;
}
