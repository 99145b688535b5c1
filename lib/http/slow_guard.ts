/**
 * PROTOTYPE (issue 12, "slow requests are never dropped"): `Deno.serve` with
 * a request-head timeout per connection, and a way to really close a
 * connection after a 408 for a body that comes too slowly.
 *
 * Why this is needed (Deno 2.9.6; sources cited from tag v2.9.5): the
 * HTTP/1.1 server behind `Deno.serve` (`deno_http_h1`, used by
 * ext/http/http_next.rs `serve_http11_raw`) has no read timeout of any kind,
 * and `Deno.serve` has no option for one: a client that sends one header line
 * every 10 s, or nothing at all, keeps its connection for as long as it
 * likes (measured: 20 of 20 such connections still open after 75 s). And
 * after a handler answers a request whose body it did not read to the end
 * (a 408 for a stalled body), the server drains the rest of the body
 * (`discard_body_with_scratch`, no limit, no timeout) before it closes the
 * connection, whatever `Connection: close` says: the slow client keeps its
 * connection after the 408 too.
 *
 * How: we accept the TCP connections ourselves (`Deno.listen`) and serve each
 * one with Deno's own HTTP machinery on that connection
 * (`serveHttpOnConnection`, the internal function behind `Deno.serve`, which
 * takes a per-connection AbortSignal). The request parsing, body streaming
 * and response writing stay in Rust exactly as in `Deno.serve`; what is added
 * is one JS accept per connection, a counter and an `info.completed`
 * callback per request, and one sweep timer for the whole server
 * (measured on loopback, 200 clients, server CPU seconds, 3 rounds on a
 * busy 2-core machine: 1000 x 1 MiB POSTs 1.89 vs 1.90 for Deno.serve;
 * 10 000 x 1 KiB 1.85 vs 1.53 (+20%); 600 x 1 MiB on a new connection
 * each 1.68 vs 1.61 (+4%)).
 * Per connection:
 * - the head clock runs whenever no request is being handled on it: from
 *   the accept, and again from the moment a response has been fully sent
 *   (`info.completed`); past `headerTimeoutMs` (checked by a sweep every
 *   quarter of it, at most every second), the connection is closed (its
 *   per-connection AbortSignal). Idle keep-alive connections are thereby
 *   closed after the same time (as nginx's `client_header_timeout` /
 *   `keepalive_timeout` would). A request whose head is completed in the
 *   very same instant can be caught by the close: the client sees a reset
 *   connection, as with any keep-alive timeout race.
 * - when a handler returns a response carrying `Connection: close` (as
 *   `RequestTimeoutError` does), the connection is cut as soon as that
 *   response has been sent (at most `closeAfterMs` after it was returned),
 *   instead of draining the rest of the body for as long as the client likes.
 * No 408 can be written on a head timeout: the connection's socket belongs to
 * Deno's HTTP server, which has no hook for it; the client sees the
 * connection close (RFC 9110 allows closing an idle connection at any time).
 *
 * The body side (a minimum rate / total deadline) is {@link watchBody}: the
 * handler reads the body itself, so a watchdog there can fail the read with a
 * {@link SlowBodyError}; the handler answers 408 with `Connection: close` and
 * the guard above then closes the connection.
 *
 * LIMITATION, WebSockets: a connection upgraded by `Deno.upgradeWebSocket`
 * is torn down at once when served this way (Deno 2.9.6: the per-connection
 * server ends with the upgrade, and its end, `op_http_close(rid, false)` in
 * ext/http/00_serve.ts `serveHttpOn`, force-closes every WebSocket of that
 * server). Serve `/ws` from a plain `Deno.serve` listener (another port).
 *
 * Risk: `serveHttpOnConnection` is reached through `Deno[Deno.internal]`,
 * which is not a public API and may change in any Deno release. When it is
 * missing, {@link serveGuarded} falls back to plain `Deno.serve` and says so
 * (`guarded: false`); tests/slow_guard_test.ts fails then, so an upgrade that
 * breaks it is noticed.
 */

/** Options of {@link serveGuarded}. */
export interface GuardedServeOptions {
  hostname?: string;
  port?: number;
  /**
   * Longest a connection may go without a request being handled on it:
   * the time a client has to send a complete request head after connecting
   * or after its previous response was sent. Default 10 000 ms.
   */
  headerTimeoutMs?: number;
  /**
   * After a handler returned a response with `Connection: close`, the
   * connection is cut once that response has been sent, or this long after
   * it was returned, whichever comes first. Default 1000 ms.
   */
  closeAfterMs?: number;
  /**
   * On {@link GuardedServer.shutdown}, how long requests in progress may
   * take to finish before their connections are cut. Default 10 000 ms.
   */
  shutdownGraceMs?: number;
  signal?: AbortSignal;
  onListen?: (addr: Deno.NetAddr) => void;
  onError?: (error: unknown) => Response | Promise<Response>;
}

