// Over 400 lines: one listener: node:http server, socket accounting, body-rate watch, WebSocket hand-over and shutdown act on the same connections.
/**
 * The HTTP listener of `main.ts`, with limits on slow clients (issue 12,
 * "slow requests are never dropped"): a request head must be complete
 * within `headerTimeoutMs` of the connection opening (or of the previous
 * response on a kept-alive connection), and a request body must keep up a
 * minimum rate (and, optionally, finish within a deadline). A client that
 * does not gets a JSON `408` and its connection is closed.
 *
 * Why `node:http` and not `Deno.serve` (Deno 2.9.6; read in the sources of
 * tag v2.9.5, ext/http):
 * - `Deno.serve` has no read timeout of any kind and no option for one, and
 *   after a handler answers without reading the whole body (a `408` for a
 *   stalled body) it drains the rest of the body, however slowly it comes,
 *   before it closes the connection.
 * - Serving each accepted connection with the internal
 *   `Deno[Deno.internal].serveHttpOnConnection` (the earlier prototype of
 *   this module) gives a per-connection kill switch, but a WebSocket
 *   upgraded on such a connection is force-closed at once: the
 *   per-connection server ends with the upgrade, and `serveHttpOn`
 *   (00_serve.ts) then calls `op_http_close(rid, false)`, whose forced mode
 *   calls `begin_shutdown(Forced)` on that server's registry of upgraded
 *   sockets (http_next.rs, service.rs `ActiveWebSockets`). Nothing reachable
 *   from JavaScript avoids that call, and `upgradeHttpRaw`, the only way to
 *   take an upgraded connection back, was removed before 2.9.6 (#36528).
 * - `node:http` under Deno enforces `headersTimeout` (answering `408`
 *   itself) and `keepAliveTimeout`, lets us count body bytes as they arrive
 *   and destroy a socket, and hands WebSocket upgrades to Deno's own
 *   WebSocket through the public `Deno.upgradeWebSocket(req, {socket,
 *   head})` (Deno 2.8+). Its CPU cost on loopback is about that of
 *   `Deno.serve` (see docs in README, "Slow clients").
 *
 * Handlers get a standard `Request` (a byte-stream body, so BYOB readers
 * work) and return a `Response`, as with `Deno.serve`; a live socket is
 * accepted with {@link upgradeWebSocket} instead of `Deno.upgradeWebSocket`
 * (it works under both servers). When `headerTimeoutMs` is 0 or this Deno
 * lacks the upgrade option, {@link serveGuarded} serves with plain
 * `Deno.serve` and says so in {@link GuardedServer.description}.
 */

import http from "node:http";
import type { Socket } from "node:net";
import { RequestTimeoutError } from "../core/errors.ts";

/** What a handler gets besides the request (as `Deno.serve` gives it). */
export interface ServeInfo {
  remoteAddr: Deno.NetAddr;
}

/** A request handler, as for `Deno.serve`. */
export type GuardedHandler = (
  req: Request,
  info: ServeInfo,
) => Response | Promise<Response>;

/** Options of {@link serveGuarded}. */
export interface GuardedServeOptions {
  hostname: string;
  port: number;
  /**
   * Longest a connection may take to send a complete request head, counted
   * from the connection opening or from the first byte of the next request
   * on a kept-alive one; also the longest a kept-alive connection may stay
   * idle. 0 turns the guard off (plain `Deno.serve`).
   */
  headerTimeoutMs: number;
  /** Least average body rate, in bytes per second over each window; 0 turns it off. */
  bodyMinBytesPerS: number;
  /** The window the body rate is averaged over, in ms. */
  bodyRateWindowMs: number;
  /** Longest a whole request body may take, in ms; 0 for no limit. */
  bodyTimeoutMs: number;
  /**
   * On {@link GuardedServer.shutdown}, how long requests in progress may take
   * to finish before their connections are cut. Default 10 000 ms.
   */
  shutdownGraceMs?: number;
  onListen?: (addr: Deno.NetAddr) => void;
}

