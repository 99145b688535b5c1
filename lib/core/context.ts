/**
 * The shared services of one running instance, handed to routes and jobs.
 */

import { describeKvPath, openKv } from "../kv/open.ts";
import type { Config } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";
import { LiveHub } from "../live/hub.ts";
import { LocalStorage } from "../storage/local.ts";
import { closeStorage, openStorage } from "../storage/open.ts";
import type { Storage } from "../storage/storage.ts";

/** What every `lib/` operation needs: config, KV, storage and the live hub. */
export interface AppContext {
  config: Config;
  kv: Deno.Kv;
  storage: Storage;
  live: LiveHub;
  log: Logger;
  /** Set once the instance is shutting down (requests cut off get 503). */
  state: { stopping: boolean };
  /** This instance's processing worker, when it runs one. */
  jobs?: JobCanceller;
}

/** Stops a running job of a recording (it was deleted) and waits for it. */
export interface JobCanceller {
  cancel(id: string): Promise<void>;
}

/**
 * State kept per KV handle (several handles may be open at once, as in
 * tests of two instances): returns a getter that makes it on first use.
 */
export function perKv<T>(make: (kv: Deno.Kv) => T): (kv: Deno.Kv) => T {
  const states = new WeakMap<Deno.Kv, T>();
  return (kv) => {
    let state = states.get(kv);
    if (state === undefined) {
      state = make(kv);
      states.set(kv, state);
    }
    return state;
  };
}

/** Options of {@link openContext}. */
export interface OpenOptions {
  /**
   * Every instance that uses this KV runs in this process, on this data
   * folder (tests of several instances). Only then may a shared KV go with
   * local-disk storage: the instances share one {@link LocalStorage}. The
   * service itself (main.ts, worker.ts) never sets it.
   */
  sameProcess?: boolean;
}

/**
 * Refuses a KV shared with other instances (SHARED_KV) when recordings are
 * stored on this machine's disk: another process could neither read the
 * chunks this one stores nor append safely to them.
 */
export function assertStorageFitsKv(
  config: Config,
  storage: Storage,
  options: OpenOptions = {},
): void {
  if (!config.sharedKv || options.sameProcess) return;
  if (!(storage instanceof LocalStorage)) return;
  const kv = config.kvPath === ""
    ? "the platform's KV"
    : `KV_PATH=${describeKvPath(config.kvPath)}`;
  throw new ConfigError(
    `SHARED_KV is on (${kv} is shared with other instances) but recordings are stored on this machine's disk (${storage.root}), which other instances cannot read. ` +
      "Set STORAGE_URL=s3://bucket/prefix (with S3_ENDPOINT and the AWS_* settings) so every instance shares the recordings, " +
      "or SHARED_KV=false if this is the only instance (server and worker in one process, RUN_WORKER=true).",
  );
}

/** Opens KV and storage for a config. Close with {@link closeContext}. */
export async function openContext(
  config: Config,
  options: OpenOptions = {},
): Promise<AppContext> {
  await Deno.mkdir(config.dataDir, { recursive: true });
  const log = createLogger({
    format: config.logFormat,
    level: config.logLevel,
  });
  const storage = await openStorage(config, log);
  try {
    assertStorageFitsKv(config, storage, options);
  } catch (err) {
    closeStorage(storage);
    throw err;
  }
  const kv = await openKv(config.kvPath).catch((err) => {
    closeStorage(storage);
    throw err;
  });
  return {
    config,
    kv,
    storage,
    live: new LiveHub(),
    log,
    state: { stopping: false },
  };
}

/**
 * Closes what {@link openContext} opened; resolves once the KV's
 * connections are closed (a PostgreSQL KV closes asynchronously).
 */
export async function closeContext(ctx: AppContext): Promise<void> {
  closeStorage(ctx.storage);
  await (ctx.kv.close() as unknown as Promise<void> | undefined);
}
