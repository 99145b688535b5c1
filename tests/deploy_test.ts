/**
 * Deno Deploy (issue 14, item 4): the server as a Deploy API instance runs
 * it, on the Deno version Deploy runs.
 *
 * An instance is started as Deploy starts one, as far as this machine can:
 * `DENO_DEPLOYMENT_ID` set, RUN_WORKER=false, no ffmpeg on PATH and no
 * FFMPEG_PATH, without `--allow-ffi` and `--allow-run`, and without
 * `--unstable-cron` (from a copy of the project whose deno.json turns on
 * only `kv`). Deploy KV cannot run here: a PostgreSQL database stands in
 * for it (`KV_PATH=postgres://...`, a KV every instance shares, as Deploy
 * KV is per app); recordings go to S3 on a local Swift. Each test runs on
 * the Deno running the tests and again on Deno 2.5.6 (what Deploy ran when
 * this was written; fetched with `npx`). The scenario wipes DATA_DIR while
 * the instance runs and reads everything back through a second instance on
 * a fresh one; SIGINT comes with chunks in flight: those that can arrive
 * within the drain are acknowledged and durable, one that cannot is
 * refused, and the process exits before Deploy's SIGKILL (5 s).
 *
 * Memory at N=100 (Deploy's 512 MB) is not tested here: it is a bench
 * figure (bench/, docs/benchmarks.md).
 *
 * The 2.5.6 runs use a copy of the project too (their own deno.lock,
 * packages from a cache of their own, no node_modules), so an older Deno
 * never rewrites the shared lockfile or node_modules. Outside CI, a 2.5.6
 * that cannot be fetched ignores its tests with a notice; in CI
 * (`CI=true`) that is a failure.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { everyMinute } from "../lib/core/every_minute.ts";
import { IN_CI, mediaBytes, pacedBody, ROOT } from "./helpers.ts";
import { createBucket } from "./support/backend.ts";
import {
  needsPostgres,
  startPostgres,
  type TestPostgres,
} from "./support/postgres.ts";
import { startSwift, SWIFT_IGNORE, type SwiftS3 } from "./support/swift.ts";
import { concatBytes } from "../common/bytes.ts";

/** The Deno that Deno Deploy ran when this was written. */
const DEPLOY_DENO = "2.5.6";

/** The test files run on {@link DEPLOY_DENO}. */
const SUBSET = [
  "api_flow_test.ts",
  "api_errors_test.ts",
  "tus_test.ts",
  "stop_race_test.ts",
  "ws_test.ts",
];

/** Deno Deploy's SIGKILL comes this long after SIGINT. */
const DEPLOY_KILL_MS = 5_000;

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const decoder = new TextDecoder();

/** A Deno binary the tests run instances with. */
interface Runtime {
  version: string;
  path: string;
  /** Extra environment of its processes. */
  env: Record<string, string>;
}

