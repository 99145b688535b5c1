/**
 * A task run once a minute (the sweep, the worker's wake-up): with
 * `Deno.cron` where it exists (Deno Deploy; `deno run` with
 * `--unstable-cron`, which deno.json turns on), else with a timer, so an
 * entry point started without the flag still runs (`Deno.cron` is then
 * undefined, and calling it would throw at start-up).
 */

/** A task started by {@link everyMinute}. */
export interface Minutely {
  /** One line for the start-up log: how the task is scheduled. */
  readonly description: string;
  /** Stops scheduling it (a run in progress finishes). */
  stop(): void;
}

/** What tests change in {@link everyMinute}; the app passes nothing. */
export interface EveryMinuteOptions {
  /** `Deno.cron`, or `undefined` for the timer (default: `Deno.cron`). */
  cron?: typeof Deno.cron | undefined;
  /** The timer's period in ms (default 60 000). */
  timerMs?: number;
}

/** Runs `task` once a minute; runs never overlap; a failed run is logged. */
export function everyMinute(
  name: string,
  task: () => Promise<void> | void,
  options: EveryMinuteOptions = {},
): Minutely {
  const cron = "cron" in options ? options.cron : Deno.cron;
  let running = false;
  const once = async () => {
    if (running) return;
    running = true;
    try {
      await task();
    } catch (err) {
      // A timer callback that rejects would end the process.
      console.error(`${name} failed: ${err}`);
    } finally {
      running = false;
    }
  };
  if (typeof cron === "function") {
    const ac = new AbortController();
    cron(name, "* * * * *", { signal: ac.signal }, once);
    return {
      description: `${name}: every minute by Deno.cron`,
      stop: () => ac.abort(),
    };
  }
  const timer = setInterval(once, options.timerMs ?? 60_000);
  return {
    description:
      `${name}: every minute by a timer (Deno.cron is not available here: no --unstable-cron)`,
    stop: () => clearInterval(timer),
  };
}
