/**
 * A real OpenStack Swift with its S3 API (s3api + tempauth) on loopback, for
 * tests: memcached, a proxy and account, container and object servers on
 * free 127.0.0.1 ports, single-replica rings, and every config file, ring and
 * device in one temp folder (/etc/swift is never written, and the hash
 * prefix and storage policies come from the folder's swift.conf).
 *
 * By default the four servers are Swift's own WSGI apps (loaded from their
 * config files by `loadapp`) served on their own ports by one Python process,
 * as Swift's in-process functional tests do: it starts in about 2 s and 90 MB
 * where four processes (`separateProcesses`, each `run_wsgi` with
 * `workers = 0`) take 4x the memory and CPU to start. A small Python launcher
 * builds the 1-replica rings with Swift's `RingBuilder` (what
 * `swift-ring-builder` drives: one import instead of nine CLI runs), points
 * Swift at the temp folder's swift.conf, drops to the `swift` user when run
 * as root, logs to files in the folder, and exits (removing the folder) when
 * this Deno process dies, so a killed test run leaves nothing behind.
 */

import { AwsClient } from "aws4fetch";

/** A running Swift, as an S3 endpoint. */
export interface SwiftS3 {
  /** The S3 endpoint, e.g. `http://127.0.0.1:41234` (path-style). */
  endpoint: string;
  /** The region s3api expects in signatures (its `location`). */
  region: string;
  /** tempauth user `test:tester`, used as the S3 access key id. */
  accessKeyId: string;
  /** The tempauth key, used as the S3 secret. */
  secretAccessKey: string;
  /** The domain s3api accepts for virtual-host style (`<bucket>.<domain>`). */
  storageDomain: string;
  /** The temp folder with configs, rings, devices and logs. */
  dir: string;
  /** Milliseconds from the call to S3 answering a bucket PUT. */
  startMs: number;
  /** The combined log of every server (for failure messages). */
  logs(): Promise<string>;
  /** Stops every process it started and removes the temp folder. */
  stop(): Promise<void>;
}

const PY = "/usr/bin/python3";
const BINARIES = [
  PY,
  "/usr/bin/memcached",
  "/usr/bin/swift-proxy-server",
  "/usr/bin/swift-account-server",
  "/usr/bin/swift-container-server",
  "/usr/bin/swift-object-server",
  "/usr/bin/swift-ring-builder",
];
const SWIFT_PKG =
  "/usr/lib/python3/dist-packages/swift/common/middleware/s3api";