/** Deno {@link DEPLOY_DENO} from npm, or null (with a notice; CI throws). */
async function findDeployDeno(): Promise<Runtime | null> {
  const fail = (why: string) => {
    if (IN_CI) {
      throw new Error(
        `Deno ${DEPLOY_DENO} is required in CI (npx -y deno@${DEPLOY_DENO}) but could not be fetched: ${why}`,
      );
    }
    console.warn(
      `IGNORED: Deno ${DEPLOY_DENO} could not be fetched with npx (${why}), so the tests on the Deno that Deno Deploy runs are ignored`,
    );
    return null;
  };
  try {
    const out = await new Deno.Command("npx", {
      args: [
        "-y",
        `deno@${DEPLOY_DENO}`,
        "eval",
        "console.log(Deno.execPath())",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(300_000),
    }).output();
    const path = decoder.decode(out.stdout).trim().split("\n").at(-1) ?? "";
    if (!out.success || !path.startsWith("/")) {
      return fail(
        decoder.decode(out.stderr).trim().split("\n").at(-1) ||
          `exit ${out.code}`,
      );
    }
    const cache = Deno.env.get("XDG_CACHE_HOME") ??
      join(Deno.env.get("HOME") ?? "/tmp", ".cache");
    return {
      version: DEPLOY_DENO,
      path,
      env: {
        // Packages of its own: caches of two Deno versions are not mixed.
        DENO_DIR: join(cache, "tapedeck-tests", `deno-${DEPLOY_DENO}`),
        // Its built-in root certificates alone miss some registry proxies.
        DENO_TLS_CA_STORE: Deno.env.get("DENO_TLS_CA_STORE") ??
          "system,mozilla",
      },
    };
  } catch (err) {
    return fail(String(err));
  }
}

const deployDeno = await findDeployDeno();

/** The Deno running the tests. */
const currentDeno: Runtime = {
  version: Deno.version.deno,
  path: Deno.execPath(),
  env: {},
};

/** Folders not copied: packages, git, data, test and bench output. */
const NOT_COPIED = new Set([
  "node_modules",
  ".git",
  "data",
  "tests/artifacts",
  "bench/results",
  "bench/.cache",
  "bench/.peer",
]);

async function copyTree(from: string, to: string, rel = ""): Promise<void> {
  await Deno.mkdir(join(to, rel), { recursive: true });
  for await (const e of Deno.readDir(join(from, rel))) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (NOT_COPIED.has(path)) continue;
    if (e.isDirectory) await copyTree(from, to, path);
    else if (e.isFile) await Deno.copyFile(join(from, path), join(to, path));
  }
}

/**
 * A copy of the project in a temp folder, its deno.json turning on the
 * `unstable` features given, with packages from the Deno cache (no
 * node_modules folder).
 */
async function projectCopy(unstable: string[]): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-deploy-copy-" });
  await copyTree(ROOT, dir);
  const config = JSON.parse(await Deno.readTextFile(join(dir, "deno.json")));
  config.unstable = unstable;
  config.nodeModulesDir = "none";
  await Deno.writeTextFile(
    join(dir, "deno.json"),
    JSON.stringify(config, null, 2),
  );
  return dir;
}

/** The shared backends: PostgreSQL standing in for Deploy KV, and Swift. */
interface Backends {
  pg: TestPostgres;
  swift: SwiftS3;
  bucket: string;
}

let backends: Promise<Backends> | undefined;
let prefixes = 0;

function startBackends(): Promise<Backends> {
  backends ??= (async () => {
    const [pg, swift] = await Promise.all([
      startPostgres({ fast: true }),
      startSwift(),
    ]);
    const bucket = "deploy";
    await createBucket(swift, bucket);
    return { pg, swift, bucket };
  })();
  return backends;
}

/** The environment of a Deploy API instance (a prefix of its own). */
async function deployEnv(): Promise<Record<string, string>> {
  const { pg, swift, bucket } = await startBackends();
  return {
    DENO_DEPLOYMENT_ID: "tapedeck-test-deployment",
    KV_PATH: pg.url,
    STORAGE_URL: `s3://${bucket}/run-${Date.now()}-${prefixes++}`,
    S3_ENDPOINT: swift.endpoint,
    AWS_REGION: swift.region,
    AWS_ACCESS_KEY_ID: swift.accessKeyId,
    AWS_SECRET_ACCESS_KEY: swift.secretAccessKey,
    RUN_WORKER: "false",
  };
}

/** A `deno run main.ts` started as a Deploy API instance. */
interface Instance {
  url: string;
  pid: number;
  output(): string;
  /** Sends a signal; resolves with the exit status and ms from the signal. */
  stop(signal: Deno.Signal): Promise<{ code: number; ms: number }>;
}

/**
 * Starts `main.ts` of `copy` with `runtime` as Deploy runs it (see the
 * module comment): PATH is an empty folder, the environment holds only
 * what is given, and `--allow-run` and `--allow-ffi` are not granted.
 */
