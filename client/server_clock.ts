/**
 * The server's time as a page estimates it, for "3 s ago" labels: it
 * starts at the time the page was rendered, ticks every second and is set
 * again by every snapshot the server sends.
 */

import { type Signal, signal } from "@preact/signals";

/** A clock that follows the server's (see the module notes). */
export class ServerClock {
  /** The server's time now (ms since epoch). */
  readonly now: Signal<number>;
  #rendered: number;
  #offset = 0;

  /** `serverNow` is the server's time when the page was rendered. */
  constructor(serverNow: number) {
    this.#rendered = serverNow;
    this.now = signal(serverNow);
  }

  /** Ticks every second from now on; returns the function that stops it. */
  start(): () => void {
    this.#offset = this.#rendered - Date.now();
    const tick = setInterval(() => {
      this.now.value = Date.now() + this.#offset;
    }, 1000);
    return () => clearInterval(tick);
  }

  /** Sets the clock to the server's time of a snapshot. */
  sync(serverNow: number): void {
    this.#offset = serverNow - Date.now();
    this.now.value = serverNow;
  }
}
