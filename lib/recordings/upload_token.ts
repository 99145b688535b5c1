/**
 * Per-recording upload tokens: 32 random bytes shown once at creation; only
 * their SHA-256 is stored, and a token is compared in constant time.
 */

import { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";
import { toBase64 } from "../core/base64.ts";

/** SHA-256 of `text`. */
export function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** A new upload token and the hash that is stored in place of it. */
export function newUploadToken(): { token: string; hash: string } {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const token = toBase64(bytes, { alphabet: "base64url", omitPadding: true });
  return { token, hash: sha256(token).toString("hex") };
}

/** Whether `token` is the one whose stored hash is `tokenHash`. */
export function tokenMatches(
  token: string | undefined,
  tokenHash: string | undefined,
): boolean {
  return !!token && !!tokenHash &&
    timingSafeEqual(sha256(token), Buffer.from(tokenHash, "hex"));
}
