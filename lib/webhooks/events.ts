/**
 * Which recording changes are webhook events, what their JSON body says,
 * and the delivery records one event adds to the commit of the change
 * ({@link addWebhookDeliveries}, called by lib/recordings/transitions.ts
 * for every transition). The body is made once, at the change, and sent
 * unchanged by every attempt; docs/webhooks.md describes it.
 */

import type { AppContext } from "../core/context.ts";
import {
  type Recording,
  webhookByRecordingKey,
  type WebhookDelivery,
  webhookDueKey,
  type WebhookEvent,
  webhookKey,
  webhookWakeupKey,
} from "../kv/keys.ts";

/**
 * The webhook event of a committed state change, from the transition's
 * event name (lib/recordings/transitions.ts `eventOf`), or null when it is
 * not one. Partial tus uploads are not recordings and have none.
 */
export function webhookEventOf(
  change: string | null,
  prev: Recording | null,
  next: Recording | null,
): WebhookEvent | null {
  if ((next ?? prev)?.partial) return null;
  switch (change) {
    case "recording.created":
      return "recording.created";
    case "recording.completed":
    case "recording.expired": // finished by the idle timeout (`expired: true`)
      return "recording.completed";
    case "recording.complete":
      return "video.ready";
    case "recording.failed":
      return "video.failed";
    case "recording.deleted":
      return "recording.deleted";
    default:
      return null;
  }
}

/** A path of this server, absolute when PUBLIC_URL is set. */
function link(ctx: AppContext, path: string): string {
  const base = ctx.config.publicUrl;
  return base ? `${base.replace(/\/+$/, "")}${path}` : path;
}

function iso(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}

/** The `data` of an event: the recording as the change left it. */
export function eventData(
  ctx: AppContext,
  event: WebhookEvent,
  rec: Recording,
  cause?: string,
): Record<string, unknown> {
  const id = rec.id;
  const data: Record<string, unknown> = {
    video_id: id,
    status: event === "recording.deleted" ? "deleted" : rec.status,
    created_at: iso(rec.createdAt),
    bytes_received: rec.bytesReceived,
    chunks_received: rec.chunksReceived,
  };
  if (event !== "recording.deleted") {
    data.urls = {
      status: link(ctx, `/check_status/${id}/`),
      video: link(ctx, `/video/${id}/`),
      page: link(ctx, `/videos/${id}`),
    };
  }
  switch (event) {
    case "recording.completed":
      data.completed_at = iso(rec.closedAt ?? rec.updatedAt);
      data.expired = !!rec.expired;
      break;
    case "video.ready": {
      const media = rec.media;
      data.duration_s = rec.durationS ?? null;
      data.processing_s = rec.finishedAt !== undefined
        ? Math.max(
          0,
          rec.finishedAt - (rec.closedAt ?? rec.runStartedAt ?? rec.createdAt),
        ) / 1000
        : null;
      data.files = rec.files.map((name) => ({
        name,
        url: link(ctx, `/media/${id}/${name}`),
        size: media?.sizes[name] ?? null,
        duration_s: rec.durationS ?? null,
      }));
      data.poster = rec.poster
        ? {
          name: rec.poster,
          url: link(ctx, `/media/${id}/${rec.poster}`),
        }
        : null;
      data.finished_at = iso(rec.finishedAt);
      break;
    }
    case "video.failed":
      data.error = rec.error ?? "Processing failed.";
      data.finished_at = iso(rec.finishedAt);
      break;
    case "recording.deleted":
      data.deleted_at = iso(Date.now());
      data.reason = cause ?? null;
      break;
  }
  return data;
}

/**
 * Adds one delivery record per WEBHOOK_URLS entry for the webhook event of
 * this change, if it is one, to the atomic operation that commits the
 * change (so a committed change always has its deliveries, and a change
 * that is not committed has none), and wakes the delivery worker.
 */
export function addWebhookDeliveries(
  ctx: AppContext,
  atomic: Deno.AtomicOperation,
  change: string | null,
  prev: Recording | null,
  next: Recording | null,
  cause?: string,
): void {
  const urls = ctx.config.webhookUrls;
  if (urls.length === 0 || change === null) return;
  const event = webhookEventOf(change, prev, next);
  if (!event) return;
  const rec = (next ?? prev)!;
  const now = Date.now();
  const eventId = crypto.randomUUID();
  const body = JSON.stringify({
    id: eventId,
    type: event,
    created_at: new Date(now).toISOString(),
    data: eventData(ctx, event, rec, cause),
  });
  for (const url of urls) {
    const delivery: WebhookDelivery = {
      id: crypto.randomUUID(),
      eventId,
      event,
      recordingId: rec.id,
      url,
      body,
      state: "pending",
      attempts: 0,
      createdAt: now,
      retryUntil: now + ctx.config.webhookRetryS * 1000,
      dueAt: now,
      updatedAt: now,
    };
    atomic
      .set(webhookKey(delivery.id), delivery)
      .set(webhookByRecordingKey(rec.id, now, delivery.id), delivery.id)
      .set(webhookDueKey(now, delivery.id), delivery.id);
  }
  atomic.set(webhookWakeupKey(), now);
}
