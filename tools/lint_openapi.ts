/**
 * Lints the OpenAPI document (lib/openapi/document.ts) with Redocly's
 * engine (`@redocly/openapi-core`, the library behind `redocly lint`),
 * in process and offline: its `recommended` rules, every warning counted
 * as a problem, with the few rules below set apart for a stated reason.
 * tests/openapi_test.ts runs it; `deno run -A tools/lint_openapi.ts`
 * prints the problems (exit 1 when there are any).
 */

import { createConfig, lintFromString } from "@redocly/openapi-core";
import { openApiDocument } from "../lib/openapi/document.ts";

/** Rules of `recommended` changed for this API, and why. */
const RULES: Record<string, "off" | "error" | "warn"> = {
  // The SPEC's paths are written with the slash (`/create/`, docs/api.md);
  // both forms are served.
  "no-path-trailing-slash": "off",
  // The live sockets' handshakes succeed with 101, never a 2xx; every
  // other operation having a 2xx is checked by tests/openapi_test.ts.
  "operation-2xx-response": "off",
};

/** One problem the linter found. */
export interface LintProblem {
  rule: string;
  severity: string;
  message: string;
  /** JSON pointer into the document. */
  where: string;
}

/** Lints a document; resolves with every problem (none: it passes). */
export async function lintOpenApi(
  document: unknown = openApiDocument(),
): Promise<LintProblem[]> {
  const config = await createConfig({
    extends: ["recommended"],
    rules: RULES,
  });
  const problems = await lintFromString({
    source: JSON.stringify(document, null, 2),
    absoluteRef: "/openapi.json",
    config,
  });
  return problems.map((p) => ({
    rule: p.ruleId,
    severity: p.severity,
    message: p.message,
    where: p.location?.[0]?.pointer ?? "",
  }));
}

if (import.meta.main) {
  const problems = await lintOpenApi();
  for (const p of problems) {
    console.log(`${p.severity} ${p.rule} at ${p.where}: ${p.message}`);
  }
  console.log(`${problems.length} problem(s)`);
  if (problems.length > 0) Deno.exit(1);
}
