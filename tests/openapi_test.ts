/**
 * The OpenAPI document (lib/openapi/, served at /openapi.json) is kept
 * true: every path and method it lists is served by the app and every route
 * the app serves (Hono's `app.routes`) is in it or listed as not API
 * (lib/openapi/not_api.ts); every example request gets its documented
 * status, with a body of the documented schema, from a real server; and it
 * passes Redocly's recommended rules (tools/lint_openapi.ts).
 */

import assert from "node:assert/strict";
import { inspectRoutes } from "hono/dev";
import type { JsonObject } from "../lib/openapi/builders.ts";
import { openApiDocument } from "../lib/openapi/document.ts";
import { NOT_API_ROUTES } from "../lib/openapi/not_api.ts";
import { lintOpenApi } from "../tools/lint_openapi.ts";
import { missingTool, startTestServer } from "./helpers.ts";
import {
  type DocOperation,
  Fixtures,
  operationsOf,
  schemaChecker,
  sendExample,
} from "./openapi_helpers.ts";

/** `/add_data/{id}/` as Hono writes it: `/add_data/:id`. */
function honoPath(docPath: string): string {
  const path = docPath.replace(/\{(\w+)\}/g, ":$1");
  return path.length > 1 ? path.replace(/\/+$/, "") : path;
}

/** A served pattern with an optional last parameter stands for two paths. */
function expand(path: string): string[] {
  const m = path.match(/^(.*)\/:(\w+)\?$/);
  return m ? [m[1] || "/", `${m[1]}/:${m[2]}`] : [path];
}

Deno.test("openapi: every route the app serves is documented or listed as not API, and every documented operation is served", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const served = inspectRoutes(server.service.app)
      .filter((r) => !r.isMiddleware)
      .flatMap((r) =>
        expand(r.path).map((path) => ({ method: r.method, path }))
      );
    const has = (method: string, path: string) =>
      served.some((r) => r.method === method && r.path === path);
    const documented = operationsOf(openApiDocument()).map((op) => ({
      method: op.method.toUpperCase(),
      path: honoPath(op.path),
    }));
    const isDocumented = (method: string, path: string) =>
      documented.some((d) =>
        d.path === path &&
        (method === "ALL" || d.method === method ||
          (method === "GET" && d.method === "HEAD"))
      );
    const notApi = (method: string, path: string) =>
      NOT_API_ROUTES.some((r) => r.path === path && r.method === method);

    const undocumented = served.filter((r) =>
      !isDocumented(r.method, r.path) && !notApi(r.method, r.path)
    ).map((r) => `${r.method} ${r.path}`);
    assert.deepEqual(
      [...new Set(undocumented)],
      [],
      `these routes are served but neither in the OpenAPI document nor in NOT_API_ROUTES:\n  ${
        [...new Set(undocumented)].join("\n  ")
      }\nDescribe each API route in lib/openapi/ (with example requests), or list a page or static file in lib/openapi/not_api.ts with why.`,
    );

    const unserved = documented.filter((d) =>
      !has(d.method, d.path) && !(d.method === "HEAD" && has("GET", d.path))
    ).map((d) => `${d.method} ${d.path}`);
    assert.deepEqual(
      unserved,
      [],
      `the OpenAPI document lists operations the app does not serve:\n  ${
        unserved.join("\n  ")
      }`,
    );

    const stale = NOT_API_ROUTES.filter((r) => !has(r.method, r.path))
      .map((r) => `${r.method} ${r.path}`);
    assert.deepEqual(stale, [], "NOT_API_ROUTES lists routes not served");
    const both = NOT_API_ROUTES.filter((r) =>
      r.method !== "ALL" && isDocumented(r.method, r.path)
    ).map((r) => `${r.method} ${r.path}`);
    assert.deepEqual(both, [], "routes both documented and listed as not API");
  } finally {
    await server.close();
  }
});

