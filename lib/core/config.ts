// Over 400 lines: every setting in one place by design (house style: config in one module), each with its doc comment.
/**
 * Every setting of the service, read from environment variables in one place.
 * The README's configuration table lists the same names and defaults.
 */

import { join } from "node:path";
import { ConfigError } from "./errors.ts";
import type { LogFormat, LogLevel } from "./log.ts";

/** The service's settings after defaults are applied. */
export interface Config {
  /** TCP port the HTTP server listens on (0 picks a free one). */
  port: number;
  /** Interface the HTTP server binds to. */
  hostname: string;
  /**
   * Folder that holds chunks, finished files, scratch space and (by
   * default) the KV file; with object storage (STORAGE_URL) only scratch
   * space and the KV file.
   */
  dataDir: string;
  /**
   * Deno KV location: a file path, `:memory:`, a KV Connect URL, a
   * PostgreSQL URL (lib/kv/postgres.ts), or "" for the platform's own KV
   * (the default on Deno Deploy).
   */
  kvPath: string;
  /**
   * Whether other instances use the same KV (by default when `kvPath` is a
   * KV Connect URL): changes are then logged in KV for their dashboards,
   * and jobs another instance may hold are not taken back at start-up.
   */
  sharedKv: boolean;
  /** ffmpeg binary named by env, or undefined to search PATH then npm. */
  ffmpegPath?: string;
  /** ffprobe binary named by env, or undefined to search PATH then npm. */
  ffprobePath?: string;
  /** Largest accepted chunk in bytes (413 above it). */
  maxChunkBytes: number;
  /** Largest accepted recording in bytes (413 once it would pass it). */
  maxRecordingBytes: number;
  /** Free bytes the data disk must keep; a chunk that would go below gets 507. */
  minFreeBytes: number;
  /** Recently flushed chunk bytes left in the page cache; older ones are dropped from it. */
  ingestCacheBytes: number;
  /** Allowed CORS origins; `["*"]` allows any. */
  corsOrigins: string[];
  /** Whether this process runs the processing worker. */
  runWorker: boolean;
  /** How many recordings one worker processes at once. */
  jobConcurrency: number;
  /** Attempts before a job is marked failed. */
  jobMaxAttempts: number;
  /** How long a worker's claim on a job lasts without renewal, in ms. */
  jobLeaseMs: number;
  /** First retry delay in ms; doubles per attempt. */
  jobBackoffMs: number;
  /**
   * A single ffmpeg run is killed after this many ms plus
   * {@link ffmpegTimeoutPerSecondMs} per second of recording.
   */
  ffmpegTimeoutMs: number;
  /** Time an ffmpeg run is given per second of recording, in ms. */
  ffmpegTimeoutPerSecondMs: number;
  /** Address-space limit (RLIMIT_AS) of every ffmpeg and ffprobe run, in bytes; 0 none. */
  ffmpegMaxMemoryBytes: number;
  /** Largest picture (width x height) processed; decoders refuse larger ones. */
  maxVideoPixels: number;
  /** Most pixels per second of recording that a re-encode may have to make. */
  maxVideoPixelRate: number;
  /** Most pixels (width x height x frames) one re-encode may have to make. */
  maxEncodePixels: number;
  /** `nice` level of ffmpeg runs (0 to 19), so ingest keeps the CPU. */
  ffmpegNice: number;
  // Live encodes (issue 15: lib/live_encode/).
  /**
   * Recordings one worker encodes to H.264 while they are being recorded
   * (those whose MP4 needs a re-encode); 0 turns live encodes off.
   */
  liveEncodeSlots: number;
  /**
   * A live encode whose encoded media time lags the media time received by
   * more than this many seconds is "behind": it is stopped and the job
   * encodes the recording as without one.
   */
  liveEncodeMaxLagS: number;
  /** A finished recording's live files (HLS) are removed this many seconds after it finished. */
  liveFilesKeepS: number;
  /** A request body that sends nothing for this long is abandoned (408). */
  bodyIdleTimeoutMs: number;
  /** Most recordings in status `recording` at once (503 at create above). */
  maxOpenRecordings: number;
  /** `create` calls allowed per client address per minute; 0 turns it off. */
  createRatePerMinute: number;
  /** Take the client address from X-Forwarded-For (behind a proxy). */
  trustProxy: boolean;
  /** A recording with no chunk for this many seconds is finalized or removed; 0 never. */
  recordingIdleTimeoutS: number;
  /** Finished recordings are deleted after this many days; 0 keeps them. */
  retentionDays: number;
  /** API keys; when any is set, `create` and the dashboard need one. */
  apiKeys: string[];
  /** Whether `add_data` and `complete_job` need the session's upload token. */
  requireUploadToken: boolean;
  /** Whether a single recording's page and files also need an API key. */
  privateRecordings: boolean;
  /**
   * Origins whose pages may show `/embed/<id>` in a frame (its CSP
   * `frame-ancestors`); empty: none, `["*"]`: any.
   */
  embedOrigins: string[];
  /**
   * After complete_job, chunks whose request arrives within this many ms
   * are still taken (and processing waits for them) unless the client said
   * which chunk was its last.
   */
  completeGraceMs: number;
  /** Most chunks one recording may hold (413 past it). */
  maxChunksPerRecording: number;
  /** Chunks smaller than this count against {@link SMALL_CHUNKS_ALLOWED}. */
  minChunkBytes: number;
  // Access and exposure (issue 12: lib/http/host_check.ts, slow_guard.ts,
  // access.ts, lib/live/socket.ts).
  /**
   * Host names requests may be addressed to, besides the built-in safe ones
   * (loopback names, IP literals, names without a dot, this machine's
   * name); `["*"]` accepts any Host. Entries may start with `*.` or `.`.
   */
  allowedHosts: string[];
  /** Longest a connection may take to send a request head (and stay idle); 0 turns the guard off. */
  headerTimeoutMs: number;
  /** Least average request body rate over {@link bodyRateWindowMs}; 0 turns it off. */
  bodyMinBytesPerS: number;
  /** The window the body rate is averaged over, in ms. */
  bodyRateWindowMs: number;
  /** Longest a whole request body may take, in ms; 0 for no limit. */
  bodyTimeoutMs: number;
  /** Live sockets (`/ws`) open at once per client address. */
  wsMaxPerClient: number;
  /** Live sockets open at once in this process. */
  wsMaxTotal: number;
  /** Secret that signs login sessions; when unset one is made once and kept in KV. */
  sessionSecret?: string;
  /** How long a login session lasts, in seconds. */
  sessionTtlS: number;
  /** Log lines as text or one JSON object per line. */
  logFormat: LogFormat;
  /** The least important lines written. */
  logLevel: LogLevel;
  // Webhooks and observability (issue 17: lib/webhooks/, lib/ops/).
  /** Where webhook events are POSTed (WEBHOOK_URLS); none turns webhooks off. */
  webhookUrls: string[];
  /** Secret of the webhook signatures (HMAC-SHA256); unset sends them unsigned. */
  webhookSecret?: string;
  /** A delivery attempt without a 2xx answer within this many ms has failed. */
  webhookTimeoutMs: number;
  /** Wait after the first failed attempt, in ms; doubled per attempt, at most an hour. */
  webhookBackoffMs: number;
  /** How long a delivery is retried, in seconds (from its event or last replay). */
  webhookRetryS: number;
  /** Delivery attempts in flight at once. */
  webhookConcurrency: number;
  /** The delivering instance's lease lapses after this without renewal, in ms. */
  webhookLeaseMs: number;
  /** This server's public base URL, for absolute URLs in webhook payloads. */
  publicUrl?: string;
  // Object storage (issue 14: lib/storage/open.ts picks the backend).
  /** Where chunks and finished files live (STORAGE_URL). */
  storage: StorageConfig;
  /** Whether `/media` redirects to a presigned URL (object storage only). */
  mediaRedirect: boolean;
  /** How long a presigned `/media` URL is valid, in seconds. */
  mediaRedirectTtlS: number;
}

