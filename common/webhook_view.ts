/**
 * The wire form of webhook deliveries (`GET /api/recordings/<id>/webhooks`,
 * `POST /api/webhooks/<delivery>/replay`), shared by the server and the
 * recording page. Times are ISO 8601 strings; the URL is shown without its
 * query, user name or password (they may hold a receiver's secret).
 */

/** Where a delivery stands. */
export type WebhookDeliveryStateView = "pending" | "delivered" | "failed";

/** One delivery of one event to one URL. */
export interface WebhookDeliveryView {
  id: string;
  event_id: string;
  event: string;
  video_id: string;
  /** The receiver's origin and path. */
  url: string;
  /** `pending` (due, or retried with backoff), `delivered`, or `failed` (given up after the retry window). */
  state: WebhookDeliveryStateView;
  attempts: number;
  created_at: string;
  last_attempt_at: string | null;
  /** When the next attempt is due (pending only). */
  next_attempt_at: string | null;
  /** The receiver's last HTTP status, if it answered. */
  last_status: number | null;
  last_error: string | null;
  delivered_at: string | null;
  /** Retries stop after this time (24 h after the event or the last replay). */
  retry_until: string;
}

/** The answer of `GET /api/recordings/<id>/webhooks`. */
export interface WebhookDeliveryList {
  /** Whether this server sends webhooks (WEBHOOK_URLS is set). */
  enabled: boolean;
  /** Newest first. */
  deliveries: WebhookDeliveryView[];
}
