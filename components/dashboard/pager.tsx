import { pageQuery } from "../../client/live_recording_list.ts";

/** Props of {@link Pager}. */
export interface PagerProps {
  limit: number;
  /** Cursor of this page; null for the newest recordings. */
  cursor: string | null;
  /** Cursor of the next, older page. */
  nextCursor: string | null;
}

/** Links to the newest and to the next, older page of recordings. */
export function Pager({ limit, cursor, nextCursor }: PagerProps) {
  return (
    <nav class="pager" aria-label="Pages">
      {cursor && <a href={`/?limit=${limit}`}>← Newest</a>}
      {nextCursor && (
        <a href={`/?${pageQuery(limit, nextCursor)}`} rel="next">
          Older →
        </a>
      )}
    </nav>
  );
}
