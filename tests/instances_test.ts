/**
 * Several instances: a shared KV with local-disk storage is refused at
 * start-up by the server and by the worker, with a message that says what
 * to set; tests that run several instances in one process on one data
 * folder may (`sameProcess`), and those instances share one local storage.
 */

import assert from "node:assert/strict";
import { loadConfig } from "../lib/core/config.ts";
import { closeContext, openContext } from "../lib/core/context.ts";
import { ConfigError } from "../lib/core/errors.ts";
import { ROOT, startTestServer } from "./helpers.ts";
import { onS3 } from "./support/backend.ts";

async function runUntilExit(
  entry: string,
  env: Record<string, string>,
): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}${entry}`],
    cwd: ROOT,
    env: { PORT: "0", HOSTNAME: "127.0.0.1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    output: new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr),
  };
}

Deno.test("instances: a shared KV with local-disk storage is refused at start-up by main.ts and worker.ts, saying to set STORAGE_URL or SHARED_KV=false", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-refuse-" });
  try {
    const cases: [string, Record<string, string>][] = [
      // Refused before the KV is opened: no database needs to be there.
      ["main.ts", { KV_PATH: "postgres://tapedeck:pw@127.0.0.1:1/tapedeck" }],
      ["worker.ts", { KV_PATH: "postgres://tapedeck:pw@127.0.0.1:1/tapedeck" }],
      ["main.ts", { SHARED_KV: "true" }],
    ];
    for (const [entry, env] of cases) {
      const { code, output } = await runUntilExit(entry, {
        DATA_DIR: dataDir,
        STORAGE_URL: "",
        ...env,
      });
      assert.equal(code, 1, output);
      assert.match(output, /cannot start: SHARED_KV is on/);
      assert.match(output, /STORAGE_URL=s3:\/\/bucket\/prefix/);
      assert.match(output, /SHARED_KV=false/);
      assert.doesNotMatch(output, /pw@/, "the password is not printed");
      assert.doesNotMatch(output, /\s+at\s+\S+:\d+:\d+/, "no stack trace");
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("instances: openContext refuses a shared KV with local-disk storage unless every instance is in this process", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-refuse-" });
  const config = loadConfig({
    DATA_DIR: dataDir,
    SHARED_KV: "true",
    MIN_FREE_BYTES: "0",
  });
  try {
    await assert.rejects(openContext(config), ConfigError);
    const ctx = await openContext(config, { sameProcess: true });
    await closeContext(ctx);
    const lone = await openContext(
      loadConfig({ DATA_DIR: dataDir, MIN_FREE_BYTES: "0" }),
    );
    await closeContext(lone);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test({
  name:
    "instances: instances of one process on one data folder share one local storage, until the last one closes",
  ignore: onS3(),
  async fn() {
    const a = await startTestServer({ SHARED_KV: "true" });
    const b = await startTestServer({
      DATA_DIR: a.dataDir,
      SHARED_KV: "true",
      RUN_WORKER: "false",
    });
    const storage = a.service.ctx.storage;
    assert.equal(b.service.ctx.storage, storage);
    await b.close();
    const c = await startTestServer({
      DATA_DIR: a.dataDir,
      SHARED_KV: "true",
      RUN_WORKER: "false",
    });
    assert.equal(c.service.ctx.storage, storage, "still held by A");
    await c.close();
    const other = await startTestServer({ RUN_WORKER: "false" });
    assert.notEqual(other.service.ctx.storage, storage, "another folder");
    await other.close();
    await a.close();
  },
});
