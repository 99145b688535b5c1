/**
 * A throwaway PostgreSQL server for tests: `initdb` into a temp folder, a
 * free loopback TCP port, the unix socket inside that folder, one database.
 * Runs the server as the `postgres` OS user when the tests run as root
 * (PostgreSQL refuses to run as root).
 */

/** Whether the tests run in CI, where a missing PostgreSQL is a failure. */
export const IN_CI = (Deno.env.get("CI") ?? "") !== "" &&
  Deno.env.get("CI") !== "false";

/** A running test server. */
export interface TestPostgres {
  /** `postgres://` URL of the test database. */
  url: string;
  port: number;
  /** Stops the server and removes its folder. */
  stop(): Promise<void>;
  /** Stops the server (fast shutdown) and starts it again on the same port and data. */
  restart(options?: { downMs?: number }): Promise<void>;
}

/**
 * The folder of `initdb` and `pg_ctl` (env `PG_BIN_DIR` when set, else the
 * newest /usr/lib/postgresql/N/bin, else PATH), or null when not installed.
 */
export function postgresBinDir(): string | null {
  const fromEnv = Deno.env.get("PG_BIN_DIR");
  const candidates = fromEnv ? [fromEnv] : [];
  if (!fromEnv) {
    try {
      const versions = [...Deno.readDirSync("/usr/lib/postgresql")]
        .map((e) => e.name)
        .filter((n) => /^\d+$/.test(n))
        .sort((a, b) => Number(b) - Number(a));
      for (const v of versions) candidates.push(`/usr/lib/postgresql/${v}/bin`);
    } catch {
      // not the Debian layout
    }
    for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
      if (dir) candidates.push(dir);
    }
  }
  for (const dir of candidates) {
    try {
      Deno.statSync(`${dir}/initdb`);
      Deno.statSync(`${dir}/pg_ctl`);
      return dir;
    } catch {
      // next
    }
  }
  return null;
}

/** Whether a PostgreSQL server can be started here (its tools are installed). */
export function havePostgres(): boolean {
  return postgresBinDir() !== null;
}

/**
 * `Deno.test` options for a test that needs PostgreSQL: ignored when it is
 * missing, except in CI where the test runs and fails in {@link startPostgres}.
 */
export function needsPostgres(): { ignore: boolean } {
  return { ignore: !havePostgres() && !IN_CI };
}

const isRoot = Deno.uid() === 0;

async function run(
  cmd: string,
  args: string[],
  asPostgres = true,
): Promise<string> {
  const [file, argv] = asPostgres && isRoot
    ? ["runuser", ["-u", "postgres", "--", cmd, ...args]]
    : [cmd, args];
  const out = await new Deno.Command(file, {
    args: argv,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}): ${text}`);
  }
  return text;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Stops the server once this process is gone without having stopped it (a
 * test killed by a timeout), from a detached shell that polls every second.
 */
async function watchdog(bin: string, dir: string): Promise<void> {
  const stop = `${
    isRoot ? "runuser -u postgres -- " : ""
  }${bin}/pg_ctl stop -m immediate -D ${dir}/data`;
  const script =
    `while kill -0 ${Deno.pid} 2>/dev/null && [ -d ${dir}/data ]; do sleep 1; done; ` +
    `if [ -d ${dir}/data ]; then ${stop}; rm -rf ${dir}; fi`;
  await new Deno.Command("sh", {
    args: ["-c", `(${script}) >/dev/null 2>&1 &`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
}

/**
 * Starts a throwaway PostgreSQL with one database (`tapedeck`). Throws when
 * PostgreSQL is not installed. `fsync` stays on unless `fast` is set, so
 * latency figures resemble a real server.
 */
export async function startPostgres(
  options: { fast?: boolean } = {},
): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (!bin) {
    throw new Error(
      "PostgreSQL is not installed (no initdb/pg_ctl; on Debian: apt-get install postgresql)",
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-pg-" });
  if (isRoot) {
    const pw = await run("id", ["-u", "postgres"], false).catch(() => "");
    const uid = Number(pw.trim());
    const gid = Number((await run("id", ["-g", "postgres"], false)).trim());
    if (!uid) throw new Error("running as root but no `postgres` OS user");
    await Deno.chown(dir, uid, gid);
  }
  const data = `${dir}/data`;
  await run(`${bin}/initdb`, [
    "-D",
    data,
    "-U",
    "postgres",
    "-A",
    "trust",
    "-E",
    "UTF8",
    "--locale=C",
    "--no-sync",
  ]);
  let port = freePort();
  const settings = [
    "-c listen_addresses=127.0.0.1",
    `-c unix_socket_directories=${dir}`,
    "-c max_connections=200",
    "-c shared_buffers=32MB",
    ...(options.fast ? ["-c fsync=off", "-c synchronous_commit=off"] : []),
  ];
  const start = async () => {
    await run(`${bin}/pg_ctl`, [
      "start",
      "-w",
      "-t",
      "60",
      "-D",
      data,
      "-l",
      `${dir}/server.log`,
      "-o",
      [...settings, `-c port=${port}`].join(" "),
    ]);
  };
  const stopServer = async () => {
    await run(`${bin}/pg_ctl`, ["stop", "-w", "-m", "fast", "-D", data]);
  };
  for (let attempt = 0;; attempt++) {
    try {
      await start();
      break;
    } catch (e) {
      if (attempt >= 3) throw e;
      port = freePort(); // the port was taken meanwhile
    }
  }
  try {
    await run(`${bin}/createdb`, [
      "-h",
      "127.0.0.1",
      "-p",
      String(port),
      "-U",
      "postgres",
      "tapedeck",
    ], false);
  } catch (e) {
    await stopServer().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
  await watchdog(bin, dir);
  let stopped = false;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/tapedeck`,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopServer().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
    async restart(opts = {}) {
      await stopServer();
      if (opts.downMs) await new Promise((r) => setTimeout(r, opts.downMs));
      await start();
    },
  };
}