/** A server started by {@link serveGuarded}. */
export interface GuardedServer {
  readonly addr: Deno.NetAddr;
  /** False when serving with plain `Deno.serve` (no slow-client limits). */
  readonly guarded: boolean;
  /** One line for the start-up log saying which limits hold. */
  readonly description: string;
  /** Connections closed for a slow or idle request head so far. */
  readonly headTimeouts: number;
  /** Request bodies failed for coming too slowly so far. */
  readonly slowBodies: number;
  /** Live sockets open now (upgraded through this server). */
  readonly webSockets: number;
  /**
   * Stops accepting connections, closes idle ones and live sockets (1001) at
   * once, lets requests in progress finish (each then closes its
   * connection), and cuts what is left after `shutdownGraceMs`.
   */
  shutdown(): Promise<void>;
}

/** A request body that came too slowly (408, and the connection is closed). */
export class SlowBodyError extends RequestTimeoutError {
  /** "rate": under the minimum rate; "deadline": not complete in time. */
  readonly reason: "rate" | "deadline";
  constructor(reason: "rate" | "deadline", message: string) {
    super(message);
    this.reason = reason;
  }
}

/** The `Deno.upgradeWebSocket` option this server needs (Deno 2.8+). */
type NodeUpgradeOptions = Deno.UpgradeWebSocketOptions & {
  socket?: Socket;
  head?: Uint8Array;
};

/** An upgrade request waiting for its handler, by the Request given to it. */
interface PendingUpgrade {
  socket: Socket;
  head: Uint8Array;
  sockets: Set<WebSocket>;
  upgraded: boolean;
}

const pendingUpgrades = new WeakMap<Request, PendingUpgrade>();

/** The live sockets of the plain server a request came to (see servePlain). */
const plainSockets = new WeakMap<Request, Set<WebSocket>>();

/**
 * `Deno.upgradeWebSocket` for a request from either server: over the
 * `node:http` socket for {@link serveGuarded}'s requests, as usual for
 * `Deno.serve`'s. The socket is closed (1001) when the server shuts down.
 */
export function upgradeWebSocket(req: Request): Deno.WebSocketUpgrade {
  const pending = pendingUpgrades.get(req);
  if (!pending) {
    const upgrade = Deno.upgradeWebSocket(req);
    const sockets = plainSockets.get(req);
    if (sockets) {
      const ws = upgrade.socket;
      sockets.add(ws);
      ws.addEventListener("close", () => sockets.delete(ws));
    }
    return upgrade;
  }
  const options: NodeUpgradeOptions = {
    socket: pending.socket,
    head: pending.head,
  };
  const upgrade = Deno.upgradeWebSocket(req, options);
  pending.upgraded = true;
  const ws = upgrade.socket;
  pending.sockets.add(ws);
  ws.addEventListener("close", () => pending.sockets.delete(ws));
  return upgrade;
}

/** Whether this Deno takes a `node:http` socket in `Deno.upgradeWebSocket` (2.8+). */
export function nodeUpgradeSupported(): boolean {
  const [major, minor] = Deno.version.deno.split(".").map(Number);
  return major > 2 || (major === 2 && minor >= 8);
}

/** A complete JSON error answer written straight to a socket. */
function rawJsonError(status: number, error: string): string {
  const body = JSON.stringify({ error });
  return `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? "Error"}\r\n` +
    "Content-Type: application/json; charset=UTF-8\r\n" +
    `Content-Length: ${new TextEncoder().encode(body).length}\r\n` +
    `Connection: close\r\n\r\n${body}`;
}

function jsonError(status: number, error: string): Response {
  return Response.json({ error }, {
    status,
    headers: { Connection: "close" },
  });
}

