/**
 * Typed errors thrown by `lib/`. Each carries the HTTP status it maps to and a
 * message a person can act on; `app.onError` turns them into JSON replies.
 */

/** Base class: an error whose message is safe to show to the client. */
export class AppError extends Error {
  readonly status: number;
  readonly headers: Record<string, string>;
  constructor(
    status: number,
    message: string,
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.headers = headers;
  }
}

/** 400: the request itself is malformed (empty body, bad JSON, bad base64). */
export class BadRequestError extends AppError {
  constructor(message: string) {
    super(400, message);
  }
}

/** 404: no such recording, file or route. */
export class NotFoundError extends AppError {
  constructor(message: string) {
    super(404, message);
  }
}

/** 405: the path exists but not with this method. */
export class MethodNotAllowedError extends AppError {
  constructor(method: string, allowed: string[]) {
    super(
      405,
      `Method ${method} is not allowed here; use ${allowed.join(" or ")}`,
      { Allow: allowed.join(", ") },
    );
  }
}

/** 409: the recording is in a state that does not allow this. */
export class ConflictError extends AppError {
  constructor(message: string) {
    super(409, message);
  }
}

/** 413: a chunk or the whole recording is over its size limit. */
export class TooLargeError extends AppError {
  constructor(message: string) {
    super(413, message);
  }
}

/** 415: the body is not a media file we accept. */
export class UnsupportedMediaError extends AppError {
  constructor(message: string) {
    super(415, message);
  }
}

/** 507: the data disk has no room for this chunk. */
export class StorageFullError extends AppError {
  constructor(message: string) {
    super(507, message);
  }
}

/** 401: a credential (API key or upload token) is missing or wrong. */
export class UnauthorizedError extends AppError {
  constructor(message: string) {
    super(401, message, { "WWW-Authenticate": 'Bearer realm="tapedeck"' });
  }
}

/** 408: the client stopped sending the body. */
export class RequestTimeoutError extends AppError {
  constructor(message: string) {
    super(408, message, { Connection: "close" });
  }
}

/** 429: too many requests from one client; retry after `retryAfterS`. */
export class TooManyRequestsError extends AppError {
  constructor(message: string, retryAfterS: number) {
    super(429, message, { "Retry-After": String(Math.max(1, retryAfterS)) });
  }
}

/** 503: the service is at a configured capacity limit. */
export class UnavailableError extends AppError {
  constructor(message: string, retryAfterS = 30) {
    super(503, message, { "Retry-After": String(retryAfterS) });
  }
}

/** A setting is missing or invalid; raised at start-up. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}
