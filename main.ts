/**
 * tapedeck: builds the HTTP app and, when run directly, serves it.
 */

import { Hono } from "hono";
import { cors } from "hono/cors";
import { methodOverride } from "hono/method-override";
import { secureHeaders } from "hono/secure-headers";
import { type Config, loadConfig } from "./lib/core/config.ts";
import {
  type AppContext,
  closeContext,
  openContext,
  type OpenOptions,
} from "./lib/core/context.ts";
import { ConfigError } from "./lib/core/errors.ts";
import { everyMinute } from "./lib/core/every_minute.ts";
import { apiKeysEnabled, loadSessionSecret } from "./lib/http/access.ts";
import { hostCheck } from "./lib/http/host_check.ts";
import { errorResponse } from "./lib/http/on_error.ts";
import { requestLog } from "./lib/http/request_log.ts";
import { requestMetrics } from "./lib/http/request_metrics.ts";
import { serveGuarded } from "./lib/http/slow_guard.ts";
import {
  describeTools,
  type FfmpegTools,
  resolveTools,
  toolsNotLookedFor,
} from "./lib/processing/ffmpeg.ts";
import { JobWorker } from "./lib/jobs/worker.ts";
import { reportAlive } from "./lib/ops/health.ts";
import {
  startWebhookWorker,
  type WebhookWorker,
} from "./lib/webhooks/worker.ts";
import { describeKvPath } from "./lib/kv/open.ts";
import { startLiveFeed } from "./lib/live/feed.ts";
import { runSweep } from "./lib/recordings/maintenance.ts";
import { canDropPages } from "./lib/storage/page_cache.ts";
import { apiRoutes } from "./routes/api.ts";
import { embedRoutes } from "./routes/embed.tsx";
import { libraryRoutes } from "./routes/library.ts";
import { liveRoutes } from "./routes/live.ts";
import { mediaRoutes } from "./routes/media.ts";
import { openApiRoutes } from "./routes/openapi.ts";
import { pageRoutes } from "./routes/pages.tsx";
import { sdkRoutes } from "./routes/sdk.ts";
import { tusMiddleware, tusRoutes } from "./routes/tus.ts";
import { opsRoutes } from "./routes/ops.ts";
import { webhookRoutes } from "./routes/webhooks.ts";

/**
 * The API routes: they answer CORS (CORS_ORIGINS, by default any origin),
 * since recorders run on other origins. Pages, media and live sockets do
 * not (see {@link MEDIA_PATHS}).
 */
const API_PATHS = [
  "/create/*",
  "/add_data/*",
  "/complete_job/*",
  "/check_status/*",
  "/video/*",
  "/retry_job/*",
  "/chunks/*",
  "/files/*",
  "/api/*",
];

/** Media files answer CORS only for origins CORS_ORIGINS names (not `*`). */
const MEDIA_PATHS = ["/media/*"];

const CORS_OPTIONS = {
  allowMethods: ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
  exposeHeaders: [
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Retry-After",
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "X-Upload-Token",
    "X-Video-Id",
    "X-Settled-Length",
  ],
  maxAge: 600,
};

function corsOrigin(allowed: string[]) {
  if (allowed.includes("*")) return "*";
  return (origin: string) => (allowed.includes(origin) ? origin : null);
}

/** Builds the app for one instance's services. */
export function createApp(ctx: AppContext): Hono {
  const app = new Hono({ strict: false });
  app.use("*", requestLog(ctx.log));
  app.use("*", requestMetrics(ctx));
  app.use("*", hostCheck(ctx.config));
  if (apiKeysEnabled(ctx.config)) {
    // Login sessions are checked with a secret kept in KV.
    const secret = loadSessionSecret(ctx).catch((err) =>
      ctx.log.error("login sessions are unavailable", { error: String(err) })
    );
    app.use("*", async (_c, next) => {
      await secret;
      await next();
    });
  }
  app.use(
    "*",
    secureHeaders({
      // Recordings are played from other sites' <video> elements.
      crossOriginResourcePolicy: false,
      crossOriginOpenerPolicy: false,
      // Whether HTTPS is used is the reverse proxy's business.
      strictTransportSecurity: false,
      overwrite: false,
    }),
  );
  app.use(
    "/files/*",
    methodOverride({ app, header: "X-HTTP-Method-Override" }),
  );
  app.use("/files", tusMiddleware(ctx));
  app.use("/files/*", tusMiddleware(ctx));
  const apiCors = cors({
    origin: corsOrigin(ctx.config.corsOrigins),
    ...CORS_OPTIONS,
  });
  for (const path of API_PATHS) app.use(path, apiCors);
  const named = ctx.config.corsOrigins.filter((o) => o !== "*");
  if (named.length > 0) {
    const mediaCors = cors({ origin: corsOrigin(named), ...CORS_OPTIONS });
    for (const path of MEDIA_PATHS) app.use(path, mediaCors);
  }
  app.route("/", opsRoutes(ctx));
  app.route("/", apiRoutes(ctx));
  app.route("/", webhookRoutes(ctx));
  app.route("/", libraryRoutes(ctx));
  app.route("/", embedRoutes(ctx));
  app.route("/", mediaRoutes(ctx));
  app.route("/", tusRoutes(ctx));
  app.route("/", liveRoutes(ctx));
  app.route("/", openApiRoutes());
  app.route("/", sdkRoutes());
  app.route("/", pageRoutes(ctx));
  app.notFound((c) =>
    c.json(
      {
        error:
          `There is nothing at ${c.req.method} ${c.req.path}; see the README for the API.`,
      },
      404,
    )
  );
  app.onError((err, c) => errorResponse(err, c, ctx));
  return app;
}

