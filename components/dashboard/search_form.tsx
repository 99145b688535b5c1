import { STATUSES } from "../../common/title.ts";
import type { RecordingStatus } from "../../lib/kv/keys.ts";

/** Props of {@link SearchForm}. */
export interface SearchFormProps {
  q?: string;
  status?: RecordingStatus;
}

/**
 * The search box and status filter: a plain GET form, so the view is in
 * the URL (shareable) and works without JavaScript.
 */
export function SearchForm({ q, status }: SearchFormProps) {
  return (
    <form
      class="library-search"
      id="library-search"
      method="get"
      action="/"
      role="search"
    >
      <div class="field">
        <label for="search-q">Search titles</label>
        <input
          type="search"
          id="search-q"
          name="q"
          value={q ?? ""}
          maxLength={200}
          autoComplete="off"
        />
      </div>
      <div class="field">
        <label for="search-status">Status</label>
        <select id="search-status" name="status">
          <option value="" selected={!status}>All</option>
          {STATUSES.map((s) => (
            <option key={s} value={s} selected={status === s}>{s}</option>
          ))}
        </select>
      </div>
      <button type="submit" class="primary">Search</button>
      {(q || status) && <a href="/" id="clear-search">Show all</a>}
    </form>
  );
}
