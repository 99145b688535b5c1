import type { ReplayState } from "../../client/webhook_deliveries.ts";
import { formatAgo } from "../../common/format.ts";
import type {
  WebhookDeliveryList,
  WebhookDeliveryView,
} from "../../common/webhook_view.ts";

/** Props of {@link WebhookList}. */
export interface WebhookListProps {
  list: WebhookDeliveryList | null;
  error?: string | null;
  replays: Record<string, ReplayState>;
  now: number;
  /** False until the island is hydrated (the buttons need it). */
  ready: boolean;
  onReplay(deliveryId: string): void;
}

const BADGE: Record<WebhookDeliveryView["state"], string> = {
  pending: "badge badge-processing",
  delivered: "badge badge-complete",
  failed: "badge badge-failed",
};

function when(iso: string | null, now: number): string {
  return iso ? formatAgo(Date.parse(iso), now) : "";
}

/**
 * A recording's webhook deliveries: event, receiver, state, attempts, the
 * last error, and a Replay button each. Nothing while webhooks are off and
 * none were sent.
 */
export function WebhookList(
  { list, error, replays, now, ready, onReplay }: WebhookListProps,
) {
  if (!list && !error) return null;
  if (list && !list.enabled && list.deliveries.length === 0) return null;
  return (
    <section class="webhooks" id="webhooks">
      <h2>Webhooks</h2>
      {error && <p class="error-text" role="alert">{error}</p>}
      {list && list.deliveries.length === 0 && (
        <p class="muted">No webhook was sent for this recording yet.</p>
      )}
      {list && list.deliveries.length > 0 && (
        <div class="table-wrap">
          <table class="recordings webhook-deliveries">
            <thead>
              <tr>
                <th>Event</th>
                <th>Receiver</th>
                <th>State</th>
                <th class="num">Attempts</th>
                <th>Last error</th>
                <th></th>
              </tr>
            </thead>
            <tbody>
              {list.deliveries.map((d) => {
                const replay = replays[d.id] ?? {};
                return (
                  <tr key={d.id} data-delivery={d.id} data-state={d.state}>
                    <td>
                      <span class="mono">{d.event}</span>
                      <time class="muted small" dateTime={d.created_at}>
                        {when(d.created_at, now)}
                      </time>
                    </td>
                    <td class="mono small">{d.url}</td>
                    <td>
                      <span class={BADGE[d.state]}>{d.state}</span>
                      <span class="muted small">
                        {d.state === "delivered"
                          ? ` ${when(d.delivered_at, now)}`
                          : d.state === "pending" && d.next_attempt_at
                          ? ` next try ${
                            Date.parse(d.next_attempt_at) <= now
                              ? "now"
                              : `in ${
                                Math.ceil(
                                  (Date.parse(d.next_attempt_at) - now) / 1000,
                                )
                              } s`
                          }`
                          : ""}
                      </span>
                    </td>
                    <td class="num">{d.attempts}</td>
                    <td class="error-text">
                      {d.last_error ?? ""}
                      {replay.error && (
                        <span class="action-error" role="alert">
                          {replay.error}
                        </span>
                      )}
                    </td>
                    <td>
                      <button
                        type="button"
                        class="small-button"
                        data-action="replay"
                        disabled={!ready || !!replay.pending ||
                          (list && !list.enabled)}
                        title="Send this event to the receiver again"
                        onClick={() => onReplay(d.id)}
                      >
                        {replay.pending ? "Replaying…" : "Replay"}
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
