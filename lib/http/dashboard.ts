/**
 * View models of the pages: one page of the dashboard (cursor paging over
 * every recording, newest first, with an optional search and status) and
 * one recording for its own page.
 */

import type { AppContext } from "../core/context.ts";
import { BadRequestError } from "../core/errors.ts";
import { getRecording } from "../recordings/ids.ts";
import { listRecordings, type RecordingPage } from "../recordings/sessions.ts";
import {
  isStatus,
  searchRecordings,
  uploadPictureOf,
} from "../recordings/library.ts";
import type { RecordingStatus } from "../kv/keys.ts";
import type { UploadPicture } from "../../common/upload_picture.ts";
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
  /** Search: words that start words of the title (`?q=`). */
  q?: string;
  /** Only recordings in this status (`?status=`). */
  status?: RecordingStatus;
}

/** The longest search read from a query string. */
const MAX_QUERY_LENGTH = 200;

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
  const query: PageQuery = { limit, cursor };
  const q = (params.get("q") ?? "").trim();
  if (q.length > MAX_QUERY_LENGTH) {
    throw new BadRequestError(
      `The search may have at most ${MAX_QUERY_LENGTH} characters.`,
    );
  }
  if (q) query.q = q;
  const status = params.get("status") ?? "";
  if (status !== "" && !isStatus(status)) {
    throw new BadRequestError(
      `status must be one of recording, processing, complete or failed, got "${
        status.slice(0, 20)
      }".`,
    );
  }
  if (status) query.status = status as RecordingStatus;
  return query;
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
  const page = await loadRecordPage(ctx, query);
  return {
    ...query,
    recordings: page.recordings.map(toRecordingView),
    nextCursor: page.cursor,
    now: Date.now(),
  };
}

/**
 * Reads one page of records, newest first, with the query's search and
 * status. Throws a 400 for a cursor KV rejects.
 */
export async function loadRecordPage(
  ctx: AppContext,
  query: PageQuery,
): Promise<RecordingPage> {
  try {
    return query.q || query.status
      ? await searchRecordings(ctx, {
        limit: query.limit,
        cursor: query.cursor ?? undefined,
        q: query.q,
        status: query.status,
      })
      : await listRecordings(ctx, {
        limit: query.limit,
        cursor: query.cursor ?? undefined,
      });
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

/** A recording's page: the recording and the picture of its upload. */
export interface RecordingPageView {
  recording: RecordingView;
  upload: UploadPicture;
  /** Server time (ms) of the read. */
  now: number;
}

/** Reads one recording and the picture of its upload; a 404 for malformed and unknown ids. */
export async function loadRecordingPage(
  ctx: AppContext,
  id: string,
): Promise<RecordingPageView> {
  const rec = await getRecording(ctx, id);
  const now = Date.now();
  return {
    recording: toRecordingView(rec),
    upload: await uploadPictureOf(ctx, rec, now),
    now,
  };
}
