/**
 * Delivery records in KV: reading and listing them, replaying one, and the
 * two writes of an attempt (the claim before it, the result after it).
 *
 * A claim moves the delivery's due time past the attempt's timeout plus
 * the next backoff before anything is sent, in a commit checked against
 * the record's versionstamp: an instance that dies mid-attempt leaves a
 * delivery that is simply due again later (at least once), and two
 * workers can never both claim one attempt. The result is committed
 * checked against the claim, so a replay made meanwhile wins.
 */

import type { AppContext } from "../core/context.ts";
import { ConflictError, NotFoundError } from "../core/errors.ts";
import {
  webhookByRecordingKey,
  webhookByRecordingPrefix,
  type WebhookDelivery,
  webhookDueKey,
  webhookKey,
  webhookWakeupKey,
} from "../kv/keys.ts";
import type {
  WebhookDeliveryList,
  WebhookDeliveryView,
} from "../../common/webhook_view.ts";
import type { AttemptResult } from "./send.ts";

/** Finished deliveries (delivered or given up) are kept this long. */
export const KEEP_FINISHED_MS = 30 * 86_400_000;

/** Longest wait between two attempts. */
const MAX_BACKOFF_MS = 3_600_000;

const UUID =
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Wait after failed attempt number `attempts`: the base, doubled per attempt, at most an hour. */
export function webhookBackoffMs(base: number, attempts: number): number {
  return Math.min(base * 2 ** Math.max(0, attempts - 1), MAX_BACKOFF_MS);
}

function iso(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}

/** A URL without its query, fragment and credentials. */
function shownUrl(raw: string): string {
  try {
    const url = new URL(raw);
    return `${url.origin}${url.pathname}`;
  } catch {
    return "(invalid URL)";
  }
}

/** The wire form of a delivery (common/webhook_view.ts). */
export function deliveryView(d: WebhookDelivery): WebhookDeliveryView {
  return {
    id: d.id,
    event_id: d.eventId,
    event: d.event,
    video_id: d.recordingId,
    url: shownUrl(d.url),
    state: d.state,
    attempts: d.attempts,
    created_at: new Date(d.createdAt).toISOString(),
    last_attempt_at: iso(d.lastAttemptAt),
    next_attempt_at: d.state === "pending" ? iso(d.dueAt) : null,
    last_status: d.lastStatus ?? null,
    last_error: d.lastError ?? null,
    delivered_at: iso(d.deliveredAt),
    retry_until: new Date(d.retryUntil).toISOString(),
  };
}

/** Reads one delivery, or throws a 404. */
export async function getDelivery(
  ctx: AppContext,
  id: string,
): Promise<Deno.KvEntry<WebhookDelivery>> {
  const entry = UUID.test(id)
    ? await ctx.kv.get<WebhookDelivery>(webhookKey(id))
    : null;
  if (!entry?.value) {
    throw new NotFoundError(`There is no webhook delivery ${id}.`);
  }
  return entry as Deno.KvEntry<WebhookDelivery>;
}

/** A recording's deliveries, newest first (at most `limit`). */
export async function listDeliveries(
  ctx: AppContext,
  recordingId: string,
  limit = 200,
): Promise<WebhookDeliveryList> {
  const ids: string[] = [];
  for await (
    const e of ctx.kv.list<string>(
      { prefix: webhookByRecordingPrefix(recordingId) },
      { reverse: true, limit },
    )
  ) ids.push(e.value);
  const deliveries: WebhookDeliveryView[] = [];
  for (let i = 0; i < ids.length; i += 10) {
    const entries = await ctx.kv.getMany<WebhookDelivery[]>(
      ids.slice(i, i + 10).map((id) => webhookKey(id)),
    );
    for (const e of entries) {
      if (e.value) deliveries.push(deliveryView(e.value));
    }
  }
  return { enabled: ctx.config.webhookUrls.length > 0, deliveries };
}

/** Adds the writes of `d` (record and index; kept 30 days once finished). */
function writeDelivery(
  atomic: Deno.AtomicOperation,
  d: WebhookDelivery,
): void {
  const keep = d.state === "pending" ? {} : { expireIn: KEEP_FINISHED_MS };
  atomic
    .set(webhookKey(d.id), d, keep)
    .set(webhookByRecordingKey(d.recordingId, d.createdAt, d.id), d.id, keep);
}