Deno.test("openapi: every operation has an id, example requests with documented statuses, and a success answer", () => {
  const doc = openApiDocument();
  const problems: string[] = [];
  for (const op of operationsOf(doc)) {
    const where = `${op.method.toUpperCase()} ${op.path}`;
    const statuses = Object.keys(op.operation.responses as JsonObject);
    if (!op.operation.operationId) problems.push(`${where}: no operationId`);
    if (!statuses.some((s) => /^(2\d\d|101)$/.test(s))) {
      problems.push(`${where}: no success answer`);
    }
    if (op.examples.length === 0) problems.push(`${where}: no example request`);
    const names = new Set<string>();
    for (const ex of op.examples) {
      if (names.has(ex.name)) {
        problems.push(`${where}: example ${ex.name} twice`);
      }
      names.add(ex.name);
      if (!statuses.includes(String(ex.status))) {
        problems.push(
          `${where}: example ${ex.name} expects ${ex.status}, not a documented answer (${
            statuses.join(", ")
          })`,
        );
      }
    }
  }
  assert.deepEqual(problems, []);
});

Deno.test("openapi: the document passes Redocly's recommended rules, which do catch a broken one", async () => {
  const problems = await lintOpenApi();
  assert.deepEqual(
    problems.map((p) => `${p.severity} ${p.rule} at ${p.where}: ${p.message}`),
    [],
  );
  const broken = openApiDocument();
  (broken.paths as JsonObject)["/create/"] = {
    post: { responses: { "200": { content: {} } } },
  };
  const found = await lintOpenApi(broken);
  assert.ok(
    found.some((p) => p.rule === "struct"),
    `the linter let a response without a description through: ${
      JSON.stringify(found)
    }`,
  );
});

Deno.test("openapi: GET /openapi.json serves the document to any origin", async () => {
  const server = await startTestServer({ RUN_WORKER: "false" });
  try {
    const res = await fetch(`${server.url}/openapi.json`, {
      headers: { Origin: "https://elsewhere.example" },
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.deepEqual(await res.json(), openApiDocument());
  } finally {
    await server.close();
  }
});

const ffmpegMissing = await missingTool("ffmpeg");

Deno.test({
  name:
    "openapi: every example request gets its documented status and a body of the documented schema from a real server",
  ignore: ffmpegMissing,
  async fn() {
    const doc = openApiDocument();
    const check = schemaChecker(doc);
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-openapi-" });
    const common = { CREATE_RATE_PER_MINUTE: "0", COMPLETE_GRACE_MS: "0" };
    const open = await startTestServer(common);
    const secured = await startTestServer({
      ...common,
      API_KEYS: "example-key",
      REQUIRE_UPLOAD_TOKEN: "true",
      PRIVATE_RECORDINGS: "true",
    });
    const servers = {
      default: { url: open.url, fixtures: new Fixtures(open.url, false, dir) },
      secured: {
        url: secured.url,
        fixtures: new Fixtures(secured.url, true, dir),
      },
    };
    const failures: string[] = [];
    let sent = 0;
    try {
      const run = async (op: DocOperation) => {
        for (const ex of op.examples) {
          const where =
            `${op.method.toUpperCase()} ${op.path} example "${ex.name}"`;
          const target = servers[ex.settings ?? "default"];
          const fixture = await target.fixtures.make(ex.given);
          const res = await sendExample(target.url, op, ex, fixture);
          sent++;
          const text = await res.text();
          if (res.status !== ex.status) {
            failures.push(
              `${where}: expected ${ex.status}, got ${res.status} ${
                text.slice(0, 300)
              }`,
            );
            continue;
          }
          const answer = (op.operation.responses as JsonObject)[
            String(ex.status)
          ] as JsonObject;
          const schema = ((answer.content as JsonObject | undefined)?.[
            "application/json"
          ] as JsonObject | undefined)?.schema as JsonObject | undefined;
          if (!schema || op.method === "head" || ex.status === 304) continue;
          if (
            !/^application\/json/.test(res.headers.get("content-type") ?? "")
          ) {
            failures.push(
              `${where}: answered ${res.headers.get("content-type")}, not JSON`,
            );
            continue;
          }
          const wrong = check(schema, JSON.parse(text));
          if (wrong) {
            failures.push(
              `${where}: the body does not fit its schema: ${wrong}`,
            );
          }
        }
      };
      // One operation after another: fixtures share the two servers.
      for (const op of operationsOf(doc)) await run(op);
    } finally {
      await open.close();
      await secured.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
    assert.deepEqual(
      failures,
      [],
      `${failures.length} of ${sent} examples failed`,
    );
    assert.ok(sent > 50, `only ${sent} examples`);
  },
});