async function startInstance(
  runtime: Runtime,
  copy: string,
  env: Record<string, string>,
): Promise<Instance> {
  const emptyBin = await Deno.makeTempDir({ prefix: "tapedeck-nobin-" });
  const inherited: Record<string, string> = {};
  for (const name of ["HOME", "XDG_CACHE_HOME", "DENO_DIR", "TMPDIR"]) {
    const value = Deno.env.get(name);
    if (value) inherited[name] = value;
  }
  const child = new Deno.Command(runtime.path, {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-write",
      "--allow-sys",
      join(copy, "main.ts"),
    ],
    cwd: copy,
    clearEnv: true,
    env: {
      ...inherited,
      ...runtime.env,
      NO_COLOR: "1",
      PATH: emptyBin,
      PORT: "0",
      HOSTNAME: "127.0.0.1",
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  let onText = () => {};
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const d = new TextDecoder();
    for await (const piece of stream) {
      text += d.decode(piece, { stream: true });
      onText();
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const exited = child.status.then(async (s) => {
    await pumps;
    await Deno.remove(emptyBin).catch(() => {});
    return s;
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the instance did not start:\n${text}`)),
      120_000,
    );
    onText = () => {
      const m = text.match(/listening on (http:\/\/[^/\s]+)\//);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`the instance exited before it listened:\n${text}`));
    });
  }).catch(async (err) => {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
    await exited;
    throw err;
  });
  return {
    url,
    pid: child.pid,
    output: () => text,
    async stop(signal) {
      const t0 = performance.now();
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
      const status = await exited;
      return { code: status.code, ms: Math.round(performance.now() - t0) };
    },
  };
}

/** Every file and folder under `dir`, as paths relative to it. */
async function listTree(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(dir, rel))) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    out.push(e.isDirectory ? `${path}/` : path);
    if (e.isDirectory) out.push(...await listTree(dir, path));
  }
  return out.sort();
}

/** The child processes of a process (from /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`);
    out.push(...text.trim().split(/\s+/).filter(Boolean).map(Number));
  }
  return out;
}

async function create(url: string): Promise<string> {
  const res = await fetch(`${url}/create/`, { method: "POST" });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).video_id;
}

async function sendRaw(
  url: string,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  index: number,
): Promise<void> {
  const res = await fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    body: bytes,
    headers: { "content-type": "video/webm", "x-chunk-index": String(index) },
  });
  assert.equal(res.status, 200, await res.text());
}

/** A chunk as JSON base64: no length known up front, so S3 gets it spooled. */
async function sendJson(
  url: string,
  id: string,
  bytes: Uint8Array,
  index: number,
): Promise<void> {
  const blob = btoa(String.fromCharCode(...bytes));
  const res = await fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    body: JSON.stringify({ blob_data: blob, order: index }),
    headers: { "content-type": "application/json" },
  });
  assert.equal(res.status, 200, await res.text());
}

const backendIgnore = needsPostgres().ignore || SWIFT_IGNORE;

