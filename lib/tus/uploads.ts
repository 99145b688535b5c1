/**
 * tus 1.0.0 resumable uploads on the same recording sessions: core protocol
 * plus the creation, creation-with-upload, creation-defer-length, checksum,
 * termination and expiration extensions. Each PATCH is stored as one chunk
 * with the same durability as `add_data`; reaching Upload-Length completes
 * the recording exactly as `complete_job` would.
 */

import type { AppContext } from "../core/context.ts";
import { AppError, BadRequestError, TooLargeError } from "../core/errors.ts";
import { type Recording, recordingKey } from "../kv/keys.ts";
import {
  assertAcceptsChunks,
  commitChunk,
  completeRecording,
  createRecording,
  deleteRecording,
  getRecording,
  getRecordingEntry,
} from "../recordings/recordings.ts";

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
];
const CHECKSUMS = ["sha1", "sha256", "md5"] as const;
type ChecksumAlgorithm = typeof CHECKSUMS[number];
const OFFSET_TYPE = "application/offset+octet-stream";

/** 412: the client speaks a tus version we do not. */
export class TusVersionError extends AppError {
  constructor(got: string | null) {
    super(
      412,
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
      460,
      `The ${algorithm} checksum of the body does not match Upload-Checksum; nothing was stored. Send the chunk again.`,
    );
  }
}

/** 410: the upload expired (it was finalized or removed for being idle). */
export class GoneError extends AppError {
  constructor(message: string) {
    super(410, message);
  }
}

/** 415 for a PATCH whose Content-Type is not application/offset+octet-stream. */
class OffsetTypeError extends AppError {
  constructor() {
    super(
      415,
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

/** Throws a 412 unless the request says Tus-Resumable: 1.0.0. */
export function assertTusVersion(req: Request): void {
  const got = req.headers.get("tus-resumable");
  if (got !== TUS_VERSION) throw new TusVersionError(got);
}

function parseLength(raw: string | null, name: string): number | undefined {
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
        const bytes = (Uint8Array as unknown as {
          fromBase64(s: string): Uint8Array;
        }).fromBase64(value);
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
    v === "" ? k : `${k} ${
      (new TextEncoder().encode(v) as unknown as {
        toBase64(): string;
      }).toBase64()
    }`
  ).join(",");
}

function parseChecksum(
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
  const expires = uploadExpires(ctx, rec);
  if (expires) h["Upload-Expires"] = expires;
  return h;
}

async function setUploadFacts(
  ctx: AppContext,
  id: string,
  facts: Partial<Recording>,
): Promise<Recording> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const entry = await getRecordingEntry(ctx, id);
    const next = { ...entry.value, ...facts, updatedAt: Date.now() };
    const res = await ctx.kv.atomic().check(entry).set(recordingKey(id), next)
      .commit();
    if (res.ok) return next;
  }
  throw new Error(`could not update upload ${id}`);
}

async function appendPatch(
  ctx: AppContext,
  id: string,
  req: Request,
  offset: number,
): Promise<Recording> {
  let rec: Recording | undefined;
  if (req.body) {
    const checksum = parseChecksum(req.headers.get("upload-checksum"));
    const stored = await ctx.storage.writeChunk(
      id,
      req.body,
      ctx.config.maxChunkBytes,
      { digest: checksum?.algorithm, idleMs: ctx.config.bodyIdleTimeoutMs },
    );
    if (stored.size === 0) {
      await stored.settle(false);
    } else if (checksum && stored.digest !== checksum.expected) {
      await stored.settle(false);
      throw new ChecksumMismatchError(checksum.algorithm);
    } else {
      rec = (await commitChunk(ctx, id, stored, { expectOffset: offset }))
        .recording;
    }
  }
  rec ??= await getRecording(ctx, id);
  if (
    rec.uploadLength !== undefined && rec.bytesReceived === rec.uploadLength &&
    rec.status === "recording"
  ) {
    rec = (await completeRecording(ctx, id)).recording;
  }
  return rec;
}

/** What creating an upload returns. */
export interface CreatedUpload {
  recording: Recording;
  uploadToken: string;
}

/**
 * POST /files/: creates a session from Upload-Length or
 * Upload-Defer-Length and Upload-Metadata; with a body
 * (creation-with-upload) stores it as the first chunk.
 */