/** The storage backend: local disk, or an S3 bucket. */
export type StorageConfig =
  | {
    kind: "local";
    /** Folder of chunks, finished files and work folders. */
    dir: string;
  }
  | {
    kind: "s3";
    bucket: string;
    /** Key prefix, "" or ending with "/". */
    prefix: string;
    /** Base URL of the S3 API. */
    endpoint: string;
    region: string;
    accessKeyId: string;
    secretAccessKey: string;
    sessionToken?: string;
    /** `endpoint/bucket/key` rather than `bucket.endpoint/key`. */
    forcePathStyle: boolean;
    /** A try without progress for this long is given up (then retried). */
    timeoutMs: number;
  };

type Env = Record<string, string | undefined>;

function readInt(env: Env, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(
      `${name} must be a whole number of at least ${min}, got "${raw}"`,
    );
  }
  return value;
}

function readBool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function readChoice<T extends string>(
  env: Env,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const raw = (env[name] ?? "").trim().toLowerCase();
  if (raw === "") return fallback;
  if (!choices.includes(raw as T)) {
    throw new ConfigError(
      `${name} must be one of ${choices.join(", ")}, got "${env[name]}"`,
    );
  }
  return raw as T;
}

/** A comma-separated list of http(s) URLs. */
function readUrlList(env: Env, name: string): string[] {
  const urls = (env[name] || "").split(",").map((s) => s.trim())
    .filter(Boolean);
  for (const url of urls) {
    let ok = false;
    try {
      ok = /^https?:$/.test(new URL(url).protocol);
    } catch {
      ok = false;
    }
    if (!ok) {
      throw new ConfigError(
        `${name} must list http:// or https:// URLs separated by commas, got "${url}"`,
      );
    }
  }
  return urls;
}

