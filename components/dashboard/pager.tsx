import { pageQuery } from "../../client/live_recording_list.ts";
import type { LibraryFilter } from "../../common/title.ts";

/** Props of {@link Pager}. */
export interface PagerProps {
  limit: number;
  /** Cursor of this page; null for the newest recordings. */
  cursor: string | null;
  /** Cursor of the next, older page. */
  nextCursor: string | null;
  /** The view's search and status, kept from page to page. */
  filter?: LibraryFilter;
}

/** Links to the newest and to the next, older page of recordings. */
export function Pager({ limit, cursor, nextCursor, filter }: PagerProps) {
  return (
    <nav class="pager" aria-label="Pages">
      {cursor && <a href={`/?${pageQuery(limit, null, filter)}`}>← Newest</a>}
      {nextCursor && (
        <a href={`/?${pageQuery(limit, nextCursor, filter)}`} rel="next">
          Older →
        </a>
      )}
    </nav>
  );
}
