/**
 * Emits the recorder SDK's `.d.ts` from its entry module alone, with
 * TypeScript's isolated-declarations transpiler (`transpileDeclaration`):
 * every public type is written in that one file (client/sdk/recorder.ts),
 * so the output must be self-contained; an `import` left in it is an error.
 * Run by tools/build_sdk.ts in its own process (TypeScript is large):
 * `deno run -A tools/sdk_types.ts <entry.ts>` prints the declarations.
 */

import ts from "typescript";

/** The declarations of `source` (the text of `fileName`), self-contained. */
export function emitDeclarations(source: string, fileName: string): string {
  const out = ts.transpileDeclaration(source, {
    fileName,
    reportDiagnostics: true,
    compilerOptions: {
      declaration: true,
      isolatedDeclarations: true,
      allowImportingTsExtensions: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
    },
  });
  const problems = (out.diagnostics ?? []).map((d) =>
    ts.flattenDiagnosticMessageText(d.messageText, "\n")
  );
  if (problems.length > 0) {
    throw new Error(
      `${fileName} cannot be declared on its own:\n${problems.join("\n")}`,
    );
  }
  const imports = out.outputText.split("\n").filter((line) =>
    /^\s*(import|export)\b.*\bfrom\s+["']/.test(line)
  );
  if (imports.length > 0) {
    throw new Error(
      `the declarations of ${fileName} refer to other modules; declare every public type in it:\n${
        imports.join("\n")
      }`,
    );
  }
  return out.outputText;
}

if (import.meta.main) {
  const file = Deno.args[0];
  if (!file) {
    throw new Error("usage: deno run -A tools/sdk_types.ts <entry.ts>");
  }
  console.log(emitDeclarations(await Deno.readTextFile(file), file));
}
