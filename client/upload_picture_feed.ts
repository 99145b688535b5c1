/// <reference lib="dom" />
/**
 * Keeps the picture of an upload current on a recording's page: while the
 * recording takes chunks, each change the live socket brings is followed
 * (at most once a second) by a fresh picture from
 * `/api/recordings/<id>/upload`, which the page draws with the same
 * component the server used.
 */

import { effect, type Signal, signal } from "@preact/signals";
import type { RecordingView } from "../common/recording_view.ts";
import type { UploadPicture } from "../common/upload_picture.ts";

/** Least time between two fetches of the picture (ms). */
const MIN_INTERVAL_MS = 1000;

/** The picture of one upload, refetched as the recording changes. */
export class UploadPictureFeed {
  readonly picture: Signal<UploadPicture>;
  #recording: Signal<RecordingView>;
  #fetch: typeof fetch;

  constructor(
    picture: UploadPicture,
    recording: Signal<RecordingView>,
    fetcher: typeof fetch = (input, init) => fetch(input, init),
  ) {
    this.picture = signal(picture);
    this.#recording = recording;
    this.#fetch = fetcher;
  }

  /** Starts following the recording; returns the function that stops. */
  open(): () => void {
    let lastKey = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    let lastFetch = 0;
    let stopped = false;
    const fetchNow = async () => {
      timer = undefined;
      lastFetch = Date.now();
      const r = this.#recording.value;
      const token = new URL(location.href).searchParams.get("token");
      try {
        const res = await this.#fetch(
          `/api/recordings/${r.id}/upload${
            token ? `?token=${encodeURIComponent(token)}` : ""
          }`,
          { credentials: "same-origin" },
        );
        if (res.ok && !stopped) this.picture.value = await res.json();
        else await res.body?.cancel();
      } catch {
        // the next change tries again
      }
    };
    const dispose = effect(() => {
      const r = this.#recording.value;
      const key =
        `${r.chunksReceived}:${r.bytesReceived}:${r.status}:${r.updatedAt}`;
      if (lastKey === "") {
        lastKey = key;
        return;
      }
      if (key === lastKey || r.deleted) return;
      const wasLive = this.picture.value.live;
      lastKey = key;
      if (!wasLive && r.status !== "recording") return;
      if (timer !== undefined) return;
      const wait = Math.max(0, lastFetch + MIN_INTERVAL_MS - Date.now());
      timer = setTimeout(fetchNow, wait);
    });
    return () => {
      stopped = true;
      dispose();
      clearTimeout(timer);
    };
  }
}
