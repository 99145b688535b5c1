/**
 * The app on its shared backends: a named subset of the API, tus, job and
 * live test files runs again in a child `deno test` with TEST_BACKEND
 * (tests/support/backend.ts), once on PostgreSQL (`postgres`: every
 * server's KV is a PostgreSQL database, SHARED_KV on) and once on
 * PostgreSQL and S3 (`postgres+s3`: recordings in a Swift bucket too).
 * PostgreSQL and Swift are started here once and handed to the child. Each
 * test of the child is reported as a step of this one, with its time.
 *
 * The subset covers each feature without the slow browser and fault files:
 * the recording API and processing (api_flow, api_chunks, api_errors), tus
 * (tus), jobs (jobs), live sockets and the cross-instance feed (ws), and
 * two instances on one KV (ingest_commit, stop_race).
 */

import assert from "node:assert/strict";
import { ROOT } from "./helpers.ts";
import {
  handOver,
  stopBackendServers,
  type TestBackend,
} from "./support/backend.ts";
import {
  havePostgres,
  IN_CI,
  startPostgres,
  type TestPostgres,
} from "./support/postgres.ts";
import { SWIFT_IGNORE } from "./support/swift.ts";

/** The test files run on each shared backend. */
export const BACKEND_FILES = [
  "api_flow_test.ts",
  "api_chunks_test.ts",
  "api_errors_test.ts",
  "tus_test.ts",
  "jobs_test.ts",
  "ws_test.ts",
  "ingest_commit_test.ts",
  "stop_race_test.ts",
];

/** One test of the child's JUnit report. */
interface CaseResult {
  file: string;
  name: string;
  seconds: number;
  failure?: string;
  skipped: boolean;
}

function unescapeXml(text: string): string {
  return text.replace(/&(quot|apos|lt|gt|amp|#(\d+)|#x([0-9a-f]+));/gi, (
    _,
    name: string,
    dec?: string,
    hexCode?: string,
  ) => {
    if (dec) return String.fromCodePoint(Number(dec));
    if (hexCode) return String.fromCodePoint(parseInt(hexCode, 16));
    return { quot: '"', apos: "'", lt: "<", gt: ">", amp: "&" }[
      name.toLowerCase()
    ]!;
  });
}

function attributes(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/([\w:-]+)="([^"]*)"/g)) {
    out[m[1]] = unescapeXml(m[2]);
  }
  return out;
}

/** The test cases of a JUnit report as `deno test --junit-path` writes it. */
function parseJunit(xml: string): CaseResult[] {
  const cases: CaseResult[] = [];
  const re = /<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const m of xml.matchAll(re)) {
    const attrs = attributes(m[1]);
    const body = m[2] ?? "";
    const failure = /<(failure|error)\b([^>]*?)(?:\/>|>([\s\S]*?)<\/\1>)/.exec(
      body,
    );
    cases.push({
      file: (attrs.classname ?? "").replace(/^.*\//, ""),
      name: attrs.name ?? "?",
      seconds: Number(attrs.time ?? 0),
      skipped: /<skipped\b/.test(body),
      failure: failure
        ? unescapeXml(
          (failure[3] ?? "").trim() || attributes(failure[2]).message ||
            "failed",
        )
        : undefined,
    });
  }
  return cases;
}

/** Runs the subset in a child `deno test` on `backend` and returns its results. */
async function runChild(
  backend: TestBackend,
  env: Record<string, string>,
): Promise<
  { cases: CaseResult[]; code: number; output: string; proof: string }
> {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-backends-" });
  try {
    const junit = `${dir}/junit.xml`;
    const proof = `${dir}/proof.txt`;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "test",
        "-A",
        // `deno task test` type-checks these files already.
        "--no-check",
        "--reporter=dot",
        `--junit-path=${junit}`,
        ...BACKEND_FILES.map((f) => `tests/${f}`),
      ],
      cwd: ROOT,
      env: {
        ...env,
        TEST_BACKEND: backend,
        TEST_BACKEND_PROOF: proof,
        NO_COLOR: "1",
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    });
    const out = await child.output();
    const output = new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr);
    const xml = await Deno.readTextFile(junit).catch(() => "");
    return {
      cases: parseJunit(xml),
      code: out.code,
      output,
      proof: await Deno.readTextFile(proof).catch(() => ""),
    };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function runOnBackend(
  t: Deno.TestContext,
  backend: TestBackend,
): Promise<void> {
  const started = performance.now();
  let pg: TestPostgres | undefined;
  const saved = Deno.env.get("TEST_BACKEND");
  try {
    pg = await startPostgres({ fast: true });
    Deno.env.set("TEST_BACKEND", backend);
    Deno.env.set("TEST_PG_URL", pg.url);
    const env = await handOver();
    const { cases, code, output, proof } = await runChild(backend, env);
    const perFile = new Map<string, number>();
    for (const c of cases) {
      perFile.set(c.file, (perFile.get(c.file) ?? 0) + c.seconds);
      const label = `${c.file}: ${c.name} (${c.seconds.toFixed(1)} s)`;
      await t.step({
        name: label,
        ignore: c.skipped,
        fn() {
          if (c.failure) throw new Error(c.failure);
        },
      });
    }
    console.log(
      `${backend}: ${cases.length} tests in ${
        ((performance.now() - started) / 1000).toFixed(0)
      } s; ${
        [...perFile].map(([f, s]) => `${f} ${s.toFixed(0)} s`).join(", ")
      }`,
    );
    const tail = output.split("\n").slice(-60).join("\n");
    const files = new Set(cases.map((c) => c.file));
    assert.deepEqual(
      BACKEND_FILES.filter((f) => !files.has(f)),
      [],
      `every file reported tests:\n${tail}`,
    );
    assert.equal(code, 0, `the child deno test failed:\n${tail}`);
    const lines = proof.trim().split("\n").filter(Boolean);
    assert.ok(lines.length > 0, "the servers were given the backend");
    for (const line of lines) {
      const [kv, storage] = line.split(" ");
      assert.match(kv, /^postgres:\/\//, line);
      if (backend === "postgres+s3") assert.match(storage, /^s3:\/\//, line);
    }
  } finally {
    if (saved === undefined) Deno.env.delete("TEST_BACKEND");
    else Deno.env.set("TEST_BACKEND", saved);
    Deno.env.delete("TEST_PG_URL");
    await stopBackendServers();
    await pg?.stop();
  }
}

const PG_IGNORE = !havePostgres() && !IN_CI;

Deno.test({
  name:
    `backends: the API, tus, job and live tests pass with the KV on PostgreSQL (${BACKEND_FILES.length} files)`,
  ignore: PG_IGNORE,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: (t) => runOnBackend(t, "postgres"),
});

Deno.test({
  name:
    `backends: the API, tus, job and live tests pass with the KV on PostgreSQL and recordings in S3 (${BACKEND_FILES.length} files)`,
  ignore: PG_IGNORE || SWIFT_IGNORE,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: (t) => runOnBackend(t, "postgres+s3"),
});
