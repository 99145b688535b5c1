/**
 * The dashboard's page of recordings, kept live over `/ws`: a snapshot on
 * every (re)connection, then each change merged in (new recordings appear
 * on the newest page only; with a search or status, only those that match,
 * and a row that stops matching leaves).
 */

import { type Signal, signal } from "@preact/signals";
import {
  mergeRecording,
  type RecordingView,
} from "../common/recording_view.ts";
import {
  connectLive,
  type LiveIndicatorState,
  liveUrl,
} from "./live_client.ts";
import { type LibraryFilter, matchesFilter } from "../common/title.ts";
import { ServerClock } from "./server_clock.ts";

/** The page of recordings a dashboard shows, as the server rendered it. */
export interface RecordingListPage extends LibraryFilter {
  recordings: RecordingView[];
  limit: number;
  /** Cursor of this page; null for the newest recordings. */
  cursor: string | null;
  /** Server time (ms) of the read. */
  now: number;
}

/** The query of a page of the dashboard (and of its `/ws`), with its search and status. */
export function pageQuery(
  limit: number,
  cursor: string | null,
  filter: LibraryFilter = {},
): string {
  const params = new URLSearchParams({ limit: String(limit) });
  if (cursor) params.set("cursor", cursor);
  if (filter.q) params.set("q", filter.q);
  if (filter.status) params.set("status", filter.status);
  return params.toString();
}

/** A page of recordings that follows every change (see the module notes). */
export class LiveRecordingList {
  readonly rows: Signal<RecordingView[]>;
  readonly live = signal<LiveIndicatorState>("static");
  /** Set once the page runs in a browser (its buttons work). */
  readonly ready = signal(false);
  readonly clock: ServerClock;
  #page: RecordingListPage;
  #pageUrl: () => string;

  /** `pageUrl` is the page's address (default: `location.href`). */
  constructor(
    page: RecordingListPage,
    pageUrl: () => string = () => location.href,
  ) {
    this.#page = page;
    this.#pageUrl = pageUrl;
    this.rows = signal(page.recordings);
    this.clock = new ServerClock(page.now);
  }

  /** Connects to `/ws`; returns the function that disconnects. */
  open(): () => void {
    const page = this.#page;
    this.ready.value = true;
    const stopClock = this.clock.start();
    const client = connectLive(
      liveUrl(
        `/ws?${pageQuery(page.limit, page.cursor, page)}`,
        this.#pageUrl(),
      ),
      {
        onState: (state) => {
          this.live.value = state;
        },
        onMessage: (message) => {
          if (message.type === "snapshot" && "recordings" in message) {
            this.clock.sync(message.now);
            this.rows.value = message.recordings;
          } else if (message.type === "change") {
            this.rows.value = mergeRecording(
              this.rows.value,
              message.recording,
              page.cursor === null,
              (rec) => matchesFilter(rec, page),
            );
          }
        },
      },
    );
    return () => {
      stopClock();
      client.close();
    };
  }
}
