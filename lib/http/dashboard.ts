/**
 * View models of the pages: one page of the dashboard (cursor paging over
 * every recording, newest first) and one recording for its own page.
 */

import type { AppContext } from "../core/context.ts";
import { BadRequestError } from "../core/errors.ts";
import { getRecording } from "../recordings/ids.ts";
import { listRecordings } from "../recordings/sessions.ts";
import {
  type RecordingView,
  toRecordingView,
} from "../../common/recording_view.ts";

/** Rows per dashboard page unless `?limit=` says otherwise. */
export const DEFAULT_PAGE_SIZE = 50;
/** Most rows one dashboard page shows. */
export const MAX_PAGE_SIZE = 200;
const MAX_CURSOR_LENGTH = 1000;

/** Which page of the dashboard to show. */
export interface PageQuery {
  limit: number;
  /** Cursor of the page (from the previous page's `nextCursor`); null for the newest. */
  cursor: string | null;
}

/** One page of the dashboard. */
export interface DashboardView extends PageQuery {
  recordings: RecordingView[];
  /** Cursor of the next, older page; null on the last page. */
  nextCursor: string | null;
  /** Server time (ms) when the page was read. */
  now: number;
}

/** Reads `limit` and `cursor` from a query string; throws a 400 when they are malformed. */
export function parsePageQuery(params: URLSearchParams): PageQuery {
  const rawLimit = params.get("limit");
  let limit = DEFAULT_PAGE_SIZE;
  if (rawLimit !== null && rawLimit !== "") {
    limit = Number(rawLimit);
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_PAGE_SIZE) {
      throw new BadRequestError(
        `limit must be a whole number from 1 to ${MAX_PAGE_SIZE}, got "${
          rawLimit.slice(0, 20)
        }".`,
      );
    }
  }
  const cursor = params.get("cursor") || null;
  if (cursor !== null && cursor.length > MAX_CURSOR_LENGTH) {
    throw badCursor();
  }
  return { limit, cursor };
}

function badCursor(): BadRequestError {
  return new BadRequestError(
    "The page cursor is not valid; start again from the newest recordings.",
  );
}

/** Reads one dashboard page, newest first. Throws a 400 for a cursor KV rejects. */
export async function loadDashboard(
  ctx: AppContext,
  query: PageQuery,
): Promise<DashboardView> {
  try {
    const page = await listRecordings(ctx, {
      limit: query.limit,
      cursor: query.cursor ?? undefined,
    });
    return {
      ...query,
      recordings: page.recordings.map(toRecordingView),
      nextCursor: page.cursor,
      now: Date.now(),
    };
  } catch (err) {
    if (err instanceof TypeError && /cursor/i.test(err.message)) {
      throw badCursor();
    }
    throw err;
  }
}

/** Reads one recording for its page; a 404 for malformed and unknown ids alike. */
export async function loadRecordingView(
  ctx: AppContext,
  id: string,
): Promise<RecordingView> {
  return toRecordingView(await getRecording(ctx, id));
}
