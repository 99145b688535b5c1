/**
 * Typed errors thrown by `lib/`. Each carries a {@link ErrorKind} and a
 * message a person can act on; lib/http/on_error.ts maps kinds to HTTP
 * statuses. Nothing classifies an error by its message text: foreign errors
 * (the file system, KV, a request body) are turned into these where they
 * enter (see {@link fromSystemError}).
 */

/** What went wrong, independent of the protocol that reports it. */
export type ErrorKind =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "method_not_allowed"
  | "timeout"
  | "conflict"
  | "gone"
  | "precondition_failed"
  | "too_large"
  | "unsupported_media"
  | "misdirected"
  | "checksum_mismatch"
  | "upgrade_required"
  | "too_many_requests"
  | "body_aborted"
  | "storage_full"
  | "unavailable";

/** Base class: an error whose message is safe to show to the client. */
export class AppError extends Error {
  readonly kind: ErrorKind;
  /** Extra response headers (Retry-After, Allow, ...). */
  readonly headers: Record<string, string>;
  constructor(
    kind: ErrorKind,
    message: string,
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = new.target.name;
    this.kind = kind;
    this.headers = headers;
  }
}

/** The request itself is malformed (empty body, bad JSON, bad base64). */
export class BadRequestError extends AppError {
  constructor(message: string) {
    super("bad_request", message);
  }
}

/** No such recording, file or route. */
export class NotFoundError extends AppError {
  constructor(message: string) {
    super("not_found", message);
  }
}

/** The path exists but not with this method. */
export class MethodNotAllowedError extends AppError {
  constructor(method: string, allowed: string[]) {
    super(
      "method_not_allowed",
      `Method ${method} is not allowed here; use ${allowed.join(" or ")}`,
      { Allow: allowed.join(", ") },
    );
  }
}

/** The recording is in a state that does not allow this. */
export class ConflictError extends AppError {
  constructor(message: string) {
    super("conflict", message);
  }
}

/** A chunk or the whole recording is over its size limit. */
export class TooLargeError extends AppError {
  constructor(message: string) {
    super("too_large", message);
  }
}

/** The body is not a media file we accept. */
export class UnsupportedMediaError extends AppError {
  constructor(message: string) {
    super("unsupported_media", message);
  }
}

/** The storage has no room for this chunk. */
export class StorageFullError extends AppError {
  constructor(
    message =
      "The server's storage is full; the chunk was not stored. Retry it later.",
  ) {
    super("storage_full", message);
  }
}

/** A credential (API key or upload token) is missing or wrong. */
export class UnauthorizedError extends AppError {
  constructor(message: string) {
    super("unauthorized", message, {
      "WWW-Authenticate": 'Bearer realm="tapedeck"',
    });
  }
}

/** The request is understood but not allowed from where it comes. */
export class ForbiddenError extends AppError {
  constructor(message: string) {
    super("forbidden", message);
  }
}

/** The request names a host this server does not answer for (421). */
export class MisdirectedRequestError extends AppError {
  constructor(message: string) {
    super("misdirected", message);
  }
}

/** The client stopped sending (or sends too slowly). */
export class RequestTimeoutError extends AppError {
  constructor(message: string) {
    super("timeout", message, { Connection: "close" });
  }
}

/** The request body broke off before its end (the client went away). */
export class BodyAbortedError extends AppError {
  constructor(
    message =
      "The request body ended early; nothing was stored. Send it again.",
  ) {
    super("body_aborted", message);
  }
}

/** Too many requests from one client; retry after `retryAfterS`. */
export class TooManyRequestsError extends AppError {
  constructor(message: string, retryAfterS: number) {
    super("too_many_requests", message, {
      "Retry-After": String(Math.max(1, retryAfterS)),
    });
  }
}

/** The service is at a capacity limit, busy, or restarting. */
export class UnavailableError extends AppError {
  constructor(message: string, retryAfterS = 30) {
    super("unavailable", message, { "Retry-After": String(retryAfterS) });
  }
}

/** A setting is missing or invalid; raised at start-up. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/**
 * Turns an error of the operating system or of Deno KV into a typed error
 * where one applies (a full disk is a {@link StorageFullError}), by its
 * code; other errors are returned as they are.
 */
export function fromSystemError(err: unknown): unknown {
  const code = (err as { code?: string })?.code;
  if (code === "ENOSPC" || code === "EDQUOT") return new StorageFullError();
  return err;
}