/** A server started by {@link serveGuarded}. */
export interface GuardedServer {
  readonly addr: Deno.NetAddr;
  /** False when Deno lacks the per-connection API: plain Deno.serve, no head timeout. */
  readonly guarded: boolean;
  /** Resolves once the listener is closed and every connection has ended. */
  readonly finished: Promise<void>;
  /** Connections open now. */
  readonly connections: number;
  /** Connections closed by the head timeout so far. */
  readonly headTimeouts: number;
  /** Connections cut after a `Connection: close` response so far. */
  readonly closedAfterResponse: number;
  /**
   * Stops accepting; closes idle connections at once and the others as
   * soon as their requests are answered (at the latest after
   * `shutdownGraceMs`).
   */
  shutdown(): Promise<void>;
}

interface ConnectionServer {
  finished: Promise<void>;
}

type ServeHttpOnConnection = (
  conn: Deno.Conn,
  signal: AbortSignal,
  handler: Deno.ServeHandler,
  onError: (error: unknown) => Response | Promise<Response>,
  onListen: () => void,
) => ConnectionServer;

function internalServeOnConnection(): ServeHttpOnConnection | undefined {
  const deno = Deno as unknown as Record<symbol, unknown> & {
    internal?: symbol;
  };
  const internals = deno.internal
    ? deno[deno.internal] as Record<string, unknown> | undefined
    : undefined;
  const fn = internals?.serveHttpOnConnection;
  return typeof fn === "function" ? fn as ServeHttpOnConnection : undefined;
}

/** How long after a `Connection: close` response settled its connection is cut. */
const CLOSE_LINGER_MS = 100;

/** True while a connection is being cut (see `cut` in serveGuarded). */
let cutting = false;
let swallowerInstalled = false;

/**
 * Abort listeners report their exceptions synchronously through the global
 * "error" event; this drops the one a cut of an already-closed connection
 * raises, and nothing else.
 */
function installCutErrorSwallower(): void {
  if (swallowerInstalled) return;
  swallowerInstalled = true;
  globalThis.addEventListener("error", (event) => {
    if (cutting && event.error instanceof Deno.errors.BadResource) {
      event.preventDefault();
    }
  });
}

function defaultOnError(error: unknown): Response {
  console.error("Unhandled error in a request handler:", error);
  return new Response("Internal Server Error", { status: 500 });
}

/** What the server keeps per connection. */
interface Guarded {
  server: ConnectionServer;
  /** When it last became idle (performance.now()). */
  idleSince: number;
  /** No request is being handled on it, and it is not being closed. */
  idle(): boolean;
  /** Force-closes it now. */
  cut(): void;
  /** Cuts it once no request is being handled on it. */
  cutWhenIdle(): void;
}

/**
 * `Deno.serve` (HTTP/1.1 and h2c over TCP) with a head timeout per
 * connection and a real close after `Connection: close` responses.
 */
