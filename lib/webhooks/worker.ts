/**
 * The webhook delivery worker. The delivery records in KV are the truth
 * (lib/webhooks/deliveries.ts); a `watch` on ["webhook_wakeup"] (rewritten
 * in the commit that adds deliveries) and on the worker lease, timers for
 * the next due delivery, and the lease renewal only wake it.
 *
 * One instance of a cluster delivers at a time: the one holding the
 * singleton lease ["webhook_worker"] (lib/webhooks/worker_lease.ts); the
 * others wait and take over when it lapses or is released. With a KV file
 * no other process can use, the lease is taken at once at start-up (a
 * restarted process does not wait out its predecessor's lease).
 *
 * Sending never touches the ingest path: attempts run here, at most
 * WEBHOOK_CONCURRENCY at once, each bounded by WEBHOOK_TIMEOUT_MS; a
 * recording's deliveries to one URL go one at a time, oldest due first.
 */

import type { AppContext } from "../core/context.ts";
import {
  type WebhookDelivery,
  webhookDuePrefix,
  webhookKey,
  webhookWakeupKey,
  webhookWorkerKey,
} from "../kv/keys.ts";
import { metricsOf } from "../ops/metrics.ts";
import { reportAlive } from "../ops/health.ts";
import { withSpan } from "../ops/tracing.ts";
import {
  type AttemptOutcome,
  claimAttempt,
  recordAttempt,
} from "./deliveries.ts";
import { sendDelivery } from "./send.ts";
import { SingletonLease } from "./worker_lease.ts";

const MAX_TIMER_MS = 60_000;
/** A tick running longer than this means the worker is stuck (readiness). */
const STUCK_TICK_MS = 60_000;

interface InFlight {
  lane: string;
  controller: AbortController;
  done: Promise<void>;
}

