/**
 * The server side of `/ws` (every recording) and `/ws/<id>` (one recording).
 * On open the socket subscribes to the process's {@link LiveHub}, reads a
 * snapshot and sends it, then sends each committed change in scope as it is
 * published; changes that arrive while the snapshot is read are sent right
 * after it, so nothing is lost between the two. Closing the socket (either
 * side, or an error) drops the subscription.
 *
 * The hub is told what a socket follows (one recording; the recordings of a
 * dashboard page, and on the first page new ones), so a change touches only
 * the sockets it concerns, and each change is serialized once for all of
 * them. Sockets are capped per client address (WS_MAX_PER_CLIENT) and in
 * total (WS_MAX_TOTAL): past a cap the handshake gets a 503 before any
 * upgrade.
 */

import type { AppContext } from "../core/context.ts";
import {
  type DashboardView,
  loadDashboard,
  type PageQuery,
} from "../http/dashboard.ts";
import { AppError, UnavailableError } from "../core/errors.ts";
import { isSameOrigin } from "../http/access.ts";
import { upgradeWebSocket } from "../http/slow_guard.ts";
import type { LiveHub } from "./hub.ts";
import type { Recording } from "../kv/keys.ts";
import { getRecording } from "../recordings/ids.ts";
import {
  type LiveMessage,
  toRecordingView,
} from "../../common/recording_view.ts";

/** A client that has this much unsent data is too slow; it is closed and may reconnect. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

/** 426: the request is not a WebSocket upgrade. */
export class UpgradeRequiredError extends AppError {
  constructor() {
    super(
      "upgrade_required",
      "This is a WebSocket endpoint; connect with a WebSocket client (Upgrade: websocket).",
      { Upgrade: "websocket" },
    );
  }
}

/** 403: a browser page from another origin tried to open a live socket. */
export class ForbiddenOriginError extends AppError {
  constructor(origin: string) {
    super(
      "forbidden",
      `Pages from ${
        origin.slice(0, 100)
      } may not open live sockets here; list the origin in CORS_ORIGINS (a "*" there is not enough).`,
    );
  }
}

/**
 * Whether a WebSocket handshake may go ahead: clients that send no Origin
 * (scripts), the service's own pages, and origins CORS_ORIGINS lists by
 * name (its `*`, meant for the API, does not count). Browsers do not apply
 * CORS to WebSockets, so this is checked here.
 */
export function isAllowedOrigin(req: Request, allowed: string[]): boolean {
  const origin = req.headers.get("origin");
  if (origin && allowed.includes(origin)) return true;
  return isSameOrigin(req);
}

/** Live sockets open now, per client address and in all. */
class SocketCounts {
  total = 0;
  perClient = new Map<string, number>();
}

const counts = new WeakMap<LiveHub, SocketCounts>();

/** Live sockets open now on the hub `live` (for /metrics). */
export function openSocketCount(live: LiveHub): number {
  return counts.get(live)?.total ?? 0;
}

/**
 * Counts one more socket for `client`, or throws a 503 past
 * `wsMaxPerClient` or `wsMaxTotal`; returns the function that counts it
 * out again (call it once).
 */
function takeSocketSlot(ctx: AppContext, client: string): () => void {
  let c = counts.get(ctx.live);
  if (!c) counts.set(ctx.live, c = new SocketCounts());
  const mine = c.perClient.get(client) ?? 0;
  if (mine >= ctx.config.wsMaxPerClient) {
    throw new UnavailableError(
      `${
        client.slice(0, 64)
      } already has ${mine} live connections open, the most allowed (WS_MAX_PER_CLIENT); close some pages and retry.`,
      10,
    );
  }
  if (c.total >= ctx.config.wsMaxTotal) {
    throw new UnavailableError(
      `The server has ${c.total} live connections open, the most it takes (WS_MAX_TOTAL); retry in a moment.`,
      10,
    );
  }
  c.total++;
  c.perClient.set(client, mine + 1);
  let released = false;
  const counted = c;
  return () => {
    if (released) return;
    released = true;
    counted.total--;
    const left = (counted.perClient.get(client) ?? 1) - 1;
    if (left > 0) counted.perClient.set(client, left);
    else counted.perClient.delete(client);
  };
}

/** Each published change, serialized once for every socket it goes to. */
const changeWire = new WeakMap<Recording, string>();

