/**
 * The backend the app under test runs on, chosen by `TEST_BACKEND`:
 *
 * - `local` (the default): a KV file and the data folder, as a lone
 *   instance runs;
 * - `postgres`: `KV_PATH` at a PostgreSQL database of its own per data
 *   folder (so a test that restarts a server on its folder finds its KV
 *   again), SHARED_KV on as for any PostgreSQL KV;
 * - `postgres+s3`: the same, and `STORAGE_URL` at a Swift S3 bucket, one
 *   prefix per data folder.
 *
 * tests/helpers.ts applies it to every server a test starts. The PostgreSQL
 * server (and Swift) is started once per test process, when first needed,
 * unless the parent process hands one over (`TEST_PG_URL`, and the
 * `TEST_S3_*` variables of {@link s3Settings}): tests/backends_test.ts starts
 * them once for all the test files it runs, and has every server's KV and
 * storage written to `TEST_BACKEND_PROOF`, to check they were used.
 */

import { createHash } from "node:crypto";
import { resolve } from "node:path";
import postgres from "postgres";
import { startPostgres, type TestPostgres } from "./postgres.ts";
import { startSwift, type SwiftS3 } from "./swift.ts";

/** The backends a test run can choose. */
export type TestBackend = "local" | "postgres" | "postgres+s3";

const BACKENDS: readonly TestBackend[] = ["local", "postgres", "postgres+s3"];

/** The backend of this test process (`TEST_BACKEND`, default `local`). */
export function testBackend(): TestBackend {
  const raw = (Deno.env.get("TEST_BACKEND") ?? "").trim().toLowerCase();
  if (raw === "") return "local";
  if (!BACKENDS.includes(raw as TestBackend)) {
    throw new Error(
      `TEST_BACKEND must be one of ${BACKENDS.join(", ")}, got "${raw}"`,
    );
  }
  return raw as TestBackend;
}

/** Whether the app under test keeps its KV in PostgreSQL. */
export function onPostgres(): boolean {
  return testBackend() !== "local";
}

/** Whether the app under test stores recordings in S3. */
export function onS3(): boolean {
  return testBackend() === "postgres+s3";
}

let pgServer: Promise<TestPostgres> | undefined;

/**
 * A URL of a database on the test PostgreSQL server: the one handed over in
 * `TEST_PG_URL`, else one started (fast: no fsync) for this process.
 */
async function adminUrl(): Promise<string> {
  const given = Deno.env.get("TEST_PG_URL");
  if (given) return given;
  pgServer ??= startPostgres({ fast: true });
  return (await pgServer).url;
}

const databases = new Map<string, Promise<string>>();

function folderKey(dataDir: string): string {
  try {
    return Deno.realPathSync(dataDir);
  } catch {
    return resolve(dataDir);
  }
}

function databaseName(key: string): string {
  return `td_${createHash("sha1").update(key).digest("hex").slice(0, 20)}`;
}

