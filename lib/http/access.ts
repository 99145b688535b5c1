/**
 * Who may do what: optional API keys (API_KEYS) and the login sessions that
 * stand for them on the pages, per-session upload tokens
 * (REQUIRE_UPLOAD_TOKEN), who may delete a recording, and the per-address
 * rate limit on `create`.
 */

import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Config } from "../core/config.ts";
import type { AppContext } from "../core/context.ts";
import { TooManyRequestsError, UnauthorizedError } from "../core/errors.ts";
import { settingKey } from "../kv/keys.ts";
import { getRecording } from "../recordings/ids.ts";
import { sha256, tokenMatches } from "../recordings/upload_token.ts";

/**
 * The cookie that carries a login session for the pages (set by `/login`):
 * a signed value naming a hash of the API key used and an expiry, never the
 * key itself.
 */
export const KEY_COOKIE = "tapedeck_key";

function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

function bearer(req: Request): string | undefined {
  const auth = req.headers.get("authorization") ?? "";
  const m = auth.match(/^Bearer\s+(\S+)$/i);
  return m?.[1];
}

/**
 * A cookie's value: undefined when absent, null when it is not valid
 * percent-encoding (a malformed cookie is an invalid credential, not a
 * server error).
 */
function cookie(req: Request, name: string): string | null | undefined {
  for (const part of (req.headers.get("cookie") ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    try {
      return decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return null;
    }
  }
  return undefined;
}

// ------------------------------------------------------------ sessions

/** The KV key of the generated session secret (when SESSION_SECRET is unset). */
const SESSION_SECRET_KEY = settingKey("session_secret");

/** Session secrets by the config they were loaded for. */
const sessionSecrets = new WeakMap<Config, Uint8Array>();

/**
 * Makes the secret that signs login sessions available for `ctx.config`:
 * SESSION_SECRET when set, else one made once and kept in KV (so every
 * instance on that KV shares it).
 */
export async function loadSessionSecret(ctx: AppContext): Promise<void> {
  if (sessionSecrets.has(ctx.config)) return;
  if (ctx.config.sessionSecret) {
    sessionSecrets.set(
      ctx.config,
      new TextEncoder().encode(ctx.config.sessionSecret),
    );
    return;
  }
  let secret = (await ctx.kv.get<Uint8Array>(SESSION_SECRET_KEY)).value;
  if (!secret) {
    const made = crypto.getRandomValues(new Uint8Array(32));
    const res = await ctx.kv.atomic()
      .check({ key: SESSION_SECRET_KEY, versionstamp: null })
      .set(SESSION_SECRET_KEY, made)
      .commit();
    secret = res.ok
      ? made
      : (await ctx.kv.get<Uint8Array>(SESSION_SECRET_KEY)).value;
  }
  if (secret) sessionSecrets.set(ctx.config, secret);
}

function hmac(secret: Uint8Array, text: string): string {
  return createHmac("sha256", secret).update(text).digest("base64url");
}

/** The tag that binds a session to the API key it was made with. */
function keyTag(secret: Uint8Array, key: string): string {
  return hmac(secret, `key:${key}`).slice(0, 22);
}

/** A signed session value for `key`: `v1.<key tag>.<expiry s>.<mac>`. */
function sessionValue(config: Config, key: string): string {
  const secret = sessionSecrets.get(config);
  if (!secret) {
    throw new Error("the session secret is not loaded (loadSessionSecret)");
  }
  const expires = Math.floor(Date.now() / 1000) + config.sessionTtlS;
  const body = `v1.${keyTag(secret, key)}.${expires}`;
  return `${body}.${hmac(secret, body)}`;
}

/**
 * Whether `value` is a session this server signed, not expired, made with
 * an API key that is still configured.
 */
function validSession(config: Config, value: string): boolean {
  const secret = sessionSecrets.get(config);
  const parts = value.split(".");
  if (!secret || parts.length !== 4 || parts[0] !== "v1") return false;
  const [, tag, expires, mac] = parts;
  const want = Buffer.from(hmac(secret, `v1.${tag}.${expires}`));
  const got = Buffer.from(mac);
  if (got.length !== want.length || !timingSafeEqual(got, want)) return false;
  if (!(Number(expires) * 1000 > Date.now())) return false;
  return config.apiKeys.some((k) => keyTag(secret, k) === tag);
}

/**
 * Whether the request came over HTTPS: its own URL, or (TRUST_PROXY) the
 * proxy's `X-Forwarded-Proto`.
 */
export function requestIsHttps(config: Config, req: Request): boolean {
  if (new URL(req.url).protocol === "https:") return true;
  if (!config.trustProxy) return false;
  const proto = req.headers.get("x-forwarded-proto")?.split(",")[0]?.trim();
  return proto?.toLowerCase() === "https";
}

/**
 * The Set-Cookie value of a login session for `key` (HttpOnly,
 * SameSite=Strict, Secure over HTTPS), or the one that clears it when `key`
 * is empty.
 */
export function sessionCookie(
  config: Config,
  key: string,
  req: Request,
): string {
  const secure = requestIsHttps(config, req) ? "; Secure" : "";
  const attrs = `Path=/; HttpOnly; SameSite=Strict${secure}`;
  return key
    ? `${KEY_COOKIE}=${
      sessionValue(config, key)
    }; Max-Age=${config.sessionTtlS}; ${attrs}`
    : `${KEY_COOKIE}=; Max-Age=0; ${attrs}`;
}

/**
 * Checks a key typed on the login page; returns its session cookie or
 * throws a 401.
 */
export function logIn(config: Config, key: string, req: Request): string {
  if (!isValidApiKey(config, key.trim())) {
    throw new UnauthorizedError(
      "That API key is not valid; check the key you were given.",
    );
  }
  return sessionCookie(config, key.trim(), req);
}

/**
 * Whether a request's `Origin` (when it has one) is this server's own: the
 * pages' forms and sockets come from there.
 */
export function isSameOrigin(req: Request): boolean {
  const origin = req.headers.get("origin");
  if (!origin) return true;
  try {
    return new URL(origin).host === req.headers.get("host");
  } catch {
    return false;
  }
}

/** Whether API keys are configured at all. */
export function apiKeysEnabled(config: Config): boolean {
  return config.apiKeys.length > 0;
}

/** The API key a request carries in a header: `X-API-Key` or `Authorization: Bearer`. */
export function requestApiKey(req: Request): string | undefined {
  return req.headers.get("x-api-key") ?? bearer(req);
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

/** What a request's credential for API keys is: a valid one, a wrong one, or none. */
function apiKeyState(
  config: Config,
  req: Request,
): "valid" | "invalid" | "cookie" | "none" {
  const key = requestApiKey(req);
  if (isValidApiKey(config, key)) return "valid";
  const session = cookie(req, KEY_COOKIE);
  if (session && validSession(config, session)) return "valid";
  if (key) return "invalid";
  return session === undefined || session === "" ? "none" : "cookie";
}

/**
 * Whether the request carries a valid API key (header) or a valid login
 * session (cookie).
 */
export function hasApiKey(config: Config, req: Request): boolean {
  return apiKeysEnabled(config) && apiKeyState(config, req) === "valid";
}

/** Throws a 401 unless API keys are off or the request carries a valid key or session. */
export function requireApiKey(config: Config, req: Request): void {
  if (!apiKeysEnabled(config)) return;
  const state = apiKeyState(config, req);
  if (state === "valid") return;
  throw new UnauthorizedError(
    state === "invalid"
      ? "The API key is not valid; check the key you were given."
      : state === "cookie"
      ? "The login cookie is not valid (malformed, expired, or made with a key that is no longer accepted); log in again at /login."
      : "An API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'.",
  );
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
  if (hasApiKey(ctx.config, req)) return;
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
  if (hasApiKey(config, req)) return;
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

/**
 * Who may delete a recording (tus `DELETE`, and any delete endpoint):
 * - a request with a valid API key (or login session), or with the
 *   recording's own upload token, may delete any recording;
 * - without either, only a tus upload still recording may be deleted, and
 *   only while its id is its capability: REQUIRE_UPLOAD_TOKEN and
 *   PRIVATE_RECORDINGS both off (its client may abandon it, as it may add
 *   to it).
 * Everything else (a finished recording, one made with `/create/`) gets a
 * 401; an unknown id a 404 first.
 */
export async function authorizeDelete(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<void> {
  const rec = await getRecording(ctx, id);
  if (hasApiKey(ctx.config, req)) return;
  if (tokenMatches(requestUploadToken(req), rec.tokenHash)) return;
  const idIsCapability = !ctx.config.requireUploadToken &&
    !ctx.config.privateRecordings;
  if (idIsCapability && rec.protocol === "tus" && rec.status === "recording") {
    return;
  }
  throw new UnauthorizedError(
    `Deleting recording ${id} needs its upload token (the upload_token or X-Upload-Token returned when it was created, in an 'X-Upload-Token' header) or an API key.`,
  );
}