export function serveGuarded(
  options: GuardedServeOptions,
  handler: Deno.ServeHandler<Deno.NetAddr>,
): GuardedServer {
  const headerTimeoutMs = options.headerTimeoutMs ?? 10_000;
  const closeAfterMs = options.closeAfterMs ?? 1000;
  const shutdownGraceMs = options.shutdownGraceMs ?? 10_000;
  const onError = options.onError ?? defaultOnError;
  const serveOn = internalServeOnConnection();
  const hostname = options.hostname ?? "0.0.0.0";
  const port = options.port ?? 8000;

  if (!serveOn) {
    console.warn(
      "slow_guard: this Deno has no serveHttpOnConnection; serving with plain Deno.serve, WITHOUT a request-head timeout.",
    );
    const server = Deno.serve({
      hostname,
      port,
      signal: options.signal,
      onListen: (addr) => options.onListen?.(addr),
      onError,
    }, handler);
    return {
      addr: server.addr,
      guarded: false,
      finished: server.finished,
      connections: 0,
      headTimeouts: 0,
      closedAfterResponse: 0,
      shutdown: () => server.shutdown(),
    };
  }

  installCutErrorSwallower();
  const listener = Deno.listen({ hostname, port });
  const addr = listener.addr;
  const open = new Set<Guarded>();
  let headTimeouts = 0;
  let closedAfterResponse = 0;
  let stopping = false;

  // Only a forced cut is used on a connection: a graceful shutdown of it
  // (op_http_close) takes its server resource at once, after which it can
  // no longer be forced, and it waits for the body of the last request to
  // be drained, however slowly it comes.
  const serveConnection = (conn: Deno.Conn) => {
    const abort = new AbortController();
    let inFlight = 0;
    let cutTimer: ReturnType<typeof setTimeout> | undefined;
    let ended = false;
    let closing = false;
    let cutIfIdle = false;

    const cut = () => {
      if (ended) return;
      // Deno's listener on this signal calls op_http_cancel, which throws
      // BadResource (reported as an uncaught error) if the connection's
      // server resource is already gone: the connection has just ended and
      // `finished` has not settled yet. Nothing is left to cut then, and
      // installCutErrorSwallower drops that error.
      cutting = true;
      try {
        abort.abort();
      } finally {
        cutting = false;
      }
    };

    const guarded: Deno.ServeHandler<Deno.NetAddr> = async (req, info) => {
      inFlight++;
      let response: Response | undefined;
      try {
        response = await handler(req, info);
        return response;
      } finally {
        const close = response?.headers.get("connection")?.toLowerCase()
          .includes("close") ?? false;
        if (close && !closing) {
          // Deno would drain the rest of the request body before closing,
          // however slowly it comes: cut once the response is out, and at
          // the latest closeAfterMs from now.
          closing = true;
          closedAfterResponse++;
          cutTimer = setTimeout(cut, closeAfterMs);
        }
        const settled = () => {
          if (--inFlight > 0) return;
          entry.idleSince = performance.now();
          if (closing) {
            // `completed` can settle before a small response has reached
            // the socket (a 408 was lost when cut at once, Deno 2.9.6); the
            // write follows within the same turn of Rust's task, so a short
            // delay is enough.
            clearTimeout(cutTimer);
            cutTimer = setTimeout(cut, Math.min(CLOSE_LINGER_MS, closeAfterMs));
          } else if (cutIfIdle) cut();
        };
        info.completed.then(settled, settled);
      }
    };

    const server = serveOn(
      conn,
      abort.signal,
      guarded as Deno.ServeHandler,
      onError,
      () => {},
    );
    const entry: Guarded = {
      server,
      idleSince: performance.now(),
      idle: () => inFlight === 0 && !closing && !ended,
      cut,
      cutWhenIdle: () => {
        cutIfIdle = true;
        if (inFlight === 0) cut();
      },
    };
    open.add(entry);
    server.finished.catch(() => {}).finally(() => {
      ended = true;
      clearTimeout(cutTimer);
      open.delete(entry);
    });
  };

  // One sweep for every connection (no timer per request): a connection
  // idle for headerTimeoutMs is closed within a quarter of that more.
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const c of open) {
      if (c.idle() && now - c.idleSince >= headerTimeoutMs) {
        headTimeouts++;
        c.cut();
      }
    }
  }, Math.min(1000, Math.max(20, Math.floor(headerTimeoutMs / 4))));

  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (stopping || err instanceof Deno.errors.BadResource) return;
        // Out of file descriptors and the like: wait a little, go on.
        console.error("slow_guard: accept failed:", err);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (stopping) {
        conn.close();
        continue;
      }
      try {
        serveConnection(conn);
      } catch (err) {
        console.error("slow_guard: cannot serve a connection:", err);
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
    }
  })();

  let finishedResolve!: () => void;
  const finished = new Promise<void>((r) => finishedResolve = r);
  const shutdown = async () => {
    if (!stopping) {
      stopping = true;
      try {
        listener.close();
      } catch {
        // already closed
      }
      await accepting;
      clearInterval(sweep);
      for (const c of open) c.cutWhenIdle();
      const all = Promise.all(
        [...open].map((c) => c.server.finished.catch(() => {})),
      );
      let grace: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        all,
        new Promise<void>((r) => grace = setTimeout(r, shutdownGraceMs)),
      ]);
      clearTimeout(grace);
      for (const c of open) c.cut();
      await all;
      finishedResolve();
    }
    await finished;
  };
  options.signal?.addEventListener("abort", () => void shutdown(), {
    once: true,
  });
  options.onListen?.(addr);

  return {
    addr,
    guarded: true,
    finished,
    get connections() {
      return open.size;
    },
    get headTimeouts() {
      return headTimeouts;
    },
    get closedAfterResponse() {
      return closedAfterResponse;
    },
    shutdown,
  };
}

// ------------------------------------------------------------ body watchdog