const MIB = 1024 * 1024;

/**
 * A comma-separated list of origins (`https://example.com`,
 * `http://localhost:3000`) or `*`; anything else is a ConfigError.
 */
function readOrigins(env: Env, name: string): string[] {
  const items = (env[name] ?? "").split(",").map((s) => s.trim())
    .filter(Boolean);
  for (const item of items) {
    if (item === "*") continue;
    let origin = "";
    try {
      origin = new URL(item).origin;
    } catch {
      // reported below
    }
    if (origin === "null" || origin !== item.replace(/\/$/, "")) {
      throw new ConfigError(
        `${name} must list origins such as https://example.com (scheme, host and port only) or *, got "${item}"`,
      );
    }
  }
  return items.map((i) => i.replace(/\/$/, ""));
}

/** Whether a KV location is a remote one (KV Connect or PostgreSQL URL). */
export function isRemoteKv(kvPath: string): boolean {
  return /^(https?|postgres(ql)?):\/\//i.test(kvPath);
}

/**
 * How many chunks under MIN_CHUNK_BYTES a recording may hold: a browser's
 * first blob can be a single byte, and the last one of a stop tiny.
 */
export const SMALL_CHUNKS_ALLOWED = 64;

/**
 * LIVE_ENCODE_SLOTS by default: one live encode per two cores (1 on 2
 * cores, 0 on one), so the encodes, at the lowest CPU priority, leave
 * ingest a core.
 */
export function defaultLiveSlots(
  cores: number = navigator.hardwareConcurrency ?? 1,
): number {
  return Math.floor(Math.max(1, cores) / 2);
}

