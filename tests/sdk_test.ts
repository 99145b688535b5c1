/**
 * The recorder SDK as the server serves it (lib/http/sdk_assets.ts, built
 * by tools/build_sdk.ts): `/sdk/recorder.js` and `/sdk/recorder.d.ts` for
 * any origin with caching headers, hashed names that never change, and
 * declarations a TypeScript client type-checks against. The browser runs
 * are tests/browser_sdk_test.ts.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startTestServer } from "./helpers.ts";

Deno.test("sdk: /sdk/recorder.js and /sdk/recorder.d.ts are served to any origin, revalidated, and pinned under their hashes", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-sdk-" });
  try {
    const res = await fetch(`${server.url}/sdk/recorder.js`, {
      headers: { Origin: "https://elsewhere.example" },
    });
    const js = await res.text();
    assert.equal(res.status, 200, js);
    assert.match(res.headers.get("content-type") ?? "", /^text\/javascript/);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.equal(
      res.headers.get("cross-origin-resource-policy"),
      "cross-origin",
    );
    assert.equal(res.headers.get("cache-control"), "public, max-age=300");
    const etag = res.headers.get("etag");
    assert.ok(etag, "an ETag");
    const types = res.headers.get("x-typescript-types") ?? "";
    assert.match(types, /^\/sdk\/recorder\.[0-9a-f]{20}\.d\.ts$/);
    const selfTypes = js.match(/^\/\/ @ts-self-types="\.\/([^"]+)"\n/);
    assert.ok(selfTypes, "the module names its declarations");
    assert.equal(`/sdk/${selfTypes[1]}`, types);
    assert.match(js, /export\{[^}]*\bcreateRecorder\b/);

    const again = await fetch(`${server.url}/sdk/recorder.js`, {
      headers: { "If-None-Match": etag },
    });
    assert.equal(again.status, 304);
    await again.body?.cancel();

    const hashed = await fetch(`${server.url}/sdk/${etag.replaceAll('"', "")}`);
    assert.equal(hashed.status, 200);
    assert.equal(
      hashed.headers.get("cache-control"),
      "public, max-age=31536000, immutable",
    );
    assert.equal(await hashed.text(), js);

    const dts = await fetch(`${server.url}/sdk/recorder.d.ts`);
    const declarations = await dts.text();
    assert.equal(dts.status, 200);
    assert.match(dts.headers.get("content-type") ?? "", /typescript/);
    assert.equal(dts.headers.get("access-control-allow-origin"), "*");
    assert.equal(
      await (await fetch(`${server.url}${types}`)).text(),
      declarations,
    );
    assert.doesNotMatch(
      declarations,
      /^\s*(import|export)\b.*\bfrom\s+["']/m,
      "self-contained",
    );

    // A client written against the declarations type-checks, and a wrong
    // use does not.
    await Deno.writeTextFile(join(dir, "recorder.d.ts"), declarations);
    const client = (body: string) =>
      `import type { createRecorder as Create } from "./recorder.d.ts";
declare const createRecorder: typeof Create;
export async function run(button: HTMLButtonElement): Promise<string> {
${body}
}
`;
    await Deno.writeTextFile(
      join(dir, "good.ts"),
      client(
        `  const rec = await createRecorder({ server: "https://tapedeck.example", source: "screen" });
  rec.on("progress", (p) => console.log(p.uploadedChunks, p.recordedChunks));
  rec.on("status", (s) => { button.disabled = s.phase === "recording"; });
  await rec.start();
  const result = await rec.stop();
  const done = await rec.waitForProcessing(result.videoId, { intervalMs: 500 });
  return done.status;`,
      ),
    );
    await Deno.writeTextFile(
      join(dir, "bad.ts"),
      client(`  const rec = await createRecorder({ source: "microwave" });
  rec.on("progress", (p) => console.log(p.uploadedFrames));
  return await rec.start();`),
    );
    const check = (file: string) =>
      new Deno.Command(Deno.execPath(), {
        args: ["check", "--no-config", "--quiet", file],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
    const good = await check("good.ts");
    assert.ok(good.success, new TextDecoder().decode(good.stderr));
    const bad = await check("bad.ts");
    const errors = new TextDecoder().decode(bad.stderr);
    assert.ok(!bad.success);
    assert.match(errors, /microwave/);
    assert.match(errors, /uploadedFrames/);

    const missing = await fetch(`${server.url}/sdk/other.js`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const post = await fetch(`${server.url}/sdk/recorder.js`, {
      method: "POST",
    });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
