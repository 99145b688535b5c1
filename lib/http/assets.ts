/**
 * The browser assets the pages link to, and `/static/*`. The build itself
 * lives in tools/build_assets.ts (the `build` task); when no up-to-date
 * build is there, the first page builds it (the builder is loaded then, so
 * a process that serves no pages never loads it).
 */

import { basename, extname, join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import type { AssetManifest } from "../../tools/build_assets.ts";
import { NotFoundError } from "../core/errors.ts";
import { openLocalRange } from "../storage/local_file.ts";
import { fileResponse } from "./http_file.ts";

export type { AssetManifest };

/** The project folder. */
const ROOT = fromFileUrl(new URL("../../", import.meta.url));
const RETRY_FAILED_BUILD_MS = 10_000;
const SAFE_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

const STATIC_TYPES: Record<string, string> = {
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
};

let assets: Promise<AssetManifest> | undefined;
let failedAt = 0;

/** Assets to use when the bundle cannot be built: the plain stylesheet, no script. */
const FALLBACK_ASSETS: AssetManifest = {
  builder: "",
  inputHash: "",
  script: null,
  style: "/static/style.css",
  islands: [],
  builtAt: 0,
};

/**
 * The assets of this project, built (or found up to date) on first use and
 * kept for the life of the process. When the build fails the pages still
 * work without JavaScript: the plain stylesheet is used, the error is logged
 * and the build is tried again after a few seconds.
 */
export async function ensureAssets(): Promise<AssetManifest> {
  if (!assets && Date.now() - failedAt < RETRY_FAILED_BUILD_MS) {
    return FALLBACK_ASSETS;
  }
  assets ??= import("../../tools/build_assets.ts").then((m) => m.buildAssets());
  try {
    return await assets;
  } catch (err) {
    if (assets) {
      assets = undefined;
      failedAt = Date.now();
      console.error("building the browser assets failed:", err);
    }
    return FALLBACK_ASSETS;
  }
}

/**
 * Answers GET or HEAD for `/static/<path>` from the project's `static/`
 * folder: hashed build files are cached for a year, others revalidated.
 * Throws a 404 for anything outside it, hidden files and unknown types.
 */
export async function serveStaticFile(
  req: Request,
  path: string,
): Promise<Response> {
  const segments = path.split("/");
  const type = STATIC_TYPES[extname(path).toLowerCase()];
  if (!type || !segments.every((s) => SAFE_SEGMENT.test(s))) {
    throw missingStatic(path);
  }
  const file = join(ROOT, "static", ...segments);
  const stat = await Deno.stat(file).catch(() => null);
  if (!stat?.isFile) throw missingStatic(path);
  const hashed = segments[0] === "build" && basename(path) !== "manifest.json";
  return await fileResponse(
    req,
    {
      size: stat.size,
      mtime: stat.mtime ?? new Date(0),
      etag: `"${stat.size.toString(16)}-${
        (stat.mtime?.getTime() ?? 0).toString(16)
      }"`,
    },
    type,
    (start, end) => openLocalRange(file, start, end),
    {
      cacheControl: hashed ? "public, max-age=31536000, immutable" : "no-cache",
      headers: { "X-Content-Type-Options": "nosniff" },
    },
  );
}

function missingStatic(path: string): NotFoundError {
  const shown = path.length > 80 ? `${path.slice(0, 80)}...` : path;
  return new NotFoundError(`There is no static file "${shown}".`);
}
