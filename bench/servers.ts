/**
 * The servers under test, each run as its own process on 127.0.0.1:0 over a
 * fresh data folder: tapedeck itself (`main.ts`), the bare Deno append
 * server (`bench/bare_server.ts`) and the tus peer (`bench/tus_server.mjs`
 * on Node.js with `@tus/server` and `@tus/file-store` from npm).
 */

import { fileURLToPath } from "node:url";

/** The project root folder. */
export const ROOT = fileURLToPath(new URL("../", import.meta.url));
/** The bench folder. */
export const BENCH = fileURLToPath(new URL("./", import.meta.url));
/** Where the tus peer is installed from npm (git-ignored). */
export const PEER_DIR = `${BENCH}.peer`;

/** Which server a process runs. */
export type ServerKind = "tapedeck" | "bare" | "tus";

/** A server process that is listening. */
export interface ServerProcess {
  kind: ServerKind;
  /** Base URL without a trailing slash. */
  url: string;
  pid: number;
  dataDir: string;
  /** Everything it printed so far. */
  output(): string;
  /** Stops it (SIGTERM, then SIGKILL after `graceMs`) and waits. */
  stop(graceMs?: number): Promise<void>;
}

/** Spawns `command` and resolves once it prints "listening on http://.../". */
export async function spawnListening(
  kind: ServerKind,
  command: string,
  args: string[],
  dataDir: string,
  env: Record<string, string>,
  cwd = ROOT,
): Promise<ServerProcess> {
  const child = new Deno.Command(command, {
    args,
    cwd,
    env: { DATA_DIR: dataDir, ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const { promise, resolve, reject } = Promise.withResolvers<string>();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const piece of stream) {
      text = (text + decoder.decode(piece, { stream: true })).slice(-65536);
      const m = text.match(/listening on (http:\/\/[^/\s]+)\//);
      if (m) resolve(m[1]);
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  child.status.then(() =>
    reject(new Error(`${kind} server exited before listening:\n${text}`))
  );
  const timer = setTimeout(
    () => reject(new Error(`${kind} server did not start:\n${text}`)),
    60_000,
  );
  const url = await promise.finally(() => clearTimeout(timer));
  let stopped: Promise<void> | undefined;
  return {
    kind,
    url,
    pid: child.pid,
    dataDir,
    output: () => text,
    stop(graceMs = 5000) {
      stopped ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch {
          // already gone
        }
        const kill = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // already gone
          }
        }, graceMs);
        await child.status;
        clearTimeout(kill);
        await pumps;
      })();
      return stopped;
    },
  };
}

/**
 * The environment tapedeck runs with in the bench. Every simulated browser
 * comes from 127.0.0.1, so the per-address create rate limit is off, and
 * the step-up leaves many recordings open, so their cap is raised.
 */
export const TAPEDECK_ENV: Record<string, string> = {
  PORT: "0",
  HOSTNAME: "127.0.0.1",
  MIN_FREE_BYTES: "0",
  CREATE_RATE_PER_MINUTE: "0",
  MAX_OPEN_RECORDINGS: "1000000",
};

/** `NAME=VALUE,NAME=VALUE` as an environment (`what` names it in errors). */
export function parseEnvList(
  text: string,
  what = "settings",
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of text.split(",").filter(Boolean)) {
    const at = pair.indexOf("=");
    if (at <= 0) throw new Error(`${what} want NAME=VALUE, got "${pair}"`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return env;
}

let tapedeckRoot = ROOT;
let extraEnv: Record<string, string> = {};

/**
 * Settings every tapedeck server of the run gets on top of
 * {@link TAPEDECK_ENV}, e.g. `HEADER_TIMEOUT_MS=0` to measure without the
 * slow-client listener.
 */
export function setTapedeckEnv(env: Record<string, string>): void {
  extraEnv = { ...env };
}

/** Runs tapedeck from another checkout (e.g. an exported commit). */
export function setTapedeckRoot(root: string): void {
  tapedeckRoot = root.endsWith("/") ? root : `${root}/`;
}

/**
 * The environment and `deno run ...` arguments of the `serve` task in the checkout's
 * deno.json (what `deno task start` runs after the build), so the bench
 * measures the server exactly as users start it, as one process whose pid
 * it samples. Checkouts without that task run `deno run -A main.ts`.
 */
export async function serveCommand(
  root = tapedeckRoot,
): Promise<{ args: string[]; env: Record<string, string> }> {
  const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  const task: string | undefined = config.tasks?.serve;
  const words = task?.trim().split(/\s+/) ?? [];
  const env: Record<string, string> = {};
  while (/^[A-Z_]+=/.test(words[0] ?? "")) {
    const [name, ...value] = words.shift()!.split("=");
    env[name] = value.join("=");
  }
  if (words[0] !== "deno" || words[1] !== "run" || words.includes("&&")) {
    return { args: ["run", "-A", `${root}main.ts`], env: {} };
  }
  return {
    args: words.slice(1).map((w) => w.endsWith(".ts") ? `${root}${w}` : w),
    env,
  };
}

/** Starts tapedeck (the `serve` task of deno.json) over `dataDir`. */
export async function startTapedeck(
  dataDir: string,
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const serve = await serveCommand();
  return await spawnListening(
    "tapedeck",
    Deno.execPath(),
    serve.args,
    dataDir,
    { ...serve.env, ...TAPEDECK_ENV, ...extraEnv, ...env },
    tapedeckRoot,
  );
}

/** Starts the bare Deno append server over `dataDir`. */
export function startBare(dataDir: string): Promise<ServerProcess> {
  return spawnListening(
    "bare",
    Deno.execPath(),
    [
      "run",
      "-A",
      `${BENCH}bare_server.ts`,
    ],
    dataDir,
    {},
  );
}

/** Starts the tus peer on Node.js over `dataDir` (needs {@link installPeer}). */
export function startTus(dataDir: string): Promise<ServerProcess> {
  return spawnListening("tus", "node", [`${BENCH}tus_server.mjs`], dataDir, {
    PEER_DIR,
  });
}

/** Starts a server of the given kind. */
export function startServer(
  kind: ServerKind,
  dataDir: string,
): Promise<ServerProcess> {
  if (kind === "tapedeck") return startTapedeck(dataDir);
  if (kind === "bare") return startBare(dataDir);
  return startTus(dataDir);
}

/** The versions of the peer packages, read from their package.json. */
export async function peerVersions(): Promise<Record<string, string>> {
  const versions: Record<string, string> = {};
  for (const name of ["@tus/server", "@tus/file-store"]) {
    try {
      const pkg = JSON.parse(
        await Deno.readTextFile(
          `${PEER_DIR}/node_modules/${name}/package.json`,
        ),
      );
      versions[name] = pkg.version;
    } catch {
      versions[name] = "not installed";
    }
  }
  return versions;
}

/**
 * Installs `@tus/server` and `@tus/file-store` into bench/.peer with npm,
 * unless they are there already.
 */
export async function installPeer(): Promise<void> {
  const have = await peerVersions();
  if (!Object.values(have).includes("not installed")) return;
  await Deno.mkdir(PEER_DIR, { recursive: true });
  const out = await new Deno.Command("npm", {
    args: [
      "install",
      "--prefix",
      PEER_DIR,
      "--no-audit",
      "--no-fund",
      "--loglevel=error",
      "@tus/server@2",
      "@tus/file-store@2",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `npm install of the tus peer failed: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
}