/** A Host header value a URL can be built on: a name or IP literal, and a port. */
const HOST_SYNTAX =
  /^(?:[A-Za-z0-9._~!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/** A `.` or `..` path segment, also percent-encoded. */
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;

/** Answers read whole and sent with a Content-Length (the app's are small). */
const SMALL_BODY_TYPES = /^(?:application\/json|text\/html|text\/plain)\b/i;

/** What is tracked of one request body while it arrives. */
interface BodyWatch {
  started: number;
  windowStart: number;
  windowBytes: number;
  /** The handler is not reading (its queue is full): the rate is not counted. */
  paused: boolean;
  fail(err: SlowBodyError): void;
}

/**
 * Serves `handler` on `hostname:port` with the slow-client limits (see the
 * module comment); resolves once it is listening.
 */
export async function serveGuarded(
  options: GuardedServeOptions,
  handler: GuardedHandler,
): Promise<GuardedServer> {
  if (options.headerTimeoutMs <= 0 || !nodeUpgradeSupported()) {
    return servePlain(options, handler);
  }
  const headerTimeoutMs = options.headerTimeoutMs;
  const minBytes = (options.bodyMinBytesPerS * options.bodyRateWindowMs) /
    1000;
  const windowMs = options.bodyRateWindowMs;
  const bodyTimeoutMs = options.bodyTimeoutMs;
  const shutdownGraceMs = options.shutdownGraceMs ?? 10_000;
  const sockets = new Set<WebSocket>();
  const bodies = new Set<BodyWatch>();
  let headTimeouts = 0;
  let slowBodies = 0;
  let stopping = false;
  let listenAddr: Deno.NetAddr = {
    transport: "tcp",
    hostname: options.hostname,
    port: options.port,
  };

  const server = http.createServer({
    headersTimeout: headerTimeoutMs,
    // Bodies are limited by rate (below), not by a total time Node would
    // count from the head: a big chunk on a slow uplink takes long.
    requestTimeout: 0,
    keepAliveTimeout: headerTimeoutMs,
    connectionsCheckingInterval: Math.max(
      25,
      Math.min(1000, Math.floor(headerTimeoutMs / 4)),
    ),
    noDelay: true,
  } as http.ServerOptions);

  /** HTTP connections open now (upgraded ones leave: Deno owns them). */
  const connections = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    connections.add(socket);
    socket.once("close", () => connections.delete(socket));
  });

  // One sweep for every body in progress (no timer per request).
  const sweep = setInterval(
    () => {
      const now = performance.now();
      for (const b of bodies) {
        if (bodyTimeoutMs > 0 && now - b.started >= bodyTimeoutMs) {
          b.fail(
            new SlowBodyError(
              "deadline",
              `The request body was not complete within ${bodyTimeoutMs} ms (BODY_TIMEOUT_MS); nothing was stored. Send it again on a faster connection, or in smaller pieces.`,
            ),
          );
          continue;
        }
        if (b.paused || minBytes <= 0) {
          b.windowStart = now;
          b.windowBytes = 0;
          continue;
        }
        if (now - b.windowStart < windowMs) continue;
        if (b.windowBytes < minBytes) {
          const rate = Math.round(
            (b.windowBytes * 1000) / (now - b.windowStart),
          );
          b.fail(
            new SlowBodyError(
              "rate",
              `The request body came at ${rate} bytes/s, under the minimum of ${options.bodyMinBytesPerS} bytes/s (BODY_MIN_BYTES_PER_S over ${windowMs} ms); nothing was stored. Send it again.`,
            ),
          );
          continue;
        }
        b.windowStart = now;
        b.windowBytes = 0;
      }
    },
    Math.max(25, Math.min(1000, Math.floor(windowMs / 4))),
  );

  const remoteOf = (socket: Socket): Deno.NetAddr => ({
    transport: "tcp",
    hostname: socket.remoteAddress ?? "unknown",
    port: socket.remotePort ?? 0,
  });

  /** The Request for a parsed head, or the reason it cannot be one. */
  const toRequest = (
    req: http.IncomingMessage,
    body: ReadableStream<Uint8Array> | null,
  ): Request | string => {
    const target = req.url ?? "/";
    if (!target.startsWith("/")) {
      return "The request target must be a path (origin form), like /create/.";
    }
    const path = target.split(/[?#]/, 1)[0];
    if (path.includes("\\") || DOT_SEGMENT.test(path)) {
      // A URL would resolve these (to another path than the one sent).
      return "The path has dot segments (/../) or backslashes; send the path itself.";
    }
    const host = req.headers.host ??
      (listenAddr.hostname.includes(":")
        ? `[${listenAddr.hostname}]:${listenAddr.port}`
        : `${listenAddr.hostname}:${listenAddr.port}`);
    if (!HOST_SYNTAX.test(host)) {
      return "The Host header is not a host name or address with an optional port.";
    }
    const headers = new Headers();
    try {
      const raw = req.rawHeaders;
      for (let i = 0; i + 1 < raw.length; i += 2) {
        headers.append(raw[i], raw[i + 1]);
      }
      return new Request(`http://${host}${target}`, {
        method: req.method,
        headers,
        body,
        duplex: "half",
      } as RequestInit);
    } catch {
      return "The request head could not be read (a header or the path has characters HTTP does not allow).";
    }
  };

  /** The request body as a byte stream, watched for its rate. */
  const bodyOf = (req: http.IncomingMessage): ReadableStream<Uint8Array> => {
    let watch: BodyWatch | undefined;
    let ended = false;
    return new ReadableStream({
      type: "bytes",
      start(controller: ReadableByteStreamController) {
        const now = performance.now();
        watch = {
          started: now,
          windowStart: now,
          windowBytes: 0,
          paused: false,
          fail(err) {
            if (ended) return;
            ended = true;
            slowBodies++;
            bodies.delete(watch!);
            req.pause();
            controller.error(err);
          },
        };
        bodies.add(watch);
        req.on("data", (chunk: Uint8Array) => {
          if (ended) return;
          watch!.windowBytes += chunk.length;
          const pull = controller.byobRequest;
          const view = pull?.view;
          if (pull && view) {
            // A reader is waiting with its own buffer: one copy, into it.
            const into = new Uint8Array(
              view.buffer,
              view.byteOffset,
              view.byteLength,
            );
            const n = Math.min(into.length, chunk.length);
            into.set(chunk.subarray(0, n));
            pull.respond(n);
            if (n < chunk.length) {
              controller.enqueue(Uint8Array.prototype.slice.call(chunk, n));
            }
          } else if (
            chunk.byteOffset === 0 &&
            chunk.byteLength === chunk.buffer.byteLength
          ) {
            // Node gives each read a buffer of its own: the stream takes it.
            controller.enqueue(chunk);
          } else {
            controller.enqueue(new Uint8Array(chunk));
          }
          if ((controller.desiredSize ?? 0) <= 0) {
            watch!.paused = true;
            req.pause();
          }
        });
        req.on("end", () => {
          if (ended) return;
          ended = true;
          bodies.delete(watch!);
          controller.close();
          controller.byobRequest?.respond(0);
        });
        // The body breaking off (the socket closed mid-body) also ends here.
        req.on("error", () => {});
        req.on("close", () => {
          if (ended) return;
          ended = true;
          bodies.delete(watch!);
          controller.error(
            new Deno.errors.ConnectionReset(
              "The client closed the connection before the request body ended.",
            ),
          );
        });
      },
      pull() {
        if (watch?.paused) {
          watch.paused = false;
          req.resume();
        }
      },
      cancel() {
        if (ended) return;
        ended = true;
        bodies.delete(watch!);
        // Discard the rest; the answer will close the connection.
        req.resume();
      },
    }, { highWaterMark: 256 * 1024 });
  };

  const hasBody = (req: http.IncomingMessage): boolean =>
    req.method !== "GET" && req.method !== "HEAD" &&
    (req.headers["transfer-encoding"] !== undefined ||
      Number(req.headers["content-length"] ?? 0) > 0);

  const answer = async (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    response: Response,
  ) => {
    res.statusCode = response.status;
    for (const [name, value] of response.headers) {
      if (name !== "set-cookie") res.setHeader(name, value);
    }
    const cookies = response.headers.getSetCookie();
    if (cookies.length > 0) res.setHeader("set-cookie", cookies);
    // A connection whose request body was not read to its end is closed
    // after the answer rather than drained, however slowly the rest comes.
    if (stopping || !req.complete) res.setHeader("connection", "close");
    const body = response.body;
    if (
      !body || req.method === "HEAD" || response.status === 204 ||
      response.status === 304
    ) {
      await body?.cancel().catch(() => {});
      res.end();
      return;
    }
    if (
      !response.headers.has("content-length") &&
      SMALL_BODY_TYPES.test(response.headers.get("content-type") ?? "")
    ) {
      // JSON and pages are small: one write with a Content-Length.
      const whole = new Uint8Array(await response.arrayBuffer());
      res.setHeader("content-length", whole.length);
      res.end(whole);
      return;
    }
    const reader = body.getReader();
    let gone = false;
    const onClose = () => {
      gone = true;
      reader.cancel().catch(() => {});
    };
    res.once("close", onClose);
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || gone) break;
        if (!res.write(value)) {
          await new Promise<void>((resolve) => {
            const go = () => {
              res.off("drain", go);
              res.off("close", go);
              resolve();
            };
            res.on("drain", go);
            res.on("close", go);
          });
        }
      }
      if (!gone) res.end();
    } catch {
      // The body failed mid-way: the client sees the connection cut.
      res.destroy();
    } finally {
      res.off("close", onClose);
    }
  };

  server.on("request", (req, res) => {
    // No `signal` on the Request (nothing here uses it): a client that goes
    // away mid-body errors the body stream instead.
    const request = toRequest(req, hasBody(req) ? bodyOf(req) : null);
    const respond = async () => {
      let response: Response;
      if (typeof request === "string") {
        response = jsonError(400, request);
      } else {
        try {
          response = await handler(request, {
            remoteAddr: remoteOf(req.socket),
          });
        } catch (err) {
          console.error("Unhandled error in a request handler:", err);
          response = jsonError(
            500,
            "The server hit an unexpected error; nothing was stored. Retry the request.",
          );
        }
      }
      await answer(req, res, response);
    };
    respond().catch(() => res.destroy());
  });

  server.on("upgrade", (req, socket: Socket, head: Uint8Array) => {
    connections.delete(socket);
    const request = toRequest(req, null);
    const write = async (response: Response) => {
      const lines = [
        `HTTP/1.1 ${response.status} ${
          http.STATUS_CODES[response.status] ?? "Error"
        }`,
      ];
      const text = new Uint8Array(await response.arrayBuffer());
      for (const [name, value] of response.headers) {
        if (name === "content-length" || name === "connection") continue;
        if (name === "set-cookie") continue;
        lines.push(`${name}: ${value}`);
      }
      for (const c of response.headers.getSetCookie()) {
        lines.push(`set-cookie: ${c}`);
      }
      lines.push(`content-length: ${text.length}`, "connection: close", "", "");
      socket.write(lines.join("\r\n"));
      socket.end(text);
    };
    if (typeof request === "string") {
      socket.end(rawJsonError(400, request));
      return;
    }
    const pending: PendingUpgrade = {
      socket,
      head,
      sockets,
      upgraded: false,
    };
    pendingUpgrades.set(request, pending);
    (async () => {
      let response: Response;
      try {
        response = stopping
          ? jsonError(
            503,
            "The server is restarting; connect again in a few seconds.",
          )
          : await handler(request, { remoteAddr: remoteOf(socket) });
      } catch (err) {
        console.error("Unhandled error in an upgrade handler:", err);
        response = jsonError(500, "The server hit an unexpected error.");
      }
      pendingUpgrades.delete(request);
      // Deno wrote the 101 and owns the connection now.
      if (pending.upgraded && response.status === 101) return;
      await write(response);
    })().catch(() => socket.destroy());
  });

  server.on("clientError", (err: Error & { code?: string }, socket: Socket) => {
    const busy = (socket as Socket & { _httpMessage?: unknown })._httpMessage;
    if (!socket.writable || busy || err.code === "ECONNRESET") {
      socket.destroy();
      return;
    }
    if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      headTimeouts++;
      socket.end(
        rawJsonError(
          408,
          `The request head was not complete within ${headerTimeoutMs} ms (HEADER_TIMEOUT_MS); the connection is closed.`,
        ),
      );
      return;
    }
    if (err.code === "HPE_HEADER_OVERFLOW") {
      socket.end(
        rawJsonError(431, "The request head is too large (16 KiB at most)."),
      );
      return;
    }
    socket.end(
      rawJsonError(
        400,
        "The request is not valid HTTP/1.1; check the request line and headers.",
      ),
    );
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address();
  if (bound && typeof bound === "object") {
    listenAddr = {
      transport: "tcp",
      hostname: bound.address,
      port: bound.port,
    };
  }
  options.onListen?.(listenAddr);

  let finished: Promise<void> | undefined;
  const shutdown = () => {
    finished ??= (async () => {
      stopping = true;
      clearInterval(sweep);
      // The listener closes at once; `server.close`'s own callback is not
      // waited for (it counts upgraded sockets, which Deno owns now).
      server.close();
      server.closeIdleConnections();
      for (const ws of sockets) {
        try {
          ws.close(1001, "server stopping");
        } catch {
          // already closing
        }
      }
      const deadline = performance.now() + shutdownGraceMs;
      while (connections.size > 0 && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
        // Connections whose answer just ended are idle now.
        server.closeIdleConnections();
      }
      for (const socket of connections) socket.destroy();
    })();
    return finished;
  };

  const rate = options.bodyMinBytesPerS > 0
    ? `bodies under ${options.bodyMinBytesPerS} bytes/s over ${windowMs} ms`
    : "no body rate limit";
  return {
    addr: listenAddr,
    guarded: true,
    description:
      `slow clients: request heads must be complete within ${headerTimeoutMs} ms (HEADER_TIMEOUT_MS), ${rate}${
        bodyTimeoutMs > 0 ? ` or over ${bodyTimeoutMs} ms` : ""
      } get 408 and their connection closed`,
    get headTimeouts() {
      return headTimeouts;
    },
    get slowBodies() {
      return slowBodies;
    },
    get webSockets() {
      return sockets.size;
    },
    shutdown,
  };
}

