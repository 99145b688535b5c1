/**
 * The one place where errors become HTTP answers: each {@link ErrorKind}
 * has its status, the reply is `{"error": "<sentence>"}`, and an error that
 * is not typed is a 503 while the server stops, a 507 when the disk is
 * found full, or else a 500 that is logged with its stack.
 */

// `fs.promises`, not "node:fs/promises": Deno 2.5 (Deno Deploy) lacks
// that module's named `statfs` export, so the import would fail at load.
import { promises as fsp } from "node:fs";
import { dirname } from "node:path";
import type { Context } from "hono";
import { isRemoteKv } from "../core/config.ts";
import type { AppContext } from "../core/context.ts";
import {
  AppError,
  BodyAbortedError,
  type ErrorKind,
  fromSystemError,
  StorageFullError,
  UnavailableError,
} from "../core/errors.ts";
import { KvConnectionError } from "../kv/connection_error.ts";

/** The HTTP status of each kind of error. */
export const STATUS_OF: Record<ErrorKind, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  timeout: 408,
  conflict: 409,
  gone: 410,
  precondition_failed: 412,
  too_large: 413,
  unsupported_media: 415,
  misdirected: 421,
  upgrade_required: 426,
  too_many_requests: 429,
  checksum_mismatch: 460,
  body_aborted: 400,
  unavailable: 503,
  storage_full: 507,
};

/** Free bytes under which a disk counts as full when an untyped error hits. */
const NEARLY_FULL_BYTES = 1024 * 1024;

/** Whether the data folder's or the KV file's disk has (almost) no room left. */
async function diskNearlyFull(ctx: AppContext): Promise<boolean> {
  const paths = [ctx.config.dataDir];
  if (!isRemoteKv(ctx.config.kvPath) && ctx.config.kvPath !== ":memory:") {
    paths.push(dirname(ctx.config.kvPath));
  }
  for (const path of paths) {
    try {
      const s = await fsp.statfs(path);
      if (Number(s.bavail) * Number(s.bsize) < NEARLY_FULL_BYTES) return true;
    } catch {
      // not a local path
    }
  }
  return false;
}

/** Whether an error is the request's connection or body going away. */
function isConnectionError(err: unknown): boolean {
  return err instanceof Deno.errors.Http ||
    err instanceof Deno.errors.BadResource ||
    err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.ConnectionAborted ||
    err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.Interrupted;
}

/** Seconds a client is asked to wait while the database is unreachable. */
const DATABASE_RETRY_S = 2;

/**
 * The 503 while the shared database (a PostgreSQL KV) cannot be reached: it
 * restarts or fails over, and the next request reconnects. What was
 * acknowledged before is kept; the request itself may or may not have
 * been carried out, so a chunk is sent again with its index.
 */
function databaseUnreachable(): UnavailableError {
  return new UnavailableError(
    "The server cannot reach its database right now; the request may not have been carried out. Retry it in a few seconds (a chunk with its index is stored once).",
    DATABASE_RETRY_S,
  );
}

/** The typed error an error stands for, when one is known. */
export async function typedError(
  err: unknown,
  ctx?: AppContext,
): Promise<AppError | null> {
  const known = fromSystemError(err);
  if (known instanceof AppError) return known;
  if (err instanceof KvConnectionError) return databaseUnreachable();
  if (ctx?.state.stopping) return null;
  if (isConnectionError(err)) return new BodyAbortedError();
  if (ctx && await diskNearlyFull(ctx)) return new StorageFullError();
  return null;
}

/**
 * Maps every error to a JSON reply: typed errors by their kind; an untyped
 * one is a 503 (retry) while the server stops, a 507 when the disk is full,
 * and otherwise a logged 500.
 */
export async function errorResponse(
  err: Error,
  c: Context,
  ctx?: AppContext,
): Promise<Response> {
  const typed = await typedError(err, ctx);
  if (typed) {
    return c.json(
      { error: typed.message },
      STATUS_OF[typed.kind] as 400,
      typed.headers,
    );
  }
  if (ctx?.state.stopping) {
    return c.json(
      {
        error:
          "The server is restarting; nothing was stored. Retry in a few seconds.",
      },
      503,
      { "Retry-After": "5" },
    );
  }
  const where = `${c.req.method} ${c.req.path} failed`;
  if (ctx) ctx.log.error(where, { error: err.stack ?? String(err) });
  else console.error(`${where}:`, err);
  return c.json(
    {
      error:
        "The server hit an unexpected error; nothing was stored. Retry the request.",
    },
    500,
  );
}