async function adminQuery(text: string): Promise<void> {
  const sql = postgres(await adminUrl(), {
    max: 1,
    onnotice: () => {},
    connect_timeout: 10,
    max_lifetime: null, // its timer would outlive end() (lib/kv/postgres.ts)
  });
  try {
    await sql.unsafe(text);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/**
 * The PostgreSQL URL of the KV of a data folder: a database made for it on
 * first use and kept while the folder is in use.
 */
export function databaseFor(dataDir: string): Promise<string> {
  const key = folderKey(dataDir);
  let url = databases.get(key);
  if (!url) {
    const name = databaseName(key);
    url = (async () => {
      try {
        await adminQuery(`create database ${name}`);
      } catch (err) {
        // 42P04: it exists (made by another test process of this run)
        if ((err as { code?: string }).code !== "42P04") throw err;
      }
      const base = new URL(await adminUrl());
      base.pathname = `/${name}`;
      return base.href;
    })();
    url.catch(() => databases.delete(key));
    databases.set(key, url);
  }
  return url;
}

/** Drops the database (and S3 objects) of a data folder that is gone. */
export async function dropBackendState(dataDir: string): Promise<void> {
  const key = folderKey(dataDir);
  const url = databases.get(key);
  if (!url) return;
  databases.delete(key);
  await url.then(
    () =>
      adminQuery(`drop database if exists ${databaseName(key)} with (force)`),
    () => {},
  ).catch(() => {});
}

/** The S3 endpoint and credentials the app under test stores in. */
export interface S3Settings {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
}

let swiftServer: Promise<{ swift: SwiftS3; bucket: string }> | undefined;

/**
 * The test S3: the one handed over in `TEST_S3_ENDPOINT`, `TEST_S3_REGION`,
 * `TEST_S3_ACCESS_KEY_ID`, `TEST_S3_SECRET_ACCESS_KEY` and `TEST_S3_BUCKET`,
 * else a Swift started for this process with a bucket made in it.
 */
export async function s3Settings(): Promise<S3Settings> {
  const endpoint = Deno.env.get("TEST_S3_ENDPOINT");
  if (endpoint) {
    return {
      endpoint,
      region: Deno.env.get("TEST_S3_REGION") ?? "local-1",
      accessKeyId: Deno.env.get("TEST_S3_ACCESS_KEY_ID") ?? "",
      secretAccessKey: Deno.env.get("TEST_S3_SECRET_ACCESS_KEY") ?? "",
      bucket: Deno.env.get("TEST_S3_BUCKET") ?? "tapedeck",
    };
  }
  swiftServer ??= (async () => {
    const swift = await startSwift();
    const bucket = "tapedeck";
    await createBucket(swift, bucket);
    return { swift, bucket };
  })();
  const { swift, bucket } = await swiftServer;
  return {
    endpoint: swift.endpoint,
    region: swift.region,
    accessKeyId: swift.accessKeyId,
    secretAccessKey: swift.secretAccessKey,
    bucket,
  };
}

/**
 * The settings that make a server store in `bucket` under `prefix` on an S3
 * endpoint (a test's Swift, or a handed-over S3).
 */
export function storageEnv(
  s3: Pick<
    S3Settings,
    "endpoint" | "region" | "accessKeyId" | "secretAccessKey"
  >,
  bucket: string,
  prefix: string,
): Record<string, string> {
  return {
    STORAGE_URL: `s3://${bucket}/${prefix}`,
    S3_ENDPOINT: s3.endpoint,
    AWS_REGION: s3.region,
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
  };
}

/** Makes a bucket (path-style PUT, signed). */
export async function createBucket(
  swift: Pick<
    SwiftS3,
    "endpoint" | "region" | "accessKeyId" | "secretAccessKey"
  >,
  bucket: string,
): Promise<void> {
  const { AwsClient } = await import("aws4fetch");
  const client = new AwsClient({
    accessKeyId: swift.accessKeyId,
    secretAccessKey: swift.secretAccessKey,
    region: swift.region,
    service: "s3",
  });
  const res = await client.fetch(`${swift.endpoint}/${bucket}`, {
    method: "PUT",
  });
  await res.body?.cancel();
  if (!res.ok && res.status !== 409) {
    throw new Error(`creating bucket ${bucket} failed: ${res.status}`);
  }
}

/** Stops the PostgreSQL and Swift servers this process started, if any. */
export async function stopBackendServers(): Promise<void> {
  const pg = pgServer;
  const swift = swiftServer;
  pgServer = undefined;
  swiftServer = undefined;
  databases.clear();
  await Promise.all([
    pg?.then((s) => s.stop(), () => {}),
    swift?.then((s) => s.swift.stop(), () => {}),
  ]);
}

/** The environment variables that hand this process's servers to a child `deno test`. */
export async function handOver(): Promise<Record<string, string>> {
  const env: Record<string, string> = { TEST_BACKEND: testBackend() };
  if (onPostgres()) env.TEST_PG_URL = await adminUrl();
  if (onS3()) {
    const s3 = await s3Settings();
    Object.assign(env, {
      TEST_S3_ENDPOINT: s3.endpoint,
      TEST_S3_REGION: s3.region,
      TEST_S3_ACCESS_KEY_ID: s3.accessKeyId,
      TEST_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      TEST_S3_BUCKET: s3.bucket,
    });
  }
  return env;
}

/**
 * The settings that put a server of data folder `dataDir` on this process's
 * backend, unless `env` names them already (a test that picks its own KV).
 * `lone`: the server runs as its own process with no other instance on its
 * folder (a spawned child); on `postgres` (local-disk storage) it then runs
 * with SHARED_KV=false, since a shared KV with local-disk storage is refused.
 */
export async function backendEnv(
  dataDir: string,
  env: Record<string, string> = {},
  options: { lone?: boolean } = {},
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  if (!onPostgres()) return out;
  if (env.KV_PATH === undefined) out.KV_PATH = await databaseFor(dataDir);
  if (onS3()) {
    if (env.STORAGE_URL === undefined) {
      const s3 = await s3Settings();
      const prefix = databaseName(folderKey(dataDir));
      Object.assign(out, storageEnv(s3, s3.bucket, prefix));
    }
  } else if (
    options.lone && env.SHARED_KV === undefined && env.KV_PATH === undefined
  ) {
    out.SHARED_KV = "false";
  }
  const proof = Deno.env.get("TEST_BACKEND_PROOF");
  if (proof && Object.keys(out).length > 0) {
    await Deno.writeTextFile(
      proof,
      `${out.KV_PATH ?? "-"} ${out.STORAGE_URL ?? "-"}\n`,
      { append: true },
    );
  }
  return out;
}
