/**
 * A recording's webhook deliveries on its page: loaded from
 * `GET /api/recordings/<id>/webhooks`, loaded again when the recording's
 * status changes (events follow status changes) and every few seconds
 * while one is pending,
 * and replayed with `POST /api/webhooks/<delivery>/replay`. Runs in
 * browsers and in Deno (fetch only).
 */

import { type Signal, signal } from "@preact/signals";
import type { WebhookDeliveryList } from "../common/webhook_view.ts";

/** How often the list is read again while a delivery is pending. */
const PENDING_POLL_MS = 3000;

/** The recording the page follows, to load the list again when its status changes. */
export interface FollowedRecording {
  readonly value: { status: string; deleted?: boolean };
  subscribe(
    fn: (rec: { status: string; deleted?: boolean }) => void,
  ): () => void;
}

/** Where a delivery's Replay button stands. */
export interface ReplayState {
  pending?: boolean;
  error?: string;
}

/** The deliveries of one recording and their Replay buttons. */
export class WebhookDeliveries {
  /** The list as last read; null until the first read. */
  readonly list: Signal<WebhookDeliveryList | null> = signal(null);
  /** Why the last read failed, if it did. */
  readonly error: Signal<string | null> = signal(null);
  /** Each delivery's Replay button, by delivery id. */
  readonly replays: Signal<Record<string, ReplayState>> = signal({});
  #id: string;
  #base: string;
  #fetch: typeof fetch;
  #pollMs: number;
  #timer?: ReturnType<typeof setTimeout>;
  #open = false;
  #loading?: Promise<void>;
  #again = false;
  #recording?: FollowedRecording;

  /** `base`: the server's origin (default: this page's). */
  constructor(
    id: string,
    options: {
      base?: string;
      fetch?: typeof fetch;
      pollMs?: number;
      recording?: FollowedRecording;
    } = {},
  ) {
    this.#id = id;
    this.#recording = options.recording;
    this.#base = options.base ?? "";
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#pollMs = options.pollMs ?? PENDING_POLL_MS;
  }

  /** Loads the list and keeps it fresh; returns the function that stops. */
  open(): () => void {
    this.#open = true;
    this.refresh();
    const stateOf = (r: { status: string; deleted?: boolean }) =>
      `${r.status} ${!!r.deleted}`;
    let last = this.#recording ? stateOf(this.#recording.value) : "";
    const unsubscribe = this.#recording?.subscribe((r) => {
      if (stateOf(r) === last) return;
      last = stateOf(r);
      this.refresh();
    });
    return () => {
      this.#open = false;
      clearTimeout(this.#timer);
      unsubscribe?.();
    };
  }

  /** Reads the list again (calls made while a read runs are merged into one more). */
  refresh(): Promise<void> {
    if (this.#loading) {
      this.#again = true;
      return this.#loading;
    }
    this.#loading = this.#load().finally(() => {
      this.#loading = undefined;
      if (this.#again && this.#open) {
        this.#again = false;
        this.refresh();
      }
    });
    return this.#loading;
  }

  async #load(): Promise<void> {
    clearTimeout(this.#timer);
    try {
      const res = await this.#fetch(
        `${this.#base}/api/recordings/${this.#id}/webhooks`,
        { headers: { Accept: "application/json" } },
      );
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        throw new Error(body.error ?? `The server answered ${res.status}.`);
      }
      this.list.value = body as WebhookDeliveryList;
      this.error.value = null;
    } catch (err) {
      this.error.value = (err as Error).message ?? String(err);
    }
    const pending = this.list.value?.deliveries.some((d) =>
      d.state === "pending"
    );
    if (this.#open && pending) {
      this.#timer = setTimeout(() => this.refresh(), this.#pollMs);
    }
  }

  /** Sends delivery `deliveryId` again, then reads the list again. */
  async replay(deliveryId: string): Promise<void> {
    this.#setReplay(deliveryId, { pending: true });
    try {
      const res = await this.#fetch(
        `${this.#base}/api/webhooks/${deliveryId}/replay`,
        { method: "POST", headers: { Accept: "application/json" } },
      );
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        throw new Error(body.error ?? `The server answered ${res.status}.`);
      }
      this.#setReplay(deliveryId, {});
    } catch (err) {
      this.#setReplay(deliveryId, {
        error: (err as Error).message ?? String(err),
      });
    }
    await this.refresh();
  }

  #setReplay(id: string, state: ReplayState): void {
    this.replays.value = { ...this.replays.value, [id]: state };
  }
}
