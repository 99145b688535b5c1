/**
 * The shared services of one running instance, handed to routes and jobs.
 */

import { openKv } from "../kv/open.ts";
import type { Config } from "./config.ts";
import { createLogger, type Logger } from "./log.ts";
import { LiveHub } from "../live/hub.ts";
import { LocalStorage } from "../storage/local.ts";
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

/** Opens KV and storage for a config. Close with {@link closeContext}. */
export async function openContext(config: Config): Promise<AppContext> {
  await Deno.mkdir(config.dataDir, { recursive: true });
  await Deno.mkdir(`${config.dataDir}/recordings`, { recursive: true });
  const kv = await openKv(config.kvPath);
  return {
    config,
    kv,
    storage: new LocalStorage(
      config.dataDir,
      config.minFreeBytes,
      config.ingestCacheBytes,
    ),
    live: new LiveHub(),
    log: createLogger({ format: config.logFormat, level: config.logLevel }),
    state: { stopping: false },
  };
}

/** Closes what {@link openContext} opened. */
export function closeContext(ctx: AppContext): void {
  ctx.storage.close();
  ctx.kv.close();
}
