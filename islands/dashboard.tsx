import { useMemo } from "preact/hooks";
import { KeptUploadCount } from "../client/kept_uploads.ts";
import { LiveRecordingList } from "../client/live_recording_list.ts";
import { RecordingActionController } from "../client/recording_actions.ts";
import { useOpened } from "../client/use_opened.ts";
import type { RecordingView } from "../common/recording_view.ts";
import { KeptUploadsNotice } from "../components/dashboard/kept_uploads_notice.tsx";
import { Pager } from "../components/dashboard/pager.tsx";
import { RecordingTable } from "../components/dashboard/recording_table.tsx";
import { LiveIndicator } from "../components/shared/live_indicator.tsx";
import { SearchForm } from "../components/dashboard/search_form.tsx";
import type { LibraryFilter } from "../common/title.ts";

/** Props of the dashboard: one page of recordings as the server read it. */
export interface DashboardProps extends LibraryFilter {
  recordings: RecordingView[];
  limit: number;
  /** Cursor of this page; null for the newest recordings. */
  cursor: string | null;
  /** Cursor of the next, older page. */
  nextCursor: string | null;
  /** Server time (ms) of the read. */
  now: number;
}

/**
 * Every recording, newest first, a page at a time, with a search and a
 * status filter (in the URL); rows change live over `/ws`
 * (client/live_recording_list.ts). A recording still `recording` can be
 * finished with what was received, a failed one queued again.
 */
export default function Dashboard(props: DashboardProps) {
  const list = useOpened(() => new LiveRecordingList(props));
  const kept = useOpened(() => new KeptUploadCount());
  const actions = useMemo(() => new RecordingActionController(), []);
  const rows = list.rows.value;
  const filtered = !!(props.q || props.status);
  return (
    <section class="dashboard">
      <div class="section-head">
        <h1>Recordings</h1>
        <LiveIndicator state={list.live.value} />
      </div>
      <KeptUploadsNotice count={kept.count.value} />
      <SearchForm q={props.q} status={props.status} />
      {rows.length === 0
        ? (filtered
          ? (
            <p class="empty" id="empty">
              No recordings {props.q ? `match “${props.q}”` : ""}
              {props.status
                ? ` ${props.q ? "and are" : "are"} ${props.status}`
                : ""}
              {props.cursor ? " on this page" : ""}. <a href="/">Show all</a>
            </p>
          )
          : (
            <p class="empty" id="empty">
              No recordings {props.cursor ? "on this page" : "yet"}.{" "}
              <a href="/record">Record one</a> or send one to the API.
            </p>
          ))
        : (
          <RecordingTable
            recordings={rows}
            now={list.clock.now.value}
            ready={list.ready.value}
            actions={actions.states.value}
            onAction={(rec, action) =>
              actions.run(rec, action, list.clock.now.value)}
          />
        )}
      <Pager
        limit={props.limit}
        cursor={props.cursor}
        nextCursor={props.nextCursor}
        filter={props}
      />
    </section>
  );
}
