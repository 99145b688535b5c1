/**
 * Who may do what: optional API keys (API_KEYS), per-session upload tokens
 * (REQUIRE_UPLOAD_TOKEN), and the per-address rate limit on `create`.
 */

import { timingSafeEqual } from "node:crypto";
import type { Config } from "../core/config.ts";
import type { AppContext } from "../core/context.ts";
import { TooManyRequestsError, UnauthorizedError } from "../core/errors.ts";
import { getRecording } from "../recordings/ids.ts";
import { sha256, tokenMatches } from "../recordings/upload_token.ts";

/** The cookie that carries an API key for the dashboard pages. */
export const KEY_COOKIE = "tapedeck_key";

function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

function bearer(req: Request): string | undefined {
  const auth = req.headers.get("authorization") ?? "";
  const m = auth.match(/^Bearer\s+(\S+)$/i);
  return m?.[1];
}

function cookie(req: Request, name: string): string | undefined {
  for (const part of (req.headers.get("cookie") ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return undefined;
}

/** Whether API keys are configured at all. */
export function apiKeysEnabled(config: Config): boolean {
  return config.apiKeys.length > 0;
}

/** The API key a request carries: `Authorization: Bearer`, `X-API-Key` or the cookie. */
export function requestApiKey(req: Request): string | undefined {
  return req.headers.get("x-api-key") ?? bearer(req) ?? cookie(req, KEY_COOKIE);
}

/** Whether `key` is one of the configured API keys. */
export function isValidApiKey(
  config: Config,
  key: string | undefined,
): boolean {
  if (!key) return false;
  let ok = false;
  for (const k of config.apiKeys) ok = sameSecret(k, key) || ok;
  return ok;
}

/** Throws a 401 unless API keys are off or the request carries a valid one. */
export function requireApiKey(config: Config, req: Request): void {
  if (!apiKeysEnabled(config)) return;
  const key = requestApiKey(req);
  if (!isValidApiKey(config, key)) {
    throw new UnauthorizedError(
      key
        ? "The API key is not valid; check the key you were given."
        : "An API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'.",
    );
  }
}

/** The upload token a request carries: `X-Upload-Token`, `Authorization: Bearer` or `?token=`. */
export function requestUploadToken(req: Request): string | undefined {
  return req.headers.get("x-upload-token") ?? bearer(req) ??
    new URL(req.url).searchParams.get("token") ?? undefined;
}

/**
 * Throws a 401 unless upload tokens are off or the request carries the token
 * whose hash is `tokenHash` (the session's own).
 */
export function requireUploadToken(
  config: Config,
  req: Request,
  tokenHash: string | undefined,
  id: string,
): void {
  if (!config.requireUploadToken) return;
  if (!tokenMatches(requestUploadToken(req), tokenHash)) {
    throw new UnauthorizedError(
      `Recording ${id} needs its upload token (the upload_token returned by /create/) in an 'X-Upload-Token' header.`,
    );
  }
}

/** A fixed-window counter per client address, kept in this process. */
export class RateLimiter {
  #limit: number;
  #windowMs: number;
  #hits = new Map<string, { start: number; count: number }>();

  constructor(limitPerWindow: number, windowMs = 60_000) {
    this.#limit = limitPerWindow;
    this.#windowMs = windowMs;
  }

  /** Counts one request from `client`; throws a 429 with Retry-After past the limit. */
  take(client: string): void {
    if (this.#limit <= 0) return;
    const now = Date.now();
    if (this.#hits.size > 10_000) {
      for (const [k, v] of this.#hits) {
        if (now - v.start >= this.#windowMs) this.#hits.delete(k);
      }
    }
    let entry = this.#hits.get(client);
    if (!entry || now - entry.start >= this.#windowMs) {
      entry = { start: now, count: 0 };
      this.#hits.set(client, entry);
    }
    entry.count++;
    if (entry.count > this.#limit) {
      const retry = Math.ceil((entry.start + this.#windowMs - now) / 1000);
      throw new TooManyRequestsError(
        `Too many recordings created from ${client}: the limit is ${this.#limit} a minute (CREATE_RATE_PER_MINUTE). Retry in ${retry} s.`,
        retry,
      );
    }
  }
}

/** The client's address: the connection's, or X-Forwarded-For's first hop behind a trusted proxy. */
export function clientAddress(
  config: Config,
  req: Request,
  remote: string | undefined,
): string {
  if (config.trustProxy) {
    const fwd = req.headers.get("x-forwarded-for")?.split(",")[0]?.trim();
    if (fwd) return fwd.slice(0, 64);
  }
  return remote ?? "unknown";
}

/**
 * The Set-Cookie value that keeps an API key for the dashboard pages
 * (HttpOnly, SameSite=Strict), or the one that clears it when `key` is empty.
 */
export function apiKeyCookie(key: string, secure: boolean): string {
  const attrs = `Path=/; HttpOnly; SameSite=Strict${secure ? "; Secure" : ""}`;
  return key
    ? `${KEY_COOKIE}=${encodeURIComponent(key)}; Max-Age=2592000; ${attrs}`
    : `${KEY_COOKIE}=; Max-Age=0; ${attrs}`;
}

/**
 * Checks a key typed on the login page; returns its cookie or throws a 401.
 */
export function logIn(config: Config, key: string, secure: boolean): string {
  if (!isValidApiKey(config, key.trim())) {
    throw new UnauthorizedError(
      "That API key is not valid; check the key you were given.",
    );
  }
  return apiKeyCookie(key.trim(), secure);
}

/**
 * With REQUIRE_UPLOAD_TOKEN on, throws a 401 unless the request carries this
 * recording's own upload token (a 404 for an unknown id comes first).
 */
export async function authorizeUpload(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<void> {
  if (!ctx.config.requireUploadToken) return;
  const rec = await getRecording(ctx, id);
  requireUploadToken(ctx.config, req, rec.tokenHash, id);
}

/**
 * With PRIVATE_RECORDINGS on, throws a 401 unless the request carries an API
 * key or this recording's upload token; otherwise the id is the capability.
 */
export async function authorizeView(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<void> {
  if (!ctx.config.privateRecordings) return;
  if (isValidApiKey(ctx.config, requestApiKey(req))) return;
  const rec = await getRecording(ctx, id);
  if (!requestUploadToken(req)) {
    throw new UnauthorizedError(
      `Recording ${id} is private: send an API key or its upload token.`,
    );
  }
  requireUploadToken(
    { ...ctx.config, requireUploadToken: true },
    req,
    rec.tokenHash,
    id,
  );
}

/**
 * With REQUIRE_UPLOAD_TOKEN on, throws a 401 unless the request carries an
 * API key or, for each of `parts` in order, its upload token
 * (`X-Upload-Token: <t1>, <t2>, ...`): a tus final upload may only join
 * uploads its client made.
 */
export function authorizeParts(
  config: Config,
  req: Request,
  parts: { id: string; tokenHash?: string }[],
): void {
  if (!config.requireUploadToken) return;
  if (isValidApiKey(config, requestApiKey(req))) return;
  const tokens = (req.headers.get("x-upload-token") ?? "").split(",")
    .map((t) => t.trim());
  parts.forEach((part, i) => {
    if (!tokenMatches(tokens[i], part.tokenHash)) {
      throw new UnauthorizedError(
        `The final upload names upload ${part.id} without its upload token: send every part's token in order in X-Upload-Token, separated by commas.`,
      );
    }
  });
}