/** Delivers due webhooks while this instance holds the worker lease. */
export class WebhookWorker {
  readonly id = crypto.randomUUID();
  #ctx: AppContext;
  #lease: SingletonLease;
  #inFlight = new Map<string, InFlight>();
  #lanes = new Set<string>();
  #stopped = true;
  #timer?: ReturnType<typeof setTimeout>;
  #renewTimer?: ReturnType<typeof setInterval>;
  #ticking?: Promise<void>;
  #tickStartedAt = 0;
  #again = false;
  #failures = 0;
  #watch?: ReadableStreamDefaultReader<unknown>;
  #unreport?: () => void;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    this.#lease = new SingletonLease(
      ctx.kv,
      webhookWorkerKey(),
      this.id,
      ctx.config.webhookLeaseMs,
    );
  }

  /** Whether this instance delivers now (holds the lease). */
  get holding(): boolean {
    return this.#lease.held;
  }

  /** Whether the worker runs and is not stuck (for /readyz). */
  get alive(): boolean {
    if (this.#stopped) return false;
    return !this.#ticking || Date.now() - this.#tickStartedAt < STUCK_TICK_MS;
  }

  /** Starts: takes the lease if it can, watches for work, renews the lease. */
  async start(): Promise<void> {
    this.#stopped = false;
    const ctx = this.#ctx;
    // No other process can use a KV that is not shared: take the lease now.
    if (!ctx.config.sharedKv) await this.#lease.acquire(true);
    const stream = ctx.kv.watch([webhookWakeupKey(), webhookWorkerKey()]);
    this.#watch = stream.getReader();
    (async () => {
      try {
        while (!this.#stopped) {
          const { done } = await this.#watch!.read();
          if (done) break;
          this.wake();
        }
      } catch {
        // the watch ends when KV closes
      }
    })();
    this.#renewTimer = setInterval(
      () => this.wake(),
      Math.max(250, Math.floor(ctx.config.webhookLeaseMs / 3)),
    );
    this.#unreport = reportAlive(ctx, "webhooks", () => this.alive);
    this.wake();
  }

  /**
   * Stops: cuts off the attempts in flight (they are due again at once, for
   * whoever holds the lease next), waits for them and releases the lease.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearInterval(this.#renewTimer);
    this.#unreport?.();
    await this.#watch?.cancel().catch(() => {});
    for (const f of this.#inFlight.values()) f.controller.abort();
    await this.#ticking;
    await Promise.allSettled([...this.#inFlight.values()].map((f) => f.done));
    await this.#lease.release();
  }

  /** Looks for due deliveries now. */
  wake(): void {
    if (this.#stopped) return;
    if (this.#ticking) {
      this.#again = true;
      return;
    }
    this.#tickStartedAt = Date.now();
    this.#ticking = this.#tick().then(() => {
      this.#failures = 0;
    }, (err) => {
      if (this.#stopped) return;
      // The KV did not answer: look again soon, backing off to 10 s.
      const delay = Math.min(250 * 2 ** this.#failures++, 10_000);
      this.#ctx.log.error("webhook worker failed; looking again soon", {
        error: String(err),
        retry_ms: delay,
      });
      this.#schedule(Date.now() + delay);
    }).finally(() => {
      this.#ticking = undefined;
      if (this.#again) {
        this.#again = false;
        this.wake();
      }
    });
  }

  #schedule(at: number): void {
    clearTimeout(this.#timer);
    if (this.#stopped) return;
    const delay = Math.min(Math.max(at - Date.now(), 10), MAX_TIMER_MS);
    this.#timer = setTimeout(() => this.wake(), delay);
  }

  async #tick(): Promise<void> {
    const ctx = this.#ctx;
    const kv = ctx.kv;
    if (!await this.#lease.acquire()) {
      // Another instance delivers; look again when its lease would lapse.
      this.#schedule(this.#lease.otherUntil + 50);
      return;
    }
    const now = Date.now();
    const due = kv.list<string>({
      prefix: webhookDuePrefix(),
      end: [...webhookDuePrefix(), now + 1],
    });
    for await (const e of due) {
      if (this.#stopped || !this.#lease.held) return;
      const id = e.value;
      if (this.#inFlight.has(id)) continue;
      if (this.#inFlight.size >= ctx.config.webhookConcurrency) break;
      const entry = await kv.get<WebhookDelivery>(webhookKey(id));
      const d = entry.value;
      if (!d || d.state !== "pending" || d.dueAt !== e.key[1]) {
        // A stale index entry (the record moved on): drop it.
        await kv.atomic().check(entry).delete(e.key).commit();
        continue;
      }
      const lane = `${d.recordingId} ${d.url}`;
      if (this.#lanes.has(lane)) continue;
      const claimed = await claimAttempt(
        ctx,
        entry as Deno.KvEntry<WebhookDelivery>,
      );
      if (!claimed) continue;
      this.#start(claimed, lane);
    }
    // The next due delivery wakes the worker; so does the lease renewal.
    let next = now + MAX_TIMER_MS;
    for await (
      const e of kv.list({
        prefix: webhookDuePrefix(),
        start: [...webhookDuePrefix(), now + 1],
      }, { limit: 1 })
    ) next = Math.min(next, e.key[1] as number);
    this.#schedule(next);
  }

  #start(
    claimed: { delivery: WebhookDelivery; stamp: string },
    lane: string,
  ): void {
    const d = claimed.delivery;
    const controller = new AbortController();
    this.#lanes.add(lane);
    const done = this.#attempt(claimed, controller.signal)
      .catch((err) => {
        this.#ctx.log.error("webhook attempt failed to record", {
          delivery: d.id,
          error: String(err),
        });
      })
      .finally(() => {
        this.#inFlight.delete(d.id);
        this.#lanes.delete(lane);
        this.wake();
      });
    this.#inFlight.set(d.id, { lane, controller, done });
  }

  async #attempt(
    claimed: { delivery: WebhookDelivery; stamp: string },
    signal: AbortSignal,
  ): Promise<void> {
    const ctx = this.#ctx;
    const d = claimed.delivery;
    let outcome: AttemptOutcome = "superseded";
    await withSpan("tapedeck.webhook.deliver", {
      "tapedeck.webhook.event": d.event,
      "tapedeck.webhook.delivery": d.id,
      "tapedeck.recording": d.recordingId,
      "tapedeck.webhook.attempt": d.attempts,
    }, async () => {
      const result = await sendDelivery(ctx, d, signal);
      outcome = await recordAttempt(ctx, claimed, result);
      const fields = {
        event: d.event,
        delivery: d.id,
        recording: d.recordingId,
        attempt: d.attempts,
        outcome,
        status: result.status,
        error: result.error,
      };
      if (outcome === "failed") ctx.log.warn("webhook.gave_up", fields);
      else if (outcome === "retry") ctx.log.info("webhook.retry", fields);
      else ctx.log.debug("webhook.attempt", fields);
    });
    if (outcome !== "superseded") {
      metricsOf(ctx).webhookAttempts.inc({ event: d.event, outcome });
    }
  }
}

/**
 * Starts the delivery worker when WEBHOOK_URLS is set (it also registers
 * itself for /readyz); resolves undefined otherwise.
 */
export async function startWebhookWorker(
  ctx: AppContext,
): Promise<WebhookWorker | undefined> {
  if (ctx.config.webhookUrls.length === 0) return undefined;
  const worker = new WebhookWorker(ctx);
  await worker.start();
  return worker;
}
