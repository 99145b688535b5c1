/**
 * Builds the recorder SDK (client/sdk/recorder.ts) for other origins and
 * extensions: one ES module bundled with `deno bundle --platform=browser`
 * and its self-contained `.d.ts` (tools/sdk_types.ts), written to
 * `static/build/sdk/` under content-hash names with a manifest. The module
 * starts with `// @ts-self-types` naming its declarations, so Deno and
 * editors find them. A build whose inputs have not changed is reused.
 * lib/http/sdk_assets.ts serves the result under `/sdk/`.
 *
 * Run `deno run -A tools/build_sdk.ts` (part of the `build` task) to build
 * ahead of time; otherwise the server builds on the first `/sdk/` request.
 */

import { basename, join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  moduleGraphLines,
  pruneStaleBuilds,
  runDeno,
  sha256Hex,
  writeAtomically,
} from "./build_support.ts";

/** The project folder. */
const ROOT = fromFileUrl(new URL("../", import.meta.url));
/** The SDK's entry module, relative to the project folder. */
export const SDK_ENTRY = "client/sdk/recorder.ts";
/** Changes whenever this build itself changes. */
export const SDK_BUILDER_VERSION = "1";

/** What an SDK build produced: file names in `static/build/sdk/`. */
export interface SdkManifest {
  builder: string;
  /** SHA-256 of everything the build read. */
  inputHash: string;
  /** The module, `recorder.<hash>.js`. */
  script: string;
  /** Its declarations, `recorder.<hash>.d.ts`. */
  types: string;
  builtAt: number;
}

/** Where to build from, and whether to build when nothing changed. */
export interface SdkBuildOptions {
  root?: string;
  force?: boolean;
}

/** The folder the SDK is built into. */
export function sdkBuildDir(root: string = ROOT): string {
  return join(root, "static", "build", "sdk");
}

async function readManifest(dir: string): Promise<SdkManifest | null> {
  try {
    const manifest = JSON.parse(
      await Deno.readTextFile(join(dir, "manifest.json")),
    ) as SdkManifest;
    await Deno.stat(join(dir, manifest.script));
    await Deno.stat(join(dir, manifest.types));
    return manifest;
  } catch {
    return null;
  }
}

/**
 * Bundles the SDK and emits its declarations into `static/build/sdk/`
 * under content-hash names and writes `manifest.json`, unless the manifest
 * there was built from the same inputs (then it is returned as it is).
 */
export async function buildSdk(
  options: SdkBuildOptions = {},
): Promise<SdkManifest> {
  const root = options.root ?? ROOT;
  const dir = sdkBuildDir(root);
  await Deno.mkdir(dir, { recursive: true });
  const entry = join(root, SDK_ENTRY);
  const typesTool = join(root, "tools", "sdk_types.ts");
  const inputHash = await sha256Hex(
    [
      SDK_BUILDER_VERSION,
      Deno.version.deno,
      `types:${await sha256Hex(await Deno.readFile(typesTool))}`,
      ...await moduleGraphLines(root, entry),
    ].join("\n"),
  );
  const existing = await readManifest(dir);
  if (!options.force && existing?.inputHash === inputHash) return existing;

  const work = await Deno.makeTempDir({ dir, prefix: ".tmp-" });
  try {
    const out = join(work, "recorder.js");
    const config = join(root, "deno.json");
    const [, declarations] = await Promise.all([
      runDeno([
        "bundle",
        "--config",
        config,
        "--platform=browser",
        "--minify",
        "-o",
        out,
        entry,
      ], root),
      runDeno(["run", "-A", "--config", config, typesTool, entry], root),
    ]);
    const types = `/// <reference lib="dom" />\n${declarations.trimEnd()}\n`;
    const typesName = `recorder.${(await sha256Hex(types)).slice(0, 20)}.d.ts`;
    const js = `// @ts-self-types="./${typesName}"\n${await Deno.readTextFile(
      out,
    )}`;
    const scriptName = `recorder.${(await sha256Hex(js)).slice(0, 20)}.js`;
    await writeAtomically(join(dir, typesName), types);
    await writeAtomically(join(dir, scriptName), js);
    const manifest: SdkManifest = {
      builder: SDK_BUILDER_VERSION,
      inputHash,
      script: scriptName,
      types: typesName,
      builtAt: Date.now(),
    };
    await writeAtomically(
      join(dir, "manifest.json"),
      JSON.stringify(manifest, null, 2) + "\n",
    );
    await pruneStaleBuilds(
      dir,
      new Set([scriptName, typesName, basename(work)]),
    );
    return manifest;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const manifest = await buildSdk({ force: Deno.args.includes("--force") });
  console.log(
    `sdk: /sdk/recorder.js = ${manifest.script}, /sdk/recorder.d.ts = ${manifest.types}`,
  );
}
