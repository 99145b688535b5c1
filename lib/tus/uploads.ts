/**
 * tus 1.0.0 resumable uploads on the same recording sessions: core protocol
 * plus the creation, creation-with-upload, creation-defer-length, checksum,
 * termination and expiration extensions. Each PATCH is stored as one chunk
 * with the same durability as `add_data`; reaching Upload-Length completes
 * the recording exactly as `complete_job` would.
 */

import type { AppContext } from "../core/context.ts";
import {
  BadRequestError,
  ConflictError,
  ForbiddenError,
  TooLargeError,
} from "../core/errors.ts";
import { authorizeParts } from "../http/access.ts";
import { concatenateUploads, finishedPartials } from "./concat.ts";
import type { Recording } from "../kv/keys.ts";
import { assertAcceptsChunks, commitChunk } from "../recordings/chunks.ts";
import { getRecording, unknownRecording } from "../recordings/ids.ts";
import {
  completeRecording,
  createRecording,
  deleteRecording,
} from "../recordings/sessions.ts";
import { updateRecording } from "../recordings/transitions.ts";
import {
  assertTusVersion,
  ChecksumMismatchError,
  GoneError,
  OFFSET_TYPE,
  OffsetTypeError,
  parseChecksum,
  parseLength,
  parseUploadConcat,
  parseUploadMetadata,
  uploadHeaders,
} from "./protocol.ts";

/** Sets a deferred Upload-Length, once. */
async function setUploadLength(
  ctx: AppContext,
  id: string,
  length: number,
): Promise<void> {
  await updateRecording(ctx, id, (rec) => {
    if (!rec) throw unknownRecording(id);
    if (rec.uploadLength !== undefined) return null;
    return { next: { ...rec, uploadLength: length, updatedAt: Date.now() } };
  });
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
      {
        digest: checksum?.algorithm,
        idleMs: ctx.config.bodyIdleTimeoutMs,
        length: contentLength(req),
      },
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
    rec.status === "recording" && !rec.partial
  ) {
    return (await completeRecording(ctx, id)).recording;
  }
  return rec;
}

/** The body's Content-Length, when the request gives a valid one. */
function contentLength(req: Request): number | undefined {
  const raw = req.headers.get("content-length");
  const n = raw === null ? NaN : Number(raw);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function bodyPresent(req: Request): boolean {
  return req.body !== null &&
    (Number(req.headers.get("content-length") ?? 0) > 0 ||
      /chunked/i.test(req.headers.get("transfer-encoding") ?? ""));
}

/**
 * POST /files/ with `Upload-Concat: final;...`: one recording of the named
 * finished partial uploads, completed at once. It takes no length and no
 * body; with REQUIRE_UPLOAD_TOKEN it needs every part's token.
 */
async function createFinalUpload(
  ctx: AppContext,
  req: Request,
  concat: { ids: string[]; urls: string[] },
  metadata: Record<string, string> | undefined,
): Promise<CreatedUpload> {
  if (
    req.headers.has("upload-length") || req.headers.has("upload-defer-length")
  ) {
    throw new BadRequestError(
      "A final upload (Upload-Concat: final) takes its length from its parts; send no Upload-Length.",
    );
  }
  if (bodyPresent(req)) {
    req.body?.cancel().catch(() => {});
    throw new BadRequestError(
      "A final upload (Upload-Concat: final) takes no body; upload the bytes to the partial uploads.",
    );
  }
  const parts = await finishedPartials(ctx, concat.ids);
  authorizeParts(ctx.config, req, parts);
  return await concatenateUploads(ctx, parts, { metadata, urls: concat.urls });
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
  const concat = parseUploadConcat(req.headers.get("upload-concat"));
  const metadata = parseUploadMetadata(req.headers.get("upload-metadata"));
  if (concat?.kind === "final") {
    return await createFinalUpload(ctx, req, concat, metadata);
  }
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
  const hasBody = bodyPresent(req);
  if (hasBody && req.headers.get("content-type") !== OFFSET_TYPE) {
    req.body?.cancel().catch(() => {});
    throw new OffsetTypeError();
  }
  const created = await createRecording(ctx, {
    uploadLength: length,
    metadata,
    protocol: "tus",
    mimeType: metadata?.filetype?.slice(0, 100),
    partial: concat?.kind === "partial" || undefined,
  });
  const { uploadToken } = created;
  let rec = created.recording;
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
  if (rec.concat) {
    req.body?.cancel().catch(() => {});
    throw new ForbiddenError(
      `Upload ${id} is a final upload made of its parts; it takes no PATCH.`,
    );
  }
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
      await setUploadLength(ctx, id, newLength);
    }
  }
  if (offset !== rec.bytesReceived) {
    req.body?.cancel().catch(() => {});
    throw new ConflictError(
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
