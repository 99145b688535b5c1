/**
 * The typed errors (lib/core/errors.ts) that S3 failures stand for: a store
 * that is down, slow or answering 5xx after the client's retries is
 * unavailable (503 with Retry-After: nothing was stored, retry), a missing
 * key is not found, a quota is full storage. A backend never raises HTTP
 * errors of its own.
 */

import {
  AppError,
  NotFoundError,
  StorageFullError,
  UnavailableError,
} from "../core/errors.ts";
import { S3Error } from "./s3_client.ts";

/** Seconds a client is asked to wait before retrying after an outage. */
export const S3_RETRY_AFTER_S = 5;

/** S3 error codes that mean the bucket's quota is used up. */
const FULL_CODES = new Set(["QuotaExceeded", "EntityTooLarge"]);

/**
 * The typed error for a failed S3 call (`what`: what was being done, for
 * the sentence; `writing`: the call stored something, and the sentence says
 * that nothing was). Typed errors pass through; anything else is returned
 * as is.
 */
export function fromS3Error(
  err: unknown,
  what: string,
  writing = false,
): unknown {
  if (err instanceof AppError || !(err instanceof S3Error)) return err;
  if (err.code === "NoSuchKey" || err.code === "NoSuchUpload") {
    return new NotFoundError(`The stored object is missing (${what}).`);
  }
  if (FULL_CODES.has(err.code)) {
    return new StorageFullError(
      `The object storage refused the bytes (${err.code}: quota full); nothing was stored. Retry it later.`,
    );
  }
  const why = err.status
    ? `${err.operation} answered ${err.status} ${err.code}`
    : `${err.operation}: ${err.code}`;
  return new UnavailableError(
    `The object storage is unavailable (${why}) while ${what}${
      writing ? "; nothing was stored" : ""
    }. Retry in a few seconds.`,
    S3_RETRY_AFTER_S,
  );
}

/** Runs an S3 call, throwing the typed error of a failure. */
export async function s3Call<T>(
  what: string,
  call: () => Promise<T>,
  writing = false,
): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw fromS3Error(err, what, writing);
  }
}