/** Builds the config from an environment (by default the process's own). */
export function loadConfig(env: Env = Deno.env.toObject()): Config {
  const dataDir = env.DATA_DIR || "./data";
  // On Deno Deploy the app's own KV (opened with no path) is the default.
  const onDeploy = !!env.DENO_DEPLOYMENT_ID;
  const kvPath = env.KV_PATH ?? (onDeploy ? "" : join(dataDir, "tapedeck.kv"));
  return {
    port: readInt(env, "PORT", 8000),
    hostname: env.HOSTNAME || "0.0.0.0",
    dataDir,
    kvPath,
    sharedKv: readBool(env, "SHARED_KV", isRemoteKv(kvPath) || kvPath === ""),
    ffmpegPath: env.FFMPEG_PATH || undefined,
    ffprobePath: env.FFPROBE_PATH || undefined,
    maxChunkBytes: readInt(env, "MAX_CHUNK_BYTES", 64 * MIB, 1),
    maxRecordingBytes: readInt(env, "MAX_RECORDING_BYTES", 8192 * MIB, 1),
    minFreeBytes: readInt(env, "MIN_FREE_BYTES", 256 * MIB),
    ingestCacheBytes: readInt(env, "INGEST_CACHE_BYTES", 1024 * MIB),
    corsOrigins: (env.CORS_ORIGINS || "*").split(",").map((s) => s.trim())
      .filter(Boolean),
    runWorker: readBool(env, "RUN_WORKER", true),
    jobConcurrency: readInt(env, "JOB_CONCURRENCY", 1, 1),
    jobMaxAttempts: readInt(env, "JOB_MAX_ATTEMPTS", 3, 1),
    jobLeaseMs: readInt(env, "JOB_LEASE_MS", 30_000, 1000),
    jobBackoffMs: readInt(env, "JOB_BACKOFF_MS", 2_000, 0),
    // Processing limits (lib/processing/limits.ts).
    ffmpegTimeoutMs: readInt(env, "FFMPEG_TIMEOUT_MS", 10 * 60_000, 1000),
    ffmpegTimeoutPerSecondMs: readInt(
      env,
      "FFMPEG_TIMEOUT_PER_SECOND_MS",
      5000,
    ),
    ffmpegMaxMemoryBytes: readInt(env, "FFMPEG_MAX_MEMORY_BYTES", 8192 * MIB),
    maxVideoPixels: readInt(env, "MAX_VIDEO_PIXELS", 7680 * 4320, 1),
    maxVideoPixelRate: readInt(
      env,
      "MAX_VIDEO_PIXEL_RATE",
      3840 * 2160 * 60,
      1,
    ),
    maxEncodePixels: readInt(env, "MAX_ENCODE_PIXELS", 1e12, 1),
    ffmpegNice: Math.min(19, readInt(env, "FFMPEG_NICE", 19)),
    // Live encodes (issue 15).
    liveEncodeSlots: readInt(env, "LIVE_ENCODE_SLOTS", defaultLiveSlots()),
    liveEncodeMaxLagS: readInt(env, "LIVE_ENCODE_MAX_LAG_S", 30, 1),
    liveFilesKeepS: readInt(env, "LIVE_FILES_KEEP_S", 300),
    bodyIdleTimeoutMs: readInt(env, "BODY_IDLE_TIMEOUT_MS", 30_000, 100),
    maxOpenRecordings: readInt(env, "MAX_OPEN_RECORDINGS", 1000, 1),
    createRatePerMinute: readInt(env, "CREATE_RATE_PER_MINUTE", 60),
    trustProxy: readBool(env, "TRUST_PROXY", false),
    recordingIdleTimeoutS: readInt(env, "RECORDING_IDLE_TIMEOUT_S", 3600),
    retentionDays: readInt(env, "RETENTION_DAYS", 0),
    apiKeys: (env.API_KEYS || "").split(",").map((s) => s.trim())
      .filter(Boolean),
    requireUploadToken: readBool(env, "REQUIRE_UPLOAD_TOKEN", false),
    privateRecordings: readBool(env, "PRIVATE_RECORDINGS", false),
    embedOrigins: readOrigins(env, "EMBED_ORIGINS"),
    completeGraceMs: readInt(env, "COMPLETE_GRACE_MS", 1000),
    maxChunksPerRecording: readInt(env, "MAX_CHUNKS_PER_RECORDING", 200_000, 1),
    minChunkBytes: readInt(env, "MIN_CHUNK_BYTES", 256),
    // Access and exposure (issue 12).
    allowedHosts: (env.ALLOWED_HOSTS || "").split(",").map((s) =>
      s.trim().toLowerCase()
    ).filter(Boolean),
    headerTimeoutMs: readInt(env, "HEADER_TIMEOUT_MS", 20_000),
    bodyMinBytesPerS: readInt(env, "BODY_MIN_BYTES_PER_S", 1024),
    bodyRateWindowMs: readInt(env, "BODY_RATE_WINDOW_MS", 30_000, 100),
    bodyTimeoutMs: readInt(env, "BODY_TIMEOUT_MS", 0),
    wsMaxPerClient: readInt(env, "WS_MAX_PER_CLIENT", 20, 1),
    wsMaxTotal: readInt(env, "WS_MAX_TOTAL", 500, 1),
    sessionSecret: env.SESSION_SECRET || undefined,
    sessionTtlS: readInt(env, "SESSION_TTL_S", 7 * 24 * 3600, 60),
    logFormat: readChoice(env, "LOG_FORMAT", ["text", "json"], "text"),
    logLevel: readChoice(
      env,
      "LOG_LEVEL",
      ["debug", "info", "warn", "error"],
      "info",
    ),
    // Webhooks and observability (issue 17).
    webhookUrls: readUrlList(env, "WEBHOOK_URLS"),
    webhookSecret: env.WEBHOOK_SECRET || undefined,
    webhookTimeoutMs: readInt(env, "WEBHOOK_TIMEOUT_MS", 10_000, 100),
    webhookBackoffMs: readInt(env, "WEBHOOK_BACKOFF_MS", 10_000, 10),
    webhookRetryS: readInt(env, "WEBHOOK_RETRY_S", 86_400, 1),
    webhookConcurrency: readInt(env, "WEBHOOK_CONCURRENCY", 8, 1),
    webhookLeaseMs: readInt(env, "WEBHOOK_LEASE_MS", 30_000, 1000),
    publicUrl: readUrlList(env, "PUBLIC_URL")[0],
    // Object storage (issue 14).
    storage: readStorage(env, dataDir),
    mediaRedirect: readBool(env, "MEDIA_REDIRECT", false),
    mediaRedirectTtlS: Math.min(
      604_800,
      readInt(env, "MEDIA_REDIRECT_TTL_S", 3600, 60),
    ),
  };
}