export async function createUpload(
  ctx: AppContext,
  req: Request,
): Promise<CreatedUpload> {
  assertTusVersion(req);
  const length = parseLength(req.headers.get("upload-length"), "Upload-Length");
  const defer = req.headers.get("upload-defer-length");
  if (length === undefined && defer !== "1") {
    throw new BadRequestError(
      "Send Upload-Length, or Upload-Defer-Length: 1 when the length is not known yet.",
    );
  }
  if (length !== undefined && defer !== null) {
    throw new BadRequestError(
      "Send either Upload-Length or Upload-Defer-Length, not both.",
    );
  }
  if (length === 0) {
    throw new BadRequestError("An upload of 0 bytes holds no recording.");
  }
  if (length !== undefined && length > ctx.config.maxRecordingBytes) {
    throw new TooLargeError(
      `Upload-Length ${length} is over the limit of ${ctx.config.maxRecordingBytes} bytes (MAX_RECORDING_BYTES).`,
    );
  }
  const metadata = parseUploadMetadata(req.headers.get("upload-metadata"));
  const hasBody = req.body !== null &&
    (Number(req.headers.get("content-length") ?? 0) > 0 ||
      /chunked/i.test(req.headers.get("transfer-encoding") ?? ""));
  if (hasBody && req.headers.get("content-type") !== OFFSET_TYPE) {
    req.body?.cancel().catch(() => {});
    throw new OffsetTypeError();
  }
  const { recording, uploadToken } = await createRecording(ctx);
  let rec = await setUploadFacts(ctx, recording.id, {
    uploadLength: length,
    metadata,
    protocol: "tus",
    mimeType: metadata?.filetype?.slice(0, 100),
  });
  if (hasBody) rec = await appendPatch(ctx, rec.id, req, 0);
  return { recording: rec, uploadToken };
}

/** HEAD /files/<id>: where the upload stands. */
export async function headUpload(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<Record<string, string>> {
  assertTusVersion(req);
  return uploadHeaders(ctx, await getRecording(ctx, id));
}

/**
 * PATCH /files/<id>: appends the body at Upload-Offset (409 when it is not
 * the server's offset), checking Upload-Checksum (460) and setting a
 * deferred Upload-Length. Completes the recording when the length is reached.
 */
export async function patchUpload(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<Record<string, string>> {
  assertTusVersion(req);
  const rec = await getRecording(ctx, id);
  if (rec.status !== "recording") {
    req.body?.cancel().catch(() => {});
    if (rec.expired) {
      throw new GoneError(
        `Upload ${id} expired after ${ctx.config.recordingIdleTimeoutS} s without data and was finalized.`,
      );
    }
  }
  if ((req.headers.get("content-type") ?? "") !== OFFSET_TYPE) {
    req.body?.cancel().catch(() => {});
    throw new OffsetTypeError();
  }
  const offset = parseLength(req.headers.get("upload-offset"), "Upload-Offset");
  if (offset === undefined) {
    req.body?.cancel().catch(() => {});
    throw new BadRequestError("A tus PATCH needs an Upload-Offset header.");
  }
  await assertAcceptsChunks(ctx, id);
  const newLength = parseLength(
    req.headers.get("upload-length"),
    "Upload-Length",
  );
  if (newLength !== undefined) {
    if (rec.uploadLength !== undefined && rec.uploadLength !== newLength) {
      req.body?.cancel().catch(() => {});
      throw new BadRequestError(
        `Upload-Length is already ${rec.uploadLength} and cannot change.`,
      );
    }
    if (newLength < rec.bytesReceived) {
      req.body?.cancel().catch(() => {});
      throw new BadRequestError(
        `Upload-Length ${newLength} is less than the ${rec.bytesReceived} bytes already held.`,
      );
    }
    if (rec.uploadLength === undefined) {
      await setUploadFacts(ctx, id, { uploadLength: newLength });
    }
  }
  if (offset !== rec.bytesReceived) {
    req.body?.cancel().catch(() => {});
    throw new AppError(
      409,
      `Upload-Offset ${offset} does not match the ${rec.bytesReceived} bytes the server holds; resume from ${rec.bytesReceived}.`,
    );
  }
  return uploadHeaders(ctx, await appendPatch(ctx, id, req, offset));
}

/** DELETE /files/<id>: ends the session and frees its space. */
export async function terminateUpload(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<void> {
  assertTusVersion(req);
  await deleteRecording(ctx, id);
}
