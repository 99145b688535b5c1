/**
 * One delivery attempt: a signed JSON POST to the delivery's URL that
 * counts as delivered only on a 2xx within WEBHOOK_TIMEOUT_MS. Redirects
 * are not followed (a 3xx is a failure, like any other non-2xx).
 */

import type { AppContext } from "../core/context.ts";
import type { WebhookDelivery } from "../kv/keys.ts";
import { signWebhook, WEBHOOK_HEADERS } from "./signature.ts";

/** What one attempt got. */
export interface AttemptResult {
  ok: boolean;
  /** The receiver's status, when it answered. */
  status?: number;
  /** Why it failed, as a sentence (no answer, a status and its first words). */
  error?: string;
  /** Set when the attempt was stopped by `signal` (the instance stopping). */
  interrupted?: boolean;
}

/** Longest piece of a failed answer's body kept in the error. */
const ERROR_BODY_CHARS = 200;

/** The request headers of an attempt made at `timestamp` (seconds). */
export function deliveryHeaders(
  secret: string | undefined,
  d: WebhookDelivery,
  timestamp: number,
): Record<string, string> {
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    "User-Agent": "tapedeck-webhooks/1",
    [WEBHOOK_HEADERS.event]: d.event,
    [WEBHOOK_HEADERS.eventId]: d.eventId,
    [WEBHOOK_HEADERS.delivery]: d.id,
    [WEBHOOK_HEADERS.timestamp]: String(timestamp),
  };
  if (secret) {
    headers[WEBHOOK_HEADERS.signature] = signWebhook(secret, timestamp, d.body);
  }
  return headers;
}

async function firstWords(res: Response): Promise<string> {
  try {
    const text = (await res.text()).replace(/\s+/g, " ").trim();
    return text.length > ERROR_BODY_CHARS
      ? `${text.slice(0, ERROR_BODY_CHARS)}…`
      : text;
  } catch {
    return "";
  }
}

/** Sends `d` once; never throws. */
export async function sendDelivery(
  ctx: AppContext,
  d: WebhookDelivery,
  signal: AbortSignal,
): Promise<AttemptResult> {
  const timeoutMs = ctx.config.webhookTimeoutMs;
  const timeout = AbortSignal.timeout(timeoutMs);
  const both = AbortSignal.any([signal, timeout]);
  try {
    const res = await fetch(d.url, {
      method: "POST",
      headers: deliveryHeaders(
        ctx.config.webhookSecret,
        d,
        Math.floor(Date.now() / 1000),
      ),
      body: d.body,
      redirect: "manual",
      signal: both,
    });
    if (res.status >= 200 && res.status < 300) {
      await res.body?.cancel().catch(() => {});
      return { ok: true, status: res.status };
    }
    const words = await firstWords(res);
    return {
      ok: false,
      status: res.status,
      error: `HTTP ${res.status}${words ? `: ${words}` : ""}`,
    };
  } catch (err) {
    if (signal.aborted) {
      return {
        ok: false,
        interrupted: true,
        error: "interrupted: the instance stopped",
      };
    }
    if (timeout.aborted) {
      return {
        ok: false,
        error: `no answer within ${timeoutMs} ms (WEBHOOK_TIMEOUT_MS)`,
      };
    }
    return {
      ok: false,
      error: `could not connect: ${(err as Error)?.message ?? String(err)}`
        .slice(0, 300),
    };
  }
}