function changeMessage(rec: Recording): string {
  let wire = changeWire.get(rec);
  if (wire === undefined) {
    const message: LiveMessage = {
      type: "change",
      recording: toRecordingView(rec),
    };
    wire = JSON.stringify(message);
    changeWire.set(rec, wire);
  }
  return wire;
}

/** What a socket follows: one recording, or a page of all of them. */
export type LiveScope =
  | { kind: "recording"; id: string }
  | { kind: "list"; page: PageQuery };

/**
 * Answers a WebSocket upgrade for a scope: a 426 when the request is not an
 * upgrade, a 403 for a page of a foreign origin, a 404 for an unknown
 * recording and a 503 past a socket cap (for `client`, the client's
 * address), all before upgrading.
 */
export async function acceptLiveSocket(
  ctx: AppContext,
  req: Request,
  scope: LiveScope,
  client: string,
): Promise<Response> {
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    throw new UpgradeRequiredError();
  }
  if (!isAllowedOrigin(req, ctx.config.corsOrigins)) {
    throw new ForbiddenOriginError(req.headers.get("origin") ?? "");
  }
  if (scope.kind === "recording") await getRecording(ctx, scope.id);
  const release = takeSocketSlot(ctx, client);
  try {
    const { socket, response } = upgradeWebSocket(req);
    followScope(ctx, socket, scope, release);
    return response;
  } catch (err) {
    release();
    throw err;
  }
}

function followScope(
  ctx: AppContext,
  socket: WebSocket,
  scope: LiveScope,
  release: () => void,
): void {
  let unsubscribe: (() => void) | undefined;
  let closed = false;
  let held: Recording[] | null = [];

  function sendText(text: string) {
    if (socket.readyState !== WebSocket.OPEN) return;
    if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      socket.close(1013, "too far behind; reconnect for a fresh snapshot");
      return;
    }
    socket.send(text);
  }

  function onChange(rec: Recording) {
    if (held) held.push(rec);
    else sendText(changeMessage(rec));
  }

  function end() {
    closed = true;
    held = null;
    unsubscribe?.();
    unsubscribe = undefined;
    release();
  }

  socket.onopen = async () => {
    if (closed) return;
    // Until the snapshot says which recordings a page shows, follow them
    // all (held); then only those in scope.
    unsubscribe = scope.kind === "recording"
      ? ctx.live.follow({ ids: [scope.id] }, onChange)
      : ctx.live.subscribe(onChange);
    let snapshot: LiveMessage;
    let inScope: (rec: Recording) => boolean = () => true;
    try {
      if (scope.kind === "recording") {
        const rec = await getRecording(ctx, scope.id);
        snapshot = {
          type: "snapshot",
          recording: toRecordingView(rec),
          now: Date.now(),
        };
      } else {
        const page: DashboardView = await loadDashboard(ctx, scope.page);
        const ids = page.recordings.map((r) => r.id);
        const oldest = page.recordings.at(-1)?.createdAt ?? 0;
        // The first page sees new recordings appear; a later page only
        // follows the recordings it shows.
        const follows = scope.page.cursor !== null
          ? { ids }
          : page.nextCursor !== null
          ? { ids, createdSince: oldest }
          : { createdSince: -Infinity };
        const idSet = new Set(ids);
        inScope = (rec) =>
          idSet.has(rec.id) ||
          (follows.createdSince !== undefined &&
            rec.createdAt >= follows.createdSince);
        if (!closed) {
          unsubscribe?.();
          unsubscribe = ctx.live.follow(follows, onChange);
        }
        snapshot = {
          type: "snapshot",
          recordings: page.recordings,
          cursor: page.nextCursor,
          now: page.now,
        };
      }
    } catch (err) {
      if (!closed) {
        const reason = err instanceof AppError
          ? err.message
          : "could not read the snapshot";
        if (!(err instanceof AppError)) {
          ctx.log.error("live snapshot failed", { error: String(err) });
        }
        socket.close(
          err instanceof AppError ? 1008 : 1011,
          reason.slice(0, 120),
        );
      }
      return;
    }
    if (closed) return;
    sendText(JSON.stringify(snapshot));
    const pending = held ?? [];
    held = null;
    for (const rec of pending) {
      if (inScope(rec)) sendText(changeMessage(rec));
    }
  };
  socket.onclose = end;
  socket.onerror = end;
}