/** A running instance: its services, app and (optionally) worker. */
export interface Service {
  ctx: AppContext;
  app: Hono;
  tools: FfmpegTools;
  worker?: JobWorker;
  /** The webhook delivery worker, when WEBHOOK_URLS is set. */
  webhooks?: WebhookWorker;
  /** Stops the worker and closes KV. */
  close(): Promise<void>;
}

/**
 * Opens KV and storage, finds ffmpeg, and starts the worker if configured.
 * `options.sameProcess` is for tests that run several instances in one
 * process (see {@link OpenOptions}); the service never sets it.
 */
export async function startService(
  config: Config,
  options: OpenOptions = {},
): Promise<Service> {
  // An instance without a worker never looks for ffmpeg (no PATH search,
  // no npm download, no subprocess): on Deno Deploy it is not guaranteed.
  const tools = config.runWorker
    ? await resolveTools(config.ffmpegPath, config.ffprobePath, {
      nice: config.ffmpegNice,
      maxMemoryBytes: config.ffmpegMaxMemoryBytes,
    })
    : toolsNotLookedFor();
  const ctx = await openContext(config, options);
  await runSweep(ctx, { orphans: !config.sharedKv, startup: true });
  const app = createApp(ctx);
  const stopFeed = startLiveFeed(ctx);
  let worker: JobWorker | undefined;
  if (config.runWorker) {
    worker = new JobWorker(ctx, tools);
    ctx.jobs = worker;
    await worker.start();
    const jobs = worker;
    reportAlive(ctx, "jobs", () => jobs.alive);
  }
  const webhooks = await startWebhookWorker(ctx);
  return {
    ctx,
    app,
    tools,
    worker,
    webhooks,
    async close() {
      await webhooks?.stop();
      await worker?.stop();
      await stopFeed();
      await closeContext(ctx);
    },
  };
}

/** Says at start-up which Host names the server answers for. */
export function describeHosts(config: Config): string {
  return config.allowedHosts.includes("*")
    ? "hosts: any Host header is answered (ALLOWED_HOSTS=*): no DNS-rebinding guard"
    : `hosts: answers IP addresses, localhost, names without a dot, this machine's name${
      config.allowedHosts.length ? ` and ${config.allowedHosts.join(", ")}` : ""
    } (ALLOWED_HOSTS); other Host headers get 421`;
}

/** Says at start-up whether ingest lets go of the page cache. */
export function describePageCache(config: Config): string {
  if (config.storage.kind !== "local") {
    return "page cache: not involved (recordings go to object storage; DATA_DIR holds scratch space only)";
  }
  return canDropPages()
    ? `page cache: flushed chunk bytes past the newest ${
      Math.round(config.ingestCacheBytes / 2 ** 20)
    } MiB are dropped from it (INGEST_CACHE_BYTES)`
    : "page cache: left to the kernel (posix_fadvise needs Linux and --allow-ffi)";
}

/** How long requests in flight get to finish after SIGINT or SIGTERM, in ms. */
export const STOP_DRAIN_MS = 3_500;

/**
 * The process exits this long after SIGINT or SIGTERM at the latest, in ms:
 * Deno Deploy kills an instance 5 s after its SIGINT.
 */
export const STOP_EXIT_MS = 4_500;

/** Ends the process with the message of a setting that cannot work. */
function exitOnConfigError(err: unknown): never {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`tapedeck cannot start: ${err.message}`);
  Deno.exit(1);
}

if (import.meta.main) {
  const config = (() => {
    try {
      return loadConfig();
    } catch (err) {
      exitOnConfigError(err);
    }
  })();
  const service = await startService(config).catch(exitOnConfigError);
  const log = service.ctx.log;
  log.info(describeTools(service.tools));
  log.info(
    `KV at ${describeKvPath(config.kvPath)}${
      config.sharedKv ? " (shared with other instances)" : ""
    }; data in ${config.dataDir}`,
  );
  if (config.kvPath === "") {
    // Deploy gives no error for this: each instance would keep its own KV.
    log.info(
      "KV_PATH is empty: on Deno Deploy, attach a KV database to the app, or Deno.openKv() falls back to memory without a word",
    );
  }
  log.info(describePageCache(config));
  const sweeps = everyMinute("tapedeck sweep", async () => {
    service.worker?.wake();
    try {
      await runSweep(service.ctx);
    } catch (err) {
      log.error("sweep failed; the next one runs in a minute", {
        error: String(err),
      });
    }
  });
  log.info(sweeps.description);
  const server = await serveGuarded({
    port: config.port,
    hostname: config.hostname,
    headerTimeoutMs: config.headerTimeoutMs,
    bodyMinBytesPerS: config.bodyMinBytesPerS,
    bodyRateWindowMs: config.bodyRateWindowMs,
    bodyTimeoutMs: config.bodyTimeoutMs,
    shutdownGraceMs: STOP_DRAIN_MS,
  }, service.app.fetch);
  log.info(server.description);
  log.info(describeHosts(config));
  log.info(
    `tapedeck listening on http://${
      server.addr.hostname.includes(":")
        ? `[${server.addr.hostname}]`
        : server.addr.hostname
    }:${server.addr.port}/`,
  );
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    service.ctx.state.stopping = true;
    log.info("tapedeck stopping: finishing requests in flight");
    // Deno Deploy sends SIGKILL 5 s after SIGINT: requests in flight get
    // STOP_DRAIN_MS, and a close that hangs after them is cut short.
    const timer = setTimeout(() => Deno.exit(0), STOP_EXIT_MS);
    sweeps.stop();
    await Promise.race([
      server.shutdown(),
      new Promise((r) => setTimeout(r, STOP_DRAIN_MS + 250)),
    ]);
    await service.close();
    clearTimeout(timer);
    log.info("tapedeck stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