/**
 * STORAGE_URL: empty (local disk under DATA_DIR), `file://<folder>`, or
 * `s3://<bucket>/<prefix>` with the endpoint, region and credentials from
 * the usual AWS variables.
 */
function readStorage(env: Env, dataDir: string): StorageConfig {
  const raw = (env.STORAGE_URL ?? "").trim();
  if (raw === "") return { kind: "local", dir: dataDir };
  if (/^file:\/\//i.test(raw)) {
    const dir = decodeURIComponent(raw.slice("file://".length));
    if (dir === "") throw new ConfigError("STORAGE_URL=file:// needs a folder");
    return { kind: "local", dir };
  }
  const m = /^s3:\/\/([^/]+)(\/.*)?$/i.exec(raw);
  if (!m) {
    throw new ConfigError(
      `STORAGE_URL must be file://<folder> or s3://<bucket>/<prefix>, got "${raw}"`,
    );
  }
  const accessKeyId = env.AWS_ACCESS_KEY_ID ?? "";
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY ?? "";
  if (!accessKeyId || !secretAccessKey) {
    throw new ConfigError(
      "STORAGE_URL=s3://... needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
  }
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || "us-east-1";
  const endpoint = env.S3_ENDPOINT || env.AWS_ENDPOINT_URL || "";
  const path = (m[2] ?? "").replace(/^\/+|\/+$/g, "");
  return {
    kind: "s3",
    bucket: m[1],
    prefix: path ? `${path}/` : "",
    endpoint: endpoint || `https://s3.${region}.amazonaws.com`,
    region,
    accessKeyId,
    secretAccessKey,
    sessionToken: env.AWS_SESSION_TOKEN || undefined,
    forcePathStyle: readBool(env, "S3_FORCE_PATH_STYLE", endpoint !== ""),
    timeoutMs: readInt(env, "S3_TIMEOUT_MS", 30_000, 100),
  };
}