/** Fails unless `dir` holds nothing but empty scratch folders (or is gone). */
async function assertOnlyScratch(dir: string, when: string): Promise<string> {
  let listing: string[];
  try {
    listing = await listTree(dir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "(gone)";
    throw err;
  }
  for (const path of listing) {
    assert.match(
      path,
      /^(spool|work)\/$/,
      `${when}: only empty scratch folders may be left in DATA_DIR: ${path}`,
    );
  }
  return listing.length ? listing.join(" ") : "(empty)";
}

/** The source of a recording as an instance serves it (held chunks in order). */
async function source(url: string, id: string): Promise<Uint8Array> {
  const res = await fetch(`${url}/media/${id}/source`);
  assert.equal(res.status, 200, `source of ${id}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** A recording's status and chunk count as an instance answers them. */
async function status(
  url: string,
  id: string,
): Promise<{ status: string; chunks_received: number }> {
  const res = await fetch(`${url}/check_status/${id}/`);
  assert.equal(res.status, 200, `check_status of ${id}`);
  return await res.json();
}

/** The Deploy scenario on one runtime (see the module comment). */
async function apiInstanceScenario(runtime: Runtime): Promise<void> {
  const copy = await projectCopy(["kv"]);
  const temp = () => Deno.makeTempDir({ prefix: "tapedeck-deploy-" });
  const dataDir = await temp();
  const dataDir2 = await temp();
  const tmpDir = await temp();
  const env = await deployEnv();
  let a: Instance | undefined;
  let b: Instance | undefined;
  try {
    // What Deno itself may write in the project (its lockfile) aside, the
    // instance must write nothing outside DATA_DIR either.
    const projectBefore = (await listTree(copy)).filter((p) =>
      p !== "deno.lock"
    );
    a = await startInstance(runtime, copy, {
      ...env,
      DATA_DIR: dataDir,
      TMPDIR: tmpDir,
    });
    const log = a.output();
    console.log(
      `deploy figures (Deno ${runtime.version}): start-up log:\n${
        log.split("\n").filter((l) =>
          /ffmpeg|cron|page cache|storage:|KV|slow clients/.test(l)
        ).join("\n")
      }`,
    );
    // RUN_WORKER=false: ffmpeg is not looked for (PATH is an empty folder,
    // --allow-run is not granted: a search or a run would be logged as a
    // failure, or stop the start-up).
    assert.match(log, /ffmpeg: not looked for \(RUN_WORKER=false/);
    assert.doesNotMatch(log, /ffmpeg[^\n]*(was not found|could not be run)/);
    // No --unstable-cron: the sweep runs on the timer of every_minute.ts.
    assert.match(log, /tapedeck sweep: every minute by a timer/);
    assert.match(log, /page cache: not involved/);
    assert.match(log, /storage: s3:\/\/deploy\//);

    // Round 1: raw chunks (their length known: streamed into S3).
    const ids: string[] = [];
    for (let k = 0; k < 4; k++) ids.push(await create(a.url));
    const sent = new Map<string, Uint8Array[]>();
    for (const [k, id] of ids.entries()) {
      const c0 = mediaBytes(40_000, 10 + k);
      await sendRaw(a.url, id, c0, 0);
      sent.set(id, [c0]);
    }
    // Deploy may take an instance's disk away at any moment: so do we,
    // while it runs.
    await Deno.remove(dataDir, { recursive: true });
    // Round 2: JSON chunks (length known only once decoded: spooled to
    // DATA_DIR, then PUT).
    for (const [k, id] of ids.entries()) {
      const c1 = mediaBytes(30_000, 20 + k);
      await sendJson(a.url, id, c1, 1);
      sent.get(id)!.push(c1);
    }
    console.log(
      `deploy figures (Deno ${runtime.version}): DATA_DIR after 8 chunks (wiped after the first 4): ${await assertOnlyScratch(
        dataDir,
        "after 8 chunks",
      )}`,
    );
    await Deno.remove(dataDir, { recursive: true });
    assert.deepEqual(childrenOf(a.pid), [], "no subprocess was started");

    // SIGINT with four chunks arriving: three whose bodies end about 1.5 s
    // after they start (well within the drain), one whose body would take
    // 8 s (past Deploy's SIGKILL): that one must not be acknowledged.
    const third = ids.map((_, k) => mediaBytes(60_000, 30 + k));
    const pacing = ids.map((_, k) =>
      k < 3 ? { pieces: 15, gapMs: 100 } : { pieces: 40, gapMs: 200 }
    );
    const states = ids.map(() => ({ phase: "idle" }));
    const client = Deno.createHttpClient({});
    const inFlight = ids.map((id, k) =>
      fetch(`${a!.url}/add_data/${id}/`, {
        method: "POST",
        headers: { "content-type": "video/webm", "x-chunk-index": "2" },
        body: pacedBody(
          third[k],
          pacing[k].pieces,
          pacing[k].gapMs,
          states[k],
        ),
        duplex: "half",
        client,
      } as RequestInit).then(
        async (res) => ({ status: res.status, body: await res.text() }),
        (err) => ({ status: 0, body: String(err) }),
      )
    );
    const deadline = Date.now() + 10_000;
    while (!states.every((s) => s.phase === "body")) {
      assert.ok(Date.now() < deadline, "the chunks did not start");
      await delay(5);
    }
    await delay(200);
    const stopping = a.stop("SIGINT");
    const instance = a;
    a = undefined;
    await delay(100);
    const late = await fetch(`${instance.url}/check_status/${ids[0]}/`)
      .then(async (r) => `${r.status} ${(await r.text()).slice(0, 80)}`)
      .catch((err) => `no connection (${String(err).slice(0, 60)})`);
    const end = await stopping;
    const replies = await Promise.all(inFlight);
    client.close();
    console.log(
      `deploy figures (Deno ${runtime.version}): SIGINT with 3 short chunks and 1 long one in flight: answered ${
        replies.map((r) => r.status).join("/")
      }; exit ${end.code} after ${end.ms} ms; a request 100 ms after SIGINT: ${late}`,
    );
    for (const r of replies.slice(0, 3)) assert.equal(r.status, 200, r.body);
    assert.notEqual(
      replies[3].status,
      200,
      "a chunk whose body had not arrived when the process exited was acknowledged",
    );
    assert.equal(end.code, 0, instance.output());
    assert.ok(
      end.ms < DEPLOY_KILL_MS,
      `exited ${end.ms} ms after SIGINT (Deploy kills at ${DEPLOY_KILL_MS})`,
    );
    assert.match(instance.output(), /tapedeck stopped/);

    // Nothing outside DATA_DIR either.
    assert.deepEqual(
      (await listTree(copy)).filter((p) => p !== "deno.lock"),
      projectBefore,
      "the instance wrote into the project folder",
    );
    assert.deepEqual(await listTree(tmpDir), [], "files left in TMPDIR");

    // Another instance, on a fresh disk as Deploy gives one, has every
    // acknowledged chunk.
    const other = await startInstance(runtime, copy, {
      ...env,
      DATA_DIR: dataDir2,
      TMPDIR: tmpDir,
    });
    b = other;
    for (const [k, id] of ids.entries()) {
      const st = await status(other.url, id);
      assert.equal(st.status, "recording");
      if (k < 3) {
        assert.equal(st.chunks_received, 3);
        assert.deepEqual(
          await source(other.url, id),
          concatBytes([...sent.get(id)!, third[k]]),
          `recording ${k}: an acknowledged chunk is missing or changed`,
        );
      } else {
        // Refused: not held (nor held cut short); the client sends it again
        // to the other instance and nothing is lost.
        assert.equal(st.chunks_received, 2, "the refused chunk was kept");
        assert.deepEqual(
          await source(other.url, id),
          concatBytes(sent.get(id)!),
        );
        await sendRaw(other.url, id, third[k], 2);
        assert.deepEqual(
          await source(other.url, id),
          concatBytes([...sent.get(id)!, third[k]]),
        );
      }
    }
    const second = await other.stop("SIGINT");
    b = undefined;
    assert.equal(second.code, 0);
    assert.ok(second.ms < DEPLOY_KILL_MS, `exited after ${second.ms} ms`);
    await assertOnlyScratch(dataDir2, "after the second instance");
  } finally {
    await a?.stop("SIGKILL");
    await b?.stop("SIGKILL");
    for (const dir of [copy, dataDir, dataDir2, tmpDir]) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

for (
  const { runtime, label } of [
    { runtime: currentDeno, label: `Deno ${currentDeno.version}` },
    { runtime: deployDeno, label: `Deno ${DEPLOY_DENO}` },
  ]
) {
  Deno.test({
    name:
      `deploy (${label}): an API instance as Deno Deploy starts it (DENO_DEPLOYMENT_ID, RUN_WORKER=false, no ffmpeg, no --allow-ffi/--allow-run/--unstable-cron; PostgreSQL for Deploy KV, S3) keeps nothing but scratch in DATA_DIR (wiped while it runs), and on SIGINT acknowledges only durable chunks and exits within 5 s`,
    ignore: backendIgnore || runtime === null,
    sanitizeResources: false,
    async fn() {
      await apiInstanceScenario(runtime!);
    },
  });
}

Deno.test("deploy: without Deno.cron, every_minute runs the task on a timer, never two runs at once, until stopped", async () => {
  let runs = 0;
  let overlapping = 0;
  let busy = false;
  const m = everyMinute("test task", async () => {
    if (busy) overlapping++;
    busy = true;
    runs++;
    await delay(120);
    busy = false;
  }, { cron: undefined, timerMs: 30 });
  assert.match(m.description, /by a timer/);
  await delay(500);
  m.stop();
  const atStop = runs;
  await delay(200);
  assert.ok(atStop >= 2, `the timer ran the task ${atStop} times in 500 ms`);
  assert.equal(overlapping, 0, "two runs overlapped");
  assert.equal(runs, atStop, "the task ran after stop()");

  // A run that throws does not end the process; the next one runs.
  let failing = 0;
  const f = everyMinute("failing task", () => {
    failing++;
    throw new Error("boom");
  }, { cron: undefined, timerMs: 20 });
  await delay(150);
  f.stop();
  assert.ok(failing >= 2, `ran ${failing} times`);
});

Deno.test("deploy: with Deno.cron, every_minute registers the task with it and stop() aborts it", async () => {
  const calls: { name: string; schedule: string; signal?: AbortSignal }[] = [];
  let handler: (() => Promise<void> | void) | undefined;
  const fakeCron = ((
    name: string,
    schedule: string,
    options: { signal?: AbortSignal },
    fn: () => Promise<void> | void,
  ) => {
    calls.push({ name, schedule, signal: options.signal });
    handler = fn;
    return Promise.resolve();
  }) as unknown as typeof Deno.cron;
  let runs = 0;
  const m = everyMinute("cron task", () => {
    runs++;
  }, { cron: fakeCron, timerMs: 10 });
  assert.match(m.description, /by Deno\.cron/);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].schedule, "* * * * *");
  await delay(60);
  assert.equal(runs, 0, "a timer ran besides Deno.cron");
  await handler!();
  assert.equal(runs, 1);
  m.stop();
  assert.equal(calls[0].signal?.aborted, true);
});

Deno.test({
  name:
    `deploy: main.ts and worker.ts type-check, and the API, tus, stop and live test files pass, on Deno ${DEPLOY_DENO} (what Deno Deploy ran when this test was written)`,
  ignore: deployDeno === null,
  async fn() {
    const copy = await projectCopy(["kv", "cron"]);
    try {
      const env = { ...deployDeno!.env, NO_COLOR: "1" };
      const check = await new Deno.Command(deployDeno!.path, {
        args: ["check", "main.ts", "worker.ts"],
        cwd: copy,
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(
        check.success,
        `deno ${DEPLOY_DENO} check main.ts worker.ts:\n${
          decoder.decode(check.stderr).slice(-4000)
        }`,
      );
      // --no-check: tests/support's types fail with the @types/node that
      // Deno 2.5 brings (aws4fetch's RequestInit); the app's types are
      // checked above.
      const run = await new Deno.Command(deployDeno!.path, {
        args: ["test", "-A", "--no-check", ...SUBSET.map((f) => `tests/${f}`)],
        cwd: copy,
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        // A hang fails the test instead of holding the run (SIGTERM).
        signal: AbortSignal.timeout(15 * 60_000),
      }).output();
      const out = decoder.decode(run.stdout) + decoder.decode(run.stderr);
      const summary = out.match(/^(ok|FAILED) \| .*$/m)?.[0] ?? "no summary";
      const ignored = [...out.matchAll(/^(.*) \.\.\. ignored/gm)].map((m) =>
        m[1]
      );
      console.log(
        `deploy figures: on Deno ${DEPLOY_DENO}: ${summary}${
          ignored.length ? `; ignored: ${ignored.join("; ")}` : ""
        }`,
      );
      assert.ok(
        run.success,
        `deno ${DEPLOY_DENO} test ${SUBSET.join(" ")}:\n${out.slice(-8000)}`,
      );
    } finally {
      await Deno.remove(copy, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "deploy: stop the PostgreSQL and Swift of this file",
  ignore: backendIgnore,
  async fn() {
    const started = backends;
    backends = undefined;
    if (!started) return;
    const { pg, swift } = await started;
    await Promise.all([pg.stop(), swift.stop()]);
  },
});
