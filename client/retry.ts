/**
 * Requests retried with backoff: {@link sendWithRetry} tries again after
 * network errors and retryable statuses, waiting longer each time, and a
 * {@link Waker} cuts the waits short (when the browser is back online).
 * Runs in browsers and in Deno (fetch only).
 */

/** Statuses worth another try: the server or the path to it may recover. */
const RETRY_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504, 507]);

/**
 * Cuts every pending backoff wait short, for example when the browser says
 * it is online again: the waiting requests are tried at once, with their
 * backoff started afresh.
 */
export class Waker {
  #listeners = new Set<() => void>();

  /** Calls `fn` at the next {@link wake}; returns a function that cancels it. */
  subscribe(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Ends every wait now. */
  wake(): void {
    const listeners = [...this.#listeners];
    this.#listeners.clear();
    for (const fn of listeners) fn();
  }
}

/** Backoff settings for {@link sendWithRetry}. */
export interface RetryOptions {
  /** First delay (ms), doubled per failed try. Default 500. */
  minDelayMs?: number;
  /** Longest delay (ms). Default 8,000. */
  maxDelayMs?: number;
  /** Tries before giving up. Default: never give up. */
  maxAttempts?: number;
  /** Stops waiting and sending. */
  signal?: AbortSignal;
  /** Ends a wait early (the next try then starts the backoff afresh). */
  waker?: Waker;
  /** Called before each wait with the try that failed (1-based) and why. */
  onRetry?(attempt: number, reason: string): void;
}

/** An error the server answered with; sending the same request again will not help. */
export class UploadRejectedError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "UploadRejectedError";
    this.status = status;
  }
}

/** Waits `ms`; resolves true when a waker ended the wait early. */
function wait(
  ms: number,
  signal?: AbortSignal,
  waker?: Waker,
): Promise<boolean> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = (woken: boolean) => {
      clearTimeout(timer);
      unsubscribe?.();
      signal?.removeEventListener("abort", onAbort);
      resolve(woken);
    };
    const onAbort = () => {
      clearTimeout(timer);
      unsubscribe?.();
      reject(signal!.reason);
    };
    const timer = setTimeout(() => done(false), ms);
    const unsubscribe = waker?.subscribe(() => done(true));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function errorMessage(res: Response): Promise<string> {
  try {
    const body = await res.json();
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // not JSON
  }
  return `The server answered ${res.status} ${res.statusText}`.trim();
}

/**
 * Sends a request until the server answers with something other than a
 * network error or a retryable status. Throws {@link UploadRejectedError}
 * for any other non-2xx answer.
 */
export async function sendWithRetry(
  url: string,
  init: RequestInit,
  options: RetryOptions = {},
): Promise<Response> {
  const minDelay = options.minDelayMs ?? 500;
  const maxDelay = options.maxDelayMs ?? 8_000;
  const maxAttempts = options.maxAttempts ?? Infinity;
  let step = 0;
  for (let attempt = 1;; attempt++) {
    options.signal?.throwIfAborted();
    let reason: string;
    let retryAfterMs = 0;
    try {
      const res = await fetch(url, { ...init, signal: options.signal });
      if (res.ok) return res;
      const message = await errorMessage(res);
      if (!RETRY_STATUSES.has(res.status)) {
        throw new UploadRejectedError(res.status, message);
      }
      reason = message;
      retryAfterMs = Number(res.headers.get("retry-after") ?? 0) * 1000 || 0;
    } catch (err) {
      if (err instanceof UploadRejectedError) throw err;
      options.signal?.throwIfAborted();
      reason = `network error: ${(err as Error).message ?? err}`;
    }
    if (attempt >= maxAttempts) throw new Error(reason);
    options.onRetry?.(attempt, reason);
    const backoff = Math.min(maxDelay, minDelay * 2 ** step++);
    const woken = await wait(
      Math.max(backoff, Math.min(retryAfterMs, 60_000)),
      options.signal,
      options.waker,
    );
    if (woken) step = 0;
  }
}
