/**
 * Liveness and readiness. `/healthz` only says the process answers.
 * `/readyz` ({@link checkReadiness}) reads one KV key, asks storage about
 * one file, and asks each background worker this instance runs whether it
 * is alive (they register with {@link reportAlive}); every check is bounded
 * by {@link CHECK_TIMEOUT_MS}, and probes arriving while a check runs share
 * it, so polling every second costs one KV read and one stat a second.
 */

import type { AppContext } from "../core/context.ts";
import { settingKey } from "../kv/keys.ts";

/** A check that has not answered within this is failed. */
export const CHECK_TIMEOUT_MS = 2000;

/** A recording id that never exists, for the storage probe. */
const PROBE_ID = "00000000-0000-4000-8000-000000000000";

/** The result of one readiness check. */
export interface CheckResult {
  ok: boolean;
  ms: number;
  error?: string;
}

/** What `/readyz` answers. */
export interface Readiness {
  ready: boolean;
  checks: Record<string, CheckResult>;
}

const workers = new WeakMap<AppContext, Map<string, () => boolean>>();
const running = new WeakMap<AppContext, Promise<Readiness>>();

/**
 * Registers a background worker of this instance for `/readyz` under
 * `name`; returns the function that unregisters it (when it stops).
 */
export function reportAlive(
  ctx: AppContext,
  name: string,
  alive: () => boolean,
): () => void {
  let map = workers.get(ctx);
  if (!map) workers.set(ctx, map = new Map());
  map.set(name, alive);
  return () => {
    if (map.get(name) === alive) map.delete(name);
  };
}

/** Something a storage backend may offer to say cheaply that it is reachable. */
interface Probeable {
  probe(): Promise<void>;
}

function canProbe(storage: unknown): storage is Probeable {
  return typeof (storage as Partial<Probeable>).probe === "function";
}

async function timed(check: () => Promise<unknown>): Promise<CheckResult> {
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)),
          CHECK_TIMEOUT_MS,
        );
      }),
    ]);
    return { ok: true, ms: Math.round(performance.now() - started) };
  } catch (err) {
    return {
      ok: false,
      ms: Math.round(performance.now() - started),
      error: ((err as Error)?.message ?? String(err)).slice(0, 300),
    };
  } finally {
    clearTimeout(timer);
  }
}

async function readiness(ctx: AppContext): Promise<Readiness> {
  const [kv, storage] = await Promise.all([
    timed(() => ctx.kv.get(settingKey("readiness_probe"))),
    timed(() =>
      canProbe(ctx.storage)
        ? ctx.storage.probe()
        : ctx.storage.statFile(PROBE_ID, "readyz")
    ),
  ]);
  const checks: Record<string, CheckResult> = { kv, storage };
  for (const [name, alive] of workers.get(ctx) ?? []) {
    checks[`worker:${name}`] = alive()
      ? { ok: true, ms: 0 }
      : { ok: false, ms: 0, error: "the worker is stopped or stuck" };
  }
  if (ctx.state.stopping) {
    checks.stopping = { ok: false, ms: 0, error: "the instance is stopping" };
  }
  return { ready: Object.values(checks).every((c) => c.ok), checks };
}

/** Whether this instance can take traffic, and each check's result. */
export function checkReadiness(ctx: AppContext): Promise<Readiness> {
  let pending = running.get(ctx);
  if (!pending) {
    pending = readiness(ctx).finally(() => running.delete(ctx));
    running.set(ctx, pending);
  }
  return pending;
}
