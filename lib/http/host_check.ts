/**
 * The `Host` allow-list that stops DNS rebinding (issue 12, finding 1).
 *
 * A page on `http://evil.example:8000/` whose name the attacker's DNS then
 * points at this server is, for the browser, on its own origin: it may read
 * every answer. What gives it away is the `Host` header, which is the name
 * in the page's URL. So a request is answered only when its Host is a name
 * an attacker cannot point at us:
 *
 * - an IP literal (`127.0.0.1`, `[::1]`, `192.168.1.20`): no DNS is involved,
 *   so a page with that origin was served by whoever has that address;
 * - `localhost` and `*.localhost`, which browsers resolve to loopback
 *   themselves;
 * - a name without a dot (`t`, `nas`, this machine's short name): public
 *   DNS has no such names, so only the local network's resolver (its search
 *   domain, /etc/hosts) gives them an address;
 * - this machine's own host name (`Deno.hostname()`, also with `.local`) and
 *   the address it listens on (HOSTNAME);
 * - whatever ALLOWED_HOSTS lists (`tapedeck.example.com`, `.example.com` for
 *   it and its subdomains, `*.example.com` for subdomains only).
 *
 * `ALLOWED_HOSTS=*` turns the check off. A request without a Host (HTTP/1.0,
 * some scripts) is let through: browsers always send one. Others get `421
 * Misdirected Request` with a JSON error.
 */

import type { MiddlewareHandler } from "hono";
import type { Config } from "../core/config.ts";
import { MisdirectedRequestError } from "../core/errors.ts";

/** The host name of a Host header value: lower-case, without port or trailing dot. */
export function hostName(host: string): string {
  let name = host.trim().toLowerCase();
  if (name.startsWith("[")) {
    const end = name.indexOf("]");
    return end > 0 ? name.slice(0, end + 1) : name;
  }
  const colon = name.lastIndexOf(":");
  if (colon >= 0) name = name.slice(0, colon);
  return name.endsWith(".") ? name.slice(0, -1) : name;
}

const IPV4 =
  /^(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const IPV6 = /^\[[0-9a-f:.]+\]$/;

function ownNames(config: Config): string[] {
  const names: string[] = [];
  try {
    const own = Deno.hostname().toLowerCase();
    names.push(own, `${own.split(".")[0]}.local`);
  } catch {
    // no permission to read it: IP literals and short names still work
  }
  const listen = hostName(config.hostname);
  if (listen && listen !== "0.0.0.0" && listen !== "::") names.push(listen);
  return names;
}

/** Decides which Host names this server answers for (see the module comment). */
export class HostAllowList {
  readonly any: boolean;
  #exact = new Set<string>();
  #suffixes: string[] = [];

  constructor(config: Config) {
    this.any = config.allowedHosts.includes("*");
    for (const entry of [...config.allowedHosts, ...ownNames(config)]) {
      if (entry.startsWith("*.")) this.#suffixes.push(entry.slice(1));
      else if (entry.startsWith(".")) {
        this.#suffixes.push(entry);
        this.#exact.add(entry.slice(1));
      } else this.#exact.add(hostName(entry));
    }
  }

  /** Whether a request with this Host header value is answered. */
  allows(host: string | null | undefined): boolean {
    if (this.any || host === null || host === undefined) return true;
    const name = hostName(host);
    if (!name.includes(".") || IPV4.test(name) || IPV6.test(name)) return true;
    if (name.endsWith(".localhost") || this.#exact.has(name)) return true;
    return this.#suffixes.some((s) => name.endsWith(s));
  }
}

/** Middleware refusing requests addressed to a host not on the list (421). */
export function hostCheck(config: Config): MiddlewareHandler {
  const list = new HostAllowList(config);
  return async (c, next) => {
    const host = c.req.header("host");
    if (!list.allows(host)) {
      throw new MisdirectedRequestError(
        `This server does not answer for the host name "${
          hostName(host ?? "").slice(0, 100)
        }": a page on another site may be trying DNS rebinding. If it is this server's own name, add it to ALLOWED_HOSTS.`,
      );
    }
    await next();
  };
}