/**
 * Sends a delivery again: pending and due now, with a fresh retry window,
 * whatever its state (a delivered one is sent once more). An attempt in
 * flight meanwhile has its result discarded.
 */
export async function replayDelivery(
  ctx: AppContext,
  id: string,
): Promise<WebhookDeliveryView> {
  if (ctx.config.webhookUrls.length === 0) {
    throw new ConflictError(
      "Webhooks are off on this server (WEBHOOK_URLS is not set), so nothing would send the delivery.",
    );
  }
  for (let attempt = 0; attempt < 20; attempt++) {
    const entry = await getDelivery(ctx, id);
    const d = entry.value;
    const now = Date.now();
    const next: WebhookDelivery = {
      ...d,
      state: "pending",
      dueAt: now,
      retryUntil: now + ctx.config.webhookRetryS * 1000,
      replays: (d.replays ?? 0) + 1,
      updatedAt: now,
    };
    const atomic = ctx.kv.atomic().check(entry);
    if (d.state === "pending") atomic.delete(webhookDueKey(d.dueAt, d.id));
    writeDelivery(atomic, next);
    atomic.set(webhookDueKey(now, d.id), d.id).set(webhookWakeupKey(), now);
    if ((await atomic.commit()).ok) return deliveryView(next);
  }
  throw new ConflictError(
    `Webhook delivery ${id} is being changed by many requests at once; retry.`,
  );
}

/**
 * Claims the next attempt of a pending delivery (see the module notes);
 * resolves the claimed record and its versionstamp, or null when another
 * writer changed it first.
 */
export async function claimAttempt(
  ctx: AppContext,
  entry: Deno.KvEntry<WebhookDelivery>,
): Promise<{ delivery: WebhookDelivery; stamp: string } | null> {
  const d = entry.value;
  const now = Date.now();
  const attempts = d.attempts + 1;
  const claimed: WebhookDelivery = {
    ...d,
    attempts,
    lastAttemptAt: now,
    dueAt: now + ctx.config.webhookTimeoutMs +
      webhookBackoffMs(ctx.config.webhookBackoffMs, attempts),
    updatedAt: now,
  };
  const atomic = ctx.kv.atomic().check(entry)
    .delete(webhookDueKey(d.dueAt, d.id))
    .set(webhookDueKey(claimed.dueAt, d.id), d.id);
  writeDelivery(atomic, claimed);
  const res = await atomic.commit();
  return res.ok ? { delivery: claimed, stamp: res.versionstamp } : null;
}

/** How an attempt ended for the delivery. */
export type AttemptOutcome = "delivered" | "retry" | "failed" | "superseded";

/**
 * Records an attempt's result on the claimed delivery: delivered; due
 * again after the backoff; given up (`failed`) when the next attempt would
 * fall past its retry window; or due at once when the attempt was cut off
 * by a stopping instance. `superseded` when the delivery changed since the
 * claim (a replay): nothing is written.
 */
export async function recordAttempt(
  ctx: AppContext,
  claimed: { delivery: WebhookDelivery; stamp: string },
  result: AttemptResult,
): Promise<AttemptOutcome> {
  const d = claimed.delivery;
  const now = Date.now();
  let next: WebhookDelivery;
  let outcome: AttemptOutcome;
  if (result.ok) {
    outcome = "delivered";
    next = {
      ...d,
      state: "delivered",
      deliveredAt: now,
      lastStatus: result.status,
      lastError: undefined,
      updatedAt: now,
    };
  } else {
    const dueAt = result.interrupted
      ? now
      : now + webhookBackoffMs(ctx.config.webhookBackoffMs, d.attempts);
    outcome = dueAt > d.retryUntil ? "failed" : "retry";
    next = {
      ...d,
      state: outcome === "failed" ? "failed" : "pending",
      // An attempt cut off by a stop does not count.
      attempts: result.interrupted ? d.attempts - 1 : d.attempts,
      dueAt,
      lastStatus: result.status,
      lastError: result.error,
      updatedAt: now,
    };
  }
  const atomic = ctx.kv.atomic()
    .check({ key: webhookKey(d.id), versionstamp: claimed.stamp })
    .delete(webhookDueKey(d.dueAt, d.id));
  if (next.state === "pending") {
    atomic.set(webhookDueKey(next.dueAt, d.id), d.id);
  }
  writeDelivery(atomic, next);
  const res = await atomic.commit();
  return res.ok ? outcome : "superseded";
}