/** Whether the Swift and memcached packages are installed here. */
export function haveSwift(): boolean {
  try {
    for (const path of [...BINARIES, SWIFT_PKG]) Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether tests run in CI, where a missing Swift fails instead of skipping. */
export const IN_CI = (Deno.env.get("CI") ?? "") !== "" &&
  Deno.env.get("CI") !== "false";

/** The `ignore` value for a test that needs Swift. */
export const SWIFT_IGNORE = !haveSwift() && !IN_CI;

const LAUNCHER = String.raw`
import logging, os, signal, subprocess, sys, threading, time

parent = os.getppid()
log = open(sys.argv[2], "a", buffering=1)

def watch(on_orphan):
    def run():
        while os.getppid() == parent:
            time.sleep(0.5)
        on_orphan()
        os._exit(0)
    threading.Thread(target=run, daemon=True).start()

mode = sys.argv[1]
if mode == "exec":
    child = subprocess.Popen(sys.argv[3:], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda *_: child.kill())
    orphan = []
    def orphaned():
        orphan.append(True)
        child.kill()
        time.sleep(30)
    watch(orphaned)
    code = child.wait()
    if orphan:
        # the test process died: take the servers' folder with us
        import shutil
        time.sleep(1)
        shutil.rmtree(os.path.dirname(os.path.abspath(__file__)), True)
    sys.exit(code)
else:
    user, rings, confs = sys.argv[3], sys.argv[4], sys.argv[5:]
    folder = os.path.dirname(confs[0])
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    from swift.common import utils
    # utils read /etc/swift/swift.conf (if any) on import: use ours instead
    utils.set_swift_dir(folder)
    if rings != "-":
        from swift.common.ring import RingBuilder
        for arg in rings.split(","):
            name, port = arg.split("=")
            builder = RingBuilder(6, 1, 0)
            builder.add_dev({"id": 0, "region": 1, "zone": 1,
                             "ip": "127.0.0.1", "port": int(port),
                             "device": "d1", "weight": 100, "meta": ""})
            builder.rebalance(seed=1)
            builder.save(os.path.join(folder, name + ".builder"))
            builder.get_ring().save(os.path.join(folder, name + ".ring.gz"))
        if mode == "rings":
            sys.exit(0)
    utils.ThreadSafeSysLogHandler = lambda *a, **k: logging.StreamHandler(log)
    from swift.common import constraints, storage_policy
    constraints.reload_constraints()
    storage_policy.reload_storage_policies()
    watch(lambda: None)
    if os.geteuid() == 0:
        utils.drop_privileges(user)
    from swift.common import wsgi
    section = lambda conf: os.path.basename(conf)[:-len(".conf")]
    if len(confs) == 1:
        sys.exit(wsgi.run_wsgi(confs[0], section(confs[0])))
    utils.eventlet_monkey_patch()
    import eventlet, eventlet.wsgi
    os.environ["TZ"] = "UTC+0"
    time.tzset()
    eventlet.hubs.use_hub(utils.get_hub())
    utils.clean_up_daemon_hygiene()
    threads = []
    for conf_path in confs:
        conf, logger, log_name = wsgi._initrp(conf_path, section(conf_path))
        sock = wsgi.get_socket(conf)
        app = wsgi.loadapp(conf_path, global_conf={"log_name": log_name})
        threads.append(eventlet.spawn(
            eventlet.wsgi.server, sock, app, utils.NullLogger(),
            custom_pool=wsgi.RestrictedGreenPool(size=1024),
            protocol=wsgi.SwiftHttpProtocol,
            socket_timeout=float(conf.get("client_timeout") or 60),
            capitalize_response_headers=False))
    for thread in threads:
        thread.wait()
`;

function freePorts(n: number): number[] {
  const listeners = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of listeners) l.close();
  return ports;
}

function serverConf(
  dir: string,
  port: number,
  user: string,
  app: string,
): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = ${user}
swift_dir = ${dir}
devices = ${dir}/srv
mount_check = false
disable_fallocate = true
log_level = WARNING

[pipeline:main]
pipeline = ${app}-server

[app:${app}-server]
use = egg:swift#${app}
`;
}

function proxyConf(
  dir: string,
  port: number,
  memcachePort: number,
  user: string,
  region: string,
  domain: string,
): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = ${user}
swift_dir = ${dir}
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
node_timeout = 30
conn_timeout = 2

[filter:s3api]
use = egg:swift#s3api
location = ${region}
storage_domain = ${domain}
s3_acl = false

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:${memcachePort}

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
`;
}

const SWIFT_CONF = `[swift-hash]
swift_hash_path_suffix = tapedeck-test
swift_hash_path_prefix = tapedeck-test

[storage-policy:0]
name = Policy-0
default = yes
`;

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdin: "null" }).output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) +
      new TextDecoder().decode(out.stdout);
    throw new Error(`${cmd} ${args.join(" ")} failed: ${text}`);
  }
}

const live = new Set<{ kill(): void }>();
addEventListener("unload", () => {
  for (const s of live) s.kill();
});

/**
 * Starts memcached and a single-node Swift with S3 on free loopback ports and
 * resolves once a signed S3 bucket PUT succeeds. Throws (with the servers'
 * logs) when Swift is missing or does not come up within `timeoutMs`.
 */
