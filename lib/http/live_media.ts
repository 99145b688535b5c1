/**
 * Serving a recording's live encode (HLS, fragmented MP4) under
 * `/media/<id>/<name>`: the playlist `live.m3u8`, the init segment
 * `live-init.mp4` and the media segments `live-00001.m4s`, as the
 * processing side stores them (common/live_encode.ts). The same access
 * rules as the finished files (lib/http/access.ts `authorizeView`); ranges,
 * validators and HEAD as for any file (lib/http/http_file.ts).
 *
 * Caching suits a live playlist: the playlist and the init segment are
 * revalidated on every use (`no-cache`, with an ETag so an unchanged one is
 * a 304), a media segment the playlist lists never changes (`immutable`),
 * one not listed yet is not stored. A request that carries its upload
 * token as `?token=` gets a playlist whose URIs carry it too, so a player
 * (hls.js, or a browser's own HLS) that resolves them against the
 * playlist's URL sends it with every segment.
 */

import type { AppContext } from "../core/context.ts";
import { NotFoundError } from "../core/errors.ts";
import {
  LIVE_FILE_NAME,
  liveEncodeOf,
  segmentNumber,
} from "../../common/live_encode.ts";
import { getRecording } from "../recordings/ids.ts";
import { authorizeView } from "./access.ts";
import { fileResponse, type StoredFileInfo } from "./http_file.ts";

/** Content-Type of each kind of live file. */
const PLAYLIST_TYPE = "application/vnd.apple.mpegurl";
const INIT_TYPE = "video/mp4";
const SEGMENT_TYPE = "video/iso.segment";

/** Cache-Control of the playlist and the init segment: always revalidated. */
const REVALIDATE = "private, no-cache";
/** Cache-Control of a listed media segment. */
const IMMUTABLE = "private, max-age=31536000, immutable";
/** Cache-Control of a media segment the playlist does not list yet. */
const NOT_LISTED = "private, no-store";

/** Whether `name` is the name of a live file (checked before any read). */
export function isLiveFileName(name: string): boolean {
  return LIVE_FILE_NAME.test(name);
}

function missingLiveFile(id: string, name: string): NotFoundError {
  return new NotFoundError(
    `Recording ${id} has no live file named "${name}" (there is a live encode only while a recording runs, when a slot is free); GET /video/${id}/ lists its finished files.`,
  );
}

/**
 * Answers GET or HEAD for a live file of a recording (200, 206, 304, 416;
 * 404 when the recording has no live encode or no such file).
 */
export async function serveLiveFile(
  ctx: AppContext,
  req: Request,
  id: string,
  name: string,
): Promise<Response> {
  await authorizeView(ctx, id, req);
  const rec = await getRecording(ctx, id);
  const live = liveEncodeOf(rec);
  if (!live || !isLiveFileName(name)) throw missingLiveFile(id, name);
  const info = await ctx.storage.statFile(id, name);
  if (!info) throw missingLiveFile(id, name);

  if (name.endsWith(".m3u8")) {
    const token = new URL(req.url).searchParams.get("token");
    const text = await readText(ctx, id, name, info);
    const bytes = new TextEncoder().encode(
      token ? withToken(text, token) : text,
    );
    return await fileResponse(
      req,
      {
        size: bytes.length,
        mtime: info.mtime,
        etag: token ? `${info.etag.slice(0, -1)}-t"` : info.etag,
      },
      PLAYLIST_TYPE,
      (start, end) => Promise.resolve(bytesStream(bytes, start, end)),
      {
        cacheControl: REVALIDATE,
        headers: { "X-Content-Type-Options": "nosniff" },
      },
    );
  }

  const number = segmentNumber(name);
  const listed = number !== undefined && number <= live.segments;
  return await fileResponse(
    req,
    info,
    number === undefined ? INIT_TYPE : SEGMENT_TYPE,
    (start, end) => ctx.storage.openFile(id, name, start, end),
    {
      cacheControl: number === undefined
        ? REVALIDATE
        : listed
        ? IMMUTABLE
        : NOT_LISTED,
      headers: { "X-Content-Type-Options": "nosniff" },
    },
  );
}

/** The playlist's text (a few KB). */
async function readText(
  ctx: AppContext,
  id: string,
  name: string,
  info: StoredFileInfo,
): Promise<string> {
  if (info.size === 0) return "";
  const stream = await ctx.storage.openFile(id, name, 0, info.size - 1);
  return await new Response(stream).text();
}

/**
 * The playlist with `token=` added to every URI: the lines that are not
 * tags, and the `URI="..."` attributes of tags (`#EXT-X-MAP`).
 */
export function withToken(playlist: string, token: string): string {
  const add = (uri: string) =>
    `${uri}${uri.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
  return playlist.split("\n").map((line) => {
    const text = line.replace(/\r$/, "");
    if (text === "") return line;
    if (!text.startsWith("#")) return add(text) + line.slice(text.length);
    return line.replace(/URI="([^"]*)"/g, (_, uri) => `URI="${add(uri)}"`);
  }).join("\n");
}

function bytesStream(
  bytes: Uint8Array,
  start: number,
  end: number,
): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(bytes.slice(start, end + 1));
      controller.close();
    },
  });
}
