/**
 * The recorder SDK's files under `/sdk/` (tools/build_sdk.ts builds them
 * into `static/build/sdk/`): `recorder.js` and `recorder.d.ts` always name
 * the newest build (revalidated after 5 minutes), `recorder.<hash>.js` and
 * `recorder.<hash>.d.ts` one build forever (immutable). Every answer may be
 * read by any origin: the SDK is public code that pages elsewhere and
 * extensions load. When no up-to-date build is there, the first request
 * builds it (the builder is loaded then, and only then).
 */

import { join } from "node:path";
import type { SdkManifest } from "../../tools/build_sdk.ts";
import { NotFoundError } from "../core/errors.ts";
import { openLocalRange } from "../storage/local_file.ts";
import { fileResponse } from "./http_file.ts";

const RETRY_FAILED_BUILD_MS = 10_000;
const HASHED = /^recorder\.[0-9a-f]{20}\.(js|d\.ts)$/;

/** Headers on every `/sdk/` answer: readable from any origin, no sniffing. */
export const SDK_HEADERS: Record<string, string> = {
  "Access-Control-Allow-Origin": "*",
  "Cross-Origin-Resource-Policy": "cross-origin",
  "X-Content-Type-Options": "nosniff",
};

let build: Promise<{ manifest: SdkManifest; dir: string }> | undefined;
let failedAt = 0;

/**
 * The SDK build, made (or found up to date) on first use and kept for the
 * life of the process; a failed build is tried again after a few seconds.
 */
export async function ensureSdk(): Promise<
  { manifest: SdkManifest; dir: string }
> {
  if (!build && Date.now() - failedAt < RETRY_FAILED_BUILD_MS) {
    throw new Error("The recorder SDK could not be built; see the server log.");
  }
  build ??= import("../../tools/build_sdk.ts").then(async (m) => ({
    manifest: await m.buildSdk(),
    dir: m.sdkBuildDir(),
  }));
  try {
    return await build;
  } catch (err) {
    if (build) {
      build = undefined;
      failedAt = Date.now();
      console.error("building the recorder SDK failed:", err);
    }
    throw err;
  }
}

/**
 * Answers GET or HEAD for `/sdk/<name>`: `recorder.js`, `recorder.d.ts`, or
 * a hashed name of the current build. Throws a 404 for anything else.
 */
export async function serveSdkFile(
  req: Request,
  name: string,
): Promise<Response> {
  const { manifest, dir } = await ensureSdk();
  const file = name === "recorder.js"
    ? manifest.script
    : name === "recorder.d.ts"
    ? manifest.types
    : HASHED.test(name)
    ? name
    : null;
  const path = file ? join(dir, file) : "";
  const stat = file ? await Deno.stat(path).catch(() => null) : null;
  if (!file || !stat?.isFile) {
    throw new NotFoundError(
      `There is no SDK file "${
        name.slice(0, 80)
      }"; the SDK is /sdk/recorder.js with its types at /sdk/recorder.d.ts.`,
    );
  }
  const isScript = file.endsWith(".js");
  return await fileResponse(
    req,
    {
      size: stat.size,
      mtime: stat.mtime ?? new Date(0),
      etag: `"${file}"`,
    },
    isScript
      ? "text/javascript; charset=utf-8"
      : "application/typescript; charset=utf-8",
    (start, end) => openLocalRange(path, start, end),
    {
      cacheControl: file === name
        ? "public, max-age=31536000, immutable"
        : "public, max-age=300",
      headers: {
        ...SDK_HEADERS,
        ...(isScript ? { "X-TypeScript-Types": `/sdk/${manifest.types}` } : {}),
      },
    },
  );
}