/**
 * Plain `Deno.serve`: no limits on slow clients. This is what runs on Deno
 * before 2.8 (Deno Deploy ran 2.5 when this was written) and with
 * HEADER_TIMEOUT_MS=0. Its shutdown does what the guarded one does with
 * what `Deno.serve` offers: live sockets are closed (1001) at once (Deno
 * 2.5's `shutdown()` leaves them open), requests that come meanwhile get
 * 503, and the requests in flight get `shutdownGraceMs` to finish before
 * `Deno.serve`'s own shutdown, which cuts request bodies still arriving in
 * Deno 2.9 (2.5 lets them end), is called.
 */
function servePlain(
  options: GuardedServeOptions,
  handler: GuardedHandler,
): GuardedServer {
  const why = options.headerTimeoutMs <= 0
    ? "HEADER_TIMEOUT_MS=0"
    : `Deno ${Deno.version.deno} cannot upgrade WebSockets over node:http (needs 2.8)`;
  const shutdownGraceMs = options.shutdownGraceMs ?? 10_000;
  const sockets = new Set<WebSocket>();
  let inFlight = 0;
  let stopping = false;
  const server = Deno.serve({
    hostname: options.hostname,
    port: options.port,
    onListen: (addr) => options.onListen?.(addr),
  }, async (req, info) => {
    if (stopping) {
      return Response.json({
        error:
          "The server is restarting; send the request again in a few seconds.",
      }, {
        status: 503,
        headers: { Connection: "close", "Retry-After": "2" },
      });
    }
    plainSockets.set(req, sockets);
    inFlight++;
    try {
      return await handler(req, info);
    } finally {
      inFlight--;
    }
  });
  let finished: Promise<void> | undefined;
  const shutdown = () => {
    finished ??= (async () => {
      stopping = true;
      for (const ws of sockets) {
        try {
          ws.close(1001, "server stopping");
        } catch {
          // already closing
        }
      }
      const deadline = performance.now() + shutdownGraceMs;
      while (inFlight > 0 && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
      }
      // Deno 2.5 waits here for a body that still trickles in: not longer
      // than a moment, the process is ending.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        server.shutdown(),
        new Promise((r) => timer = setTimeout(r, 250)),
      ]);
      clearTimeout(timer);
    })();
    return finished;
  };
  return {
    addr: server.addr,
    guarded: false,
    description:
      `slow clients are NOT dropped (${why}): plain Deno.serve has no request-head timeout, and a slow body is only answered 408 after BODY_IDLE_TIMEOUT_MS of silence`,
    headTimeouts: 0,
    slowBodies: 0,
    get webSockets() {
      return sockets.size;
    },
    shutdown,
  };
}
