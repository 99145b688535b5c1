/**
 * A fault-injecting HTTP/1.1 proxy on loopback, in front of one endpoint (in
 * tests: Swift's S3 API). It works on the TCP stream, so the client's own
 * framing (Content-Length, chunked), Host header and signature reach the
 * target untouched; each connection carries one request (`Connection: close`
 * is added both ways). A rule picks what happens to each request: pass it,
 * answer 500/503 with an S3-style error, stall it, or cut the connection in
 * the middle of the request or response body. A request in absolute form
 * (`GET http://bucket.host/key`, as sent to a forward proxy) is forwarded to
 * the target too, so a client can reach virtual-host style names that do not
 * resolve.
 */

/** What the rule sees of a request. */
export interface FaultRequest {
  /** 0 for the first request through this proxy, then 1, 2... */
  index: number;
  method: string;
  /** Path and query, as sent (origin form). */
  path: string;
  headers: Headers;
}

/**
 * What to do with a request:
 * - `"pass"`: forward it.
 * - `"fail500"` / `"fail503"`: read the request body, answer with that
 *   status and an S3 XML error (`InternalError` / `ServiceUnavailable`).
 *   `{ fail: status, code }` answers any status with that error code.
 * - `"stall"`: never answer; keep the connection open until the client
 *   gives up (or the proxy stops). `{ stall: ms }` holds the request that
 *   long, then forwards it.
 * - `"drop"`: forward the request, let the target answer in full, and
 *   close the client's connection without a byte of the answer (the client
 *   cannot tell whether the request took effect).
 * - `"cut"`: forward, then drop both connections in the middle of the
 *   body: of the request when it has one (after half of it), else of the
 *   response (after its head and half of its body).
 *   `{ cutRequestAfter: n }` / `{ cutResponseAfter: n }` cut after `n`
 *   body bytes.
 */
export type FaultAction =
  | "pass"
  | "fail500"
  | "fail503"
  | "stall"
  | "cut"
  | "drop"
  | { fail: number; code?: string }
  | { stall: number }
  | { cutRequestAfter: number }
  | { cutResponseAfter: number };

/** A request seen, with what was done and the body bytes moved (live). */
export interface FaultLogEntry extends FaultRequest {
  action: FaultAction;
  /** Request body bytes forwarded to the target so far. */
  bytesUp: number;
  /** Response body bytes forwarded to the client so far. */
  bytesDown: number;
}

/** Picks the action for each request. */
export type FaultRule = (req: FaultRequest) => FaultAction;

/** A running fault proxy. */
export interface FaultProxy {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  port: number;
  /** Every request seen so far, with the action taken. */
  log: FaultLogEntry[];
  /** Replaces the rule for the requests that come next. */
  setRule(rule: FaultRule): void;
  /** Closes the listener and every open connection. */
  stop(): Promise<void>;
}

const CRLF2 = new Uint8Array([13, 10, 13, 10]);
const enc = new TextEncoder();
const dec = new TextDecoder();

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (hay[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Reads until the end of an HTTP head; returns it and the bytes after. */
async function readHead(
  conn: Deno.Conn,
): Promise<{ head: string; rest: Uint8Array } | null> {
  let buf: Uint8Array = new Uint8Array(0);
  const chunk = new Uint8Array(16384);
  for (;;) {
    const end = indexOf(buf, CRLF2);
    if (end >= 0) {
      return {
        head: dec.decode(buf.subarray(0, end)),
        rest: buf.slice(end + 4),
      };
    }
    if (buf.length > 1 << 20) return null;
    const n = await conn.read(chunk).catch(() => null);
    if (n === null) return null;
    buf = concat(buf, chunk.subarray(0, n));
  }
}

function parseHead(head: string) {
  const [first, ...lines] = head.split("\r\n");
  const headers = new Headers();
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i > 0) {
      headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
    }
  }
  return { first, lines, headers };
}

/** The head with Connection: close instead of any connection headers. */
function closeHead(first: string, lines: string[]): Uint8Array {
  const kept = lines.filter((l) =>
    !/^(connection|keep-alive|proxy-connection)\s*:/i.test(l)
  );
  return enc.encode([first, ...kept, "Connection: close", "", ""].join("\r\n"));
}

function bodyLength(headers: Headers): number | "chunked" | 0 {
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) return "chunked";
  return Number(headers.get("content-length") ?? 0) || 0;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Reads and drops a request body (known length, or chunked to its end). */
async function drainBody(
  conn: Deno.Conn,
  rest: Uint8Array,
  length: number | "chunked" | 0,
): Promise<void> {
  if (length === 0) return;
  const chunk = new Uint8Array(65536);
  let seen = rest.length;
  let tail = rest.slice(-5);
  const done = () =>
    length === "chunked"
      ? dec.decode(tail).endsWith("0\r\n\r\n")
      : seen >= length;
  while (!done()) {
    const n = await conn.read(chunk).catch(() => null);
    if (n === null) return;
    seen += n;
    tail = concat(tail, chunk.subarray(0, n)).slice(-5);
  }
}

/**
 * Starts a fault proxy on 127.0.0.1 (a free port) in front of `target`
 * (`http://host:port`). The default rule passes everything.
 */
