/**
 * The server side of `/ws` (every recording) and `/ws/<id>` (one recording).
 * On open the socket subscribes to the process's {@link LiveHub}, reads a
 * snapshot and sends it, then sends each committed change in scope as it is
 * published; changes that arrive while the snapshot is read are sent right
 * after it, so nothing is lost between the two. Closing the socket (either
 * side, or an error) drops the subscription.
 */

import type { AppContext } from "../core/context.ts";
import {
  type DashboardView,
  loadDashboard,
  type PageQuery,
} from "../http/dashboard.ts";
import { AppError } from "../core/errors.ts";
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
      } may not open live sockets here; add the origin to CORS_ORIGINS.`,
    );
  }
}

/**
 * Whether a WebSocket handshake may go ahead: clients that send no Origin
 * (scripts), the service's own pages, and origins CORS allows. Browsers do
 * not apply CORS to WebSockets, so this is checked here.
 */
export function isAllowedOrigin(req: Request, allowed: string[]): boolean {
  const origin = req.headers.get("origin");
  if (!origin || allowed.includes("*") || allowed.includes(origin)) return true;
  try {
    return new URL(origin).host === req.headers.get("host");
  } catch {
    return false;
  }
}

/** What a socket follows: one recording, or a page of all of them. */
export type LiveScope =
  | { kind: "recording"; id: string }
  | { kind: "list"; page: PageQuery };

/**
 * Answers a WebSocket upgrade for a scope: a 426 when the request is not an
 * upgrade, a 403 for a page of a foreign origin and a 404 for an unknown
 * recording, all before upgrading.
 */
export async function acceptLiveSocket(
  ctx: AppContext,
  req: Request,
  scope: LiveScope,
): Promise<Response> {
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    throw new UpgradeRequiredError();
  }
  if (!isAllowedOrigin(req, ctx.config.corsOrigins)) {
    throw new ForbiddenOriginError(req.headers.get("origin") ?? "");
  }
  if (scope.kind === "recording") await getRecording(ctx, scope.id);
  const { socket, response } = Deno.upgradeWebSocket(req);
  followScope(ctx, socket, scope);
  return response;
}

function followScope(
  ctx: AppContext,
  socket: WebSocket,
  scope: LiveScope,
): void {
  let unsubscribe: (() => void) | undefined;
  let closed = false;
  let held: Recording[] | null = [];
  let inScope: (rec: Recording) => boolean = scope.kind === "recording"
    ? (rec) => rec.id === scope.id
    : () => true;

  function send(message: LiveMessage) {
    if (socket.readyState !== WebSocket.OPEN) return;
    if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      socket.close(1013, "too far behind; reconnect for a fresh snapshot");
      return;
    }
    socket.send(JSON.stringify(message));
  }

  function release() {
    closed = true;
    held = null;
    unsubscribe?.();
    unsubscribe = undefined;
  }

  socket.onopen = async () => {
    if (closed) return;
    unsubscribe = ctx.live.subscribe((rec) => {
      if (!inScope(rec)) return;
      if (held) held.push(rec);
      else send({ type: "change", recording: toRecordingView(rec) });
    });
    let snapshot: LiveMessage;
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
        const ids = new Set(page.recordings.map((r) => r.id));
        const oldest = page.recordings.at(-1)?.createdAt ?? 0;
        if (scope.page.cursor !== null) {
          inScope = (rec) => ids.has(rec.id);
        } else if (page.nextCursor !== null) {
          inScope = (rec) => ids.has(rec.id) || rec.createdAt >= oldest;
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
    send(snapshot);
    const pending = held ?? [];
    held = null;
    for (const rec of pending) {
      if (inScope(rec)) {
        send({ type: "change", recording: toRecordingView(rec) });
      }
    }
  };
  socket.onclose = release;
  socket.onerror = release;
}
