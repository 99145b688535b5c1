/**
 * One recording kept live over `/ws/<id>`: a snapshot on every
 * (re)connection, then each newer change.
 */

import { type Signal, signal } from "@preact/signals";
import { isSameOrNewer, type RecordingView } from "../common/recording_view.ts";
import {
  connectLive,
  type LiveIndicatorState,
  liveUrl,
} from "./live_client.ts";
import { ServerClock } from "./server_clock.ts";

/** A recording that follows every change (see the module notes). */
export class LiveRecording {
  readonly recording: Signal<RecordingView>;
  readonly live = signal<LiveIndicatorState>("static");
  /** Set once the page runs in a browser (its buttons work). */
  readonly ready = signal(false);
  readonly clock: ServerClock;
  #id: string;
  #pageUrl: () => string;

  /**
   * `recording` and `now` as the server rendered them; `pageUrl` is the
   * page's address (default: `location.href`).
   */
  constructor(
    recording: RecordingView,
    now: number,
    pageUrl: () => string = () => location.href,
  ) {
    this.recording = signal(recording);
    this.clock = new ServerClock(now);
    this.#id = recording.id;
    this.#pageUrl = pageUrl;
  }

  /** Connects to `/ws/<id>`; returns the function that disconnects. */
  open(): () => void {
    this.ready.value = true;
    const stopClock = this.clock.start();
    const client = connectLive(liveUrl(`/ws/${this.#id}`, this.#pageUrl()), {
      onState: (state) => {
        this.live.value = state;
      },
      onMessage: (message) => {
        if (message.type === "snapshot" && "recording" in message) {
          this.clock.sync(message.now);
          this.recording.value = message.recording;
        } else if (
          message.type === "change" &&
          message.recording.id === this.recording.value.id &&
          isSameOrNewer(this.recording.value, message.recording)
        ) {
          this.recording.value = message.recording;
        }
      },
    });
    return () => {
      stopClock();
      client.close();
    };
  }
}