export function startFaultProxy(
  target: string,
  { rule = () => "pass" }: { rule?: FaultRule } = {},
): Promise<FaultProxy> {
  const to = new URL(target);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const log: FaultProxy["log"] = [];
  let current = rule;
  let index = 0;
  let stopping = false;

  const close = (c: Deno.Conn | undefined) => {
    if (!c) return;
    open.delete(c);
    try {
      c.close();
    } catch { /* already closed */ }
  };

  async function handle(client: Deno.Conn): Promise<void> {
    let upstream: Deno.Conn | undefined;
    try {
      const req = await readHead(client);
      if (!req) return;
      const { first, lines, headers } = parseHead(req.head);
      const [method, rawTarget, version] = first.split(" ");
      let path = rawTarget;
      if (/^https?:\/\//i.test(rawTarget)) {
        const abs = new URL(rawTarget);
        path = abs.pathname + abs.search;
      }
      const info: FaultRequest = { index: index++, method, path, headers };
      let action: FaultAction;
      try {
        action = current(info);
      } catch {
        action = "pass";
      }
      const entry: FaultLogEntry = {
        ...info,
        action,
        bytesUp: 0,
        bytesDown: 0,
      };
      log.push(entry);
      const length = bodyLength(headers);

      const fail = action === "fail500"
        ? { fail: 500, code: "InternalError" }
        : action === "fail503"
        ? { fail: 503, code: "ServiceUnavailable" }
        : typeof action === "object" && "fail" in action
        ? action
        : null;
      if (fail) {
        await drainBody(client, req.rest, length);
        const status = fail.fail;
        const text = status === 503 ? "Service Unavailable" : "Injected";
        const code = fail.code ?? "InternalError";
        const body =
          `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>injected by the fault proxy</Message><RequestId>fault-${info.index}</RequestId></Error>`;
        await writeAll(
          client,
          enc.encode(
            `HTTP/1.1 ${status} ${text}\r\nContent-Type: application/xml\r\nContent-Length: ${
              enc.encode(body).length
            }\r\nConnection: close\r\n\r\n${body}`,
          ),
        );
        return;
      }
      if (action === "stall") {
        const sink = new Uint8Array(65536);
        while (await client.read(sink).catch(() => null) !== null) {
          // hold until the client gives up or the proxy stops
        }
        return;
      }
      if (typeof action === "object" && "stall" in action) {
        await new Promise((r) => setTimeout(r, action.stall));
        if (stopping) return;
      }

      let cutRequest = Infinity;
      let cutResponse = Infinity;
      if (action === "cut") {
        if (length === "chunked") cutRequest = 32768;
        else if (length > 0) cutRequest = Math.floor(length / 2);
        else cutResponse = -1;
      } else if (typeof action === "object" && "cutRequestAfter" in action) {
        cutRequest = action.cutRequestAfter;
      } else if (typeof action === "object" && "cutResponseAfter" in action) {
        cutResponse = action.cutResponseAfter;
      }

      upstream = await Deno.connect({
        hostname: to.hostname,
        port: Number(to.port || 80),
      });
      open.add(upstream);
      const up = upstream;
      await writeAll(up, closeHead(`${method} ${path} ${version}`, lines));

      const forwardRequest = (async () => {
        let sent = 0;
        let data: Uint8Array | null = req.rest;
        const chunk = new Uint8Array(65536);
        while (data) {
          if (sent + data.length > cutRequest) {
            await writeAll(
              up,
              data.subarray(0, Math.max(0, cutRequest - sent)),
            );
            close(up);
            close(client);
            return;
          }
          if (data.length) await writeAll(up, data);
          sent += data.length;
          entry.bytesUp = sent;
          const n = await client.read(chunk).catch(() => null);
          data = n === null ? null : chunk.subarray(0, n);
        }
      })().catch(() => {
        // the target stopped reading (it may have answered early): the
        // answer is still forwarded below
      });

      const res = await readHead(up);
      if (!res) return;
      if (action === "drop") {
        const sink = new Uint8Array(65536);
        while (await up.read(sink).catch(() => null) !== null) {
          // let the target finish its answer
        }
        return;
      }
      const r = parseHead(res.head);
      const resLength = bodyLength(r.headers);
      if (cutResponse < 0) {
        cutResponse = typeof resLength === "number" && resLength > 1
          ? Math.floor(resLength / 2)
          : 0;
      }
      await writeAll(client, closeHead(r.first, r.lines));
      let sent = 0;
      let data: Uint8Array | null = res.rest;
      const chunk = new Uint8Array(65536);
      while (data) {
        if (sent + data.length > cutResponse) {
          await writeAll(
            client,
            data.subarray(0, Math.max(0, cutResponse - sent)),
          );
          return;
        }
        if (data.length) await writeAll(client, data);
        sent += data.length;
        entry.bytesDown = sent;
        const n = await up.read(chunk).catch(() => null);
        data = n === null ? null : chunk.subarray(0, n);
      }
      void forwardRequest;
    } catch {
      // a dropped connection on either side ends this exchange
    } finally {
      close(upstream);
      close(client);
    }
  }

  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      open.add(conn);
      const task = handle(conn);
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })();

  return Promise.resolve({
    url: `http://127.0.0.1:${port}`,
    port,
    log,
    setRule(next: FaultRule) {
      current = next;
    },
    async stop() {
      stopping = true;
      try {
        listener.close();
      } catch { /* closed */ }
      for (const c of [...open]) close(c);
      await accepting;
      await Promise.allSettled([...tasks]);
    },
  });
}