export async function startSwift(
  { timeoutMs = 60_000, separateProcesses = false }: {
    /** Give up (and fail) after this long. */
    timeoutMs?: number;
    /**
     * Run each server in its own process (as `swift-*-server` would) rather
     * than all four in one: slower to start and about 4x the memory, but a
     * fault test can then kill one server.
     */
    separateProcesses?: boolean;
  } = {},
): Promise<SwiftS3> {
  if (!haveSwift()) {
    throw new Error(
      "Swift is not installed (apt-get install swift swift-proxy " +
        "swift-account swift-container swift-object memcached)",
    );
  }
  const t0 = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-swift-" });
  await Deno.chmod(dir, 0o755);
  const region = "local-1";
  const storageDomain = "s3.localhost";
  const isRoot = Deno.uid() === 0;
  const user = isRoot ? "swift" : (Deno.env.get("USER") ?? "") ||
    new TextDecoder().decode(
      (await new Deno.Command("id", { args: ["-un"] }).output()).stdout,
    ).trim();
  const children: Deno.ChildProcess[] = [];
  let exited: string | undefined;
  const handle = {
    kill() {
      for (const c of children) {
        try {
          c.kill("SIGTERM");
        } catch { /* already gone */ }
      }
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* already gone */ }
    },
  };
  live.add(handle);
  const logFiles: string[] = [];
  const logs = async () => {
    let text = "";
    for (const f of logFiles) {
      const body = await Deno.readTextFile(f).catch(() => "");
      text += `--- ${f.split("/").pop()}\n${body.slice(-4000)}\n`;
    }
    return text;
  };

  const stop = async () => {
    live.delete(handle);
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    const exited = Promise.all(children.map((c) => c.status));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => {
      timer = setTimeout(() => r("late"), 3000);
    });
    if (await Promise.race([exited, late]) === "late") {
      for (const c of children) {
        try {
          c.kill("SIGKILL");
        } catch { /* already gone */ }
      }
      await exited;
    }
    clearTimeout(timer);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };

  try {
    const [proxy, account, container, object, memcache] = freePorts(5);
    const launcher = `${dir}/launch.py`;
    await Deno.mkdir(`${dir}/srv/d1`, { recursive: true });
    await Deno.mkdir(`${dir}/log`);
    await Promise.all([
      Deno.writeTextFile(launcher, LAUNCHER),
      Deno.writeTextFile(`${dir}/swift.conf`, SWIFT_CONF),
      Deno.writeTextFile(
        `${dir}/proxy-server.conf`,
        proxyConf(dir, proxy, memcache, user, region, storageDomain),
      ),
      Deno.writeTextFile(
        `${dir}/account-server.conf`,
        serverConf(dir, account, user, "account"),
      ),
      Deno.writeTextFile(
        `${dir}/container-server.conf`,
        serverConf(dir, container, user, "container"),
      ),
      Deno.writeTextFile(
        `${dir}/object-server.conf`,
        serverConf(dir, object, user, "object"),
      ),
    ]);
    if (isRoot) await run("chown", ["-R", `${user}:`, `${dir}/srv`]);

    const spawn = (name: string, args: string[]) => {
      const logFile = `${dir}/log/${name}.log`;
      logFiles.push(logFile);
      const child = new Deno.Command(PY, {
        args: [launcher, args[0], logFile, ...args.slice(1)],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      children.push(child);
      child.status.then((s) => {
        exited ??= `${name} (code ${s.code}, signal ${s.signal})`;
      });
      return child;
    };
    spawn("memcached", [
      "exec",
      "/usr/bin/memcached",
      "-l",
      "127.0.0.1",
      "-p",
      String(memcache),
      "-U",
      "0",
      "-m",
      "16",
      "-t",
      "1",
      ...(isRoot ? ["-u", user] : []),
    ]);
    const rings = `account=${account},container=${container},object=${object}`;
    const apps = ["account", "container", "object", "proxy"];
    const conf = (app: string) => `${dir}/${app}-server.conf`;
    if (separateProcesses) {
      await run(PY, [
        launcher,
        "rings",
        `${dir}/log/rings.log`,
        user,
        rings,
        conf("proxy"),
      ]);
      for (const app of apps) spawn(app, ["swift", user, "-", conf(app)]);
    } else {
      spawn("swift", ["swift", user, rings, ...apps.map(conf)]);
    }

    const endpoint = `http://127.0.0.1:${proxy}`;
    const accessKeyId = "test:tester";
    const secretAccessKey = "testing";
    const aws = new AwsClient({
      accessKeyId,
      secretAccessKey,
      region,
      service: "s3",
      retries: 0,
    });
    const probe = `${endpoint}/tapedeck-probe-${crypto.randomUUID()}`;
    const deadline = t0 + timeoutMs;
    let last = "";
    // The proxy error-limits a backend that refused 10 connections for a
    // minute: wait for the backends to listen before asking the proxy.
    for (const port of [account, container, object]) {
      for (;;) {
        if (exited) throw new Error(`a Swift process exited: ${exited}`);
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch (err) {
          last = `port ${port}: ${err}`;
        }
        if (performance.now() > deadline) {
          throw new Error(`Swift did not listen in time: ${last}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    for (;;) {
      if (exited) throw new Error(`a Swift process exited: ${exited}`);
      try {
        const res = await aws.fetch(probe, {
          method: "PUT",
          signal: AbortSignal.timeout(2000),
        });
        last = `${res.status} ${await res.text()}`;
        if (res.ok) break;
      } catch (err) {
        last = String(err);
      }
      if (performance.now() > deadline) {
        throw new Error(`Swift did not answer S3 in time: ${last}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const del = await aws.fetch(probe, { method: "DELETE" });
    await del.body?.cancel();
    const startMs = performance.now() - t0;
    return {
      endpoint,
      region,
      accessKeyId,
      secretAccessKey,
      storageDomain,
      dir,
      startMs,
      logs,
      stop,
    };
  } catch (err) {
    const text = await logs();
    await stop();
    throw new Error(`${(err as Error).message}\n${text}`);
  }
}
