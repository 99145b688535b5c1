/**
 * Webhook signatures: `X-Tapedeck-Signature: v1=<hex>`, the HMAC-SHA256
 * with WEBHOOK_SECRET of `<X-Tapedeck-Timestamp>.<raw body>`, the
 * timestamp being the attempt's time in whole seconds since the epoch.
 * docs/webhooks.md shows a receiver checking it.
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";

/** The header names of a delivery. */
export const WEBHOOK_HEADERS = {
  event: "X-Tapedeck-Event",
  eventId: "X-Tapedeck-Event-Id",
  delivery: "X-Tapedeck-Delivery",
  timestamp: "X-Tapedeck-Timestamp",
  signature: "X-Tapedeck-Signature",
} as const;

/** The signature header value for `body` sent at `timestamp` (seconds). */
export function signWebhook(
  secret: string,
  timestamp: number,
  body: string,
): string {
  const mac = createHmac("sha256", secret).update(`${timestamp}.${body}`)
    .digest("hex");
  return `v1=${mac}`;
}

/**
 * Whether `signature` (the header value) signs `body` at `timestamp` with
 * `secret`, and the timestamp is within `toleranceS` of now (a replayed
 * old request fails).
 */
export function verifyWebhook(
  secret: string,
  timestamp: string | null,
  body: string,
  signature: string | null,
  toleranceS = 300,
  now = Date.now(),
): boolean {
  if (!timestamp || !signature || !/^\d{1,12}$/.test(timestamp)) return false;
  if (Math.abs(now / 1000 - Number(timestamp)) > toleranceS) return false;
  const want = Buffer.from(signWebhook(secret, Number(timestamp), body));
  return signature.split(",").map((s) => s.trim()).some((candidate) => {
    const got = Buffer.from(candidate);
    return got.length === want.length && timingSafeEqual(got, want);
  });
}