/** A request body that came too slowly. */
export class SlowBodyError extends Error {
  /** "rate": under the minimum rate; "deadline": not complete in time. */
  readonly kind: "rate" | "deadline";
  constructor(kind: "rate" | "deadline", message: string) {
    super(message);
    this.name = "SlowBodyError";
    this.kind = kind;
  }
}

/** Options of {@link watchBody}. */
export interface WatchBodyOptions {
  /**
   * Least average rate, in bytes per second, over each window of
   * `windowMs` (default 10 000 ms); 0 turns the check off. The first window
   * starts when the watch does.
   */
  minBytesPerSecond?: number;
  windowMs?: number;
  /** Longest the whole body may take, in ms; 0 (default) for no limit. */
  deadlineMs?: number;
}

/**
 * Passes a request body through, failing it with a {@link SlowBodyError}
 * (and cancelling the source) when it comes slower than
 * `minBytesPerSecond` over a window, or is not complete within
 * `deadlineMs`. The result is a byte stream: a BYOB reader (as
 * `Storage.writeChunk` uses) reads straight into its own buffer.
 */
export function watchBody(
  body: ReadableStream<Uint8Array>,
  options: WatchBodyOptions,
): ReadableStream<Uint8Array> {
  const windowMs = options.windowMs ?? 10_000;
  const minBytes = ((options.minBytesPerSecond ?? 0) * windowMs) / 1000;
  const deadlineMs = options.deadlineMs ?? 0;
  let byob: ReadableStreamBYOBReader | undefined;
  let plain: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    plain = body.getReader();
  }
  const source = (byob ?? plain)!;
  const started = Date.now();
  let windowStart = started;
  let windowBytes = 0;
  let failure: SlowBodyError | undefined;
  let watchdog: ReturnType<typeof setInterval> | undefined;
  let fail: (err: SlowBodyError) => void = () => {};
  const failed = new Promise<never>((_, reject) => {
    fail = (err) => {
      if (failure) return;
      failure = err;
      clearInterval(watchdog);
      // Rejected before the source is cancelled: cancelling ends a pending
      // read, which must not win the race below as a normal end.
      reject(err);
      source.cancel(err).catch(() => {});
    };
  });
  failed.catch(() => {});
  const check = () => {
    const now = Date.now();
    if (deadlineMs > 0 && now - started >= deadlineMs) {
      fail(
        new SlowBodyError(
          "deadline",
          `The request body was not complete within ${deadlineMs} ms; nothing was stored. Send it again on a faster connection, or in smaller chunks.`,
        ),
      );
    } else if (minBytes > 0 && now - windowStart >= windowMs) {
      if (windowBytes < minBytes) {
        fail(
          new SlowBodyError(
            "rate",
            `The request body came at ${
              Math.round((windowBytes * 1000) / (now - windowStart))
            } bytes/s, under the minimum of ${options.minBytesPerSecond} bytes/s; nothing was stored. Send it again.`,
          ),
        );
      }
      windowStart = now;
      windowBytes = 0;
    }
  };
  if (minBytes > 0 || deadlineMs > 0) {
    const every = Math.max(
      50,
      Math.min(
        minBytes > 0 ? windowMs / 4 : Infinity,
        deadlineMs > 0 ? deadlineMs / 4 : Infinity,
      ),
    );
    watchdog = setInterval(check, every);
  }
  const done = () => clearInterval(watchdog);

  return new ReadableStream({
    type: "bytes",
    async pull(controller: ReadableByteStreamController) {
      try {
        const request = controller.byobRequest;
        if (byob && request?.view) {
          const view = request.view;
          const { done: end, value } = await Promise.race([
            byob.read(
              new Uint8Array(view.buffer, view.byteOffset, view.byteLength),
            ),
            failed,
          ]);
          if (failure) throw failure;
          if (end || !value) {
            done();
            controller.close();
            if (value) request.respondWithNewView(value);
            return;
          }
          windowBytes += value.length;
          request.respondWithNewView(value);
        } else {
          const { done: end, value } = await Promise.race([
            (byob
              ? byob.read(new Uint8Array(64 * 1024))
              : plain!.read()) as Promise<ReadableStreamReadResult<Uint8Array>>,
            failed,
          ]);
          if (failure) throw failure;
          if (end) {
            done();
            controller.close();
            // A BYOB read waiting on a source without BYOB support.
            controller.byobRequest?.respond(0);
            return;
          }
          windowBytes += value.length;
          controller.enqueue(value);
        }
      } catch (err) {
        done();
        controller.error(failure ?? err);
      }
    },
    cancel(reason) {
      done();
      return source.cancel(reason);
    },
  });
}
