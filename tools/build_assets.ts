/**
 * Builds the browser assets: every island in `islands/` bundled into one
 * module with `deno bundle --platform=browser`, and `static/style.css`, both
 * written to `static/build/` under content-hash names with a manifest. A
 * build whose inputs have not changed is reused. lib/http/assets.ts serves
 * the result.
 *
 * Run `deno run -A tools/build_assets.ts` (the `build` task) to build ahead of time;
 * otherwise the server builds on first use (lib/http/assets.ts).
 */

import { basename, join } from "node:path";
import { fileURLToPath as fromFileUrl, pathToFileURL } from "node:url";
import {
  moduleGraphLines,
  pruneStaleBuilds,
  runDeno,
  sha256Hex,
  writeAtomically,
} from "./build_support.ts";

/** The project folder. */
const ROOT = fromFileUrl(new URL("../", import.meta.url));
/** Changes whenever the build itself changes. */
export const BUILDER_VERSION = "2";
/** What a build produced: the URLs pages link to. */
export interface AssetManifest {
  builder: string;
  /** SHA-256 of everything the build read. */
  inputHash: string;
  /** URL of the islands module, or null when there is no bundle. */
  script: string | null;
  /** URL of the stylesheet. */
  style: string;
  /** Island names in the bundle. */
  islands: string[];
  /**
   * File names (in `static/build/`) of the parts the script loads only
   * when a page needs them (`import()`: hls.js), named by their content.
   */
  chunks?: string[];
  builtAt: number;
}

/** Where to build from and to. */
export interface BuildOptions {
  /** Project folder (default: this project). */
  root?: string;
  /** Build even if the inputs did not change. */
  force?: boolean;
}

async function listIslands(root: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(join(root, "islands"))) {
      if (entry.isFile && entry.name.endsWith(".tsx")) {
        names.push(basename(entry.name, ".tsx"));
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return names.sort();
}

function entrySource(root: string, islands: string[]): string {
  const lines = [
    `import { hydrateIslands } from "${
      pathToFileURL(join(root, "client", "hydrate.ts")).href
    }";`,
  ];
  islands.forEach((name, i) => {
    lines.push(
      `import island${i} from "${
        pathToFileURL(join(root, "islands", `${name}.tsx`)).href
      }";`,
    );
  });
  lines.push(
    `hydrateIslands({ ${
      islands.map((name, i) => `${JSON.stringify(name)}: island${i}`).join(", ")
    } });`,
  );
  return lines.join("\n") + "\n";
}

/** Hashes every local module the entry reaches, the npm versions, and the CSS. */
async function hashInputs(
  root: string,
  entry: string,
  css: Uint8Array,
): Promise<string> {
  const parts: string[] = [BUILDER_VERSION, Deno.version.deno];
  parts.push(...await moduleGraphLines(root, entry));
  parts.push(`style:${await sha256Hex(css)}`);
  return await sha256Hex(parts.join("\n"));
}

async function readManifest(buildDir: string): Promise<AssetManifest | null> {
  try {
    const manifest = JSON.parse(
      await Deno.readTextFile(join(buildDir, "manifest.json")),
    ) as AssetManifest;
    const files = [manifest.script, manifest.style].filter((u): u is string =>
      !!u
    ).map((url) => basename(url));
    for (const name of [...files, ...manifest.chunks ?? []]) {
      await Deno.stat(join(buildDir, name));
    }
    return manifest;
  } catch {
    return null;
  }
}

/**
 * Builds the islands bundle and the stylesheet into `static/build/` under
 * content-hash names and writes `manifest.json`, unless the manifest there
 * was built from the same inputs (then it is returned as it is).
 */
export async function buildAssets(
  options: BuildOptions = {},
): Promise<AssetManifest> {
  const root = options.root ?? ROOT;
  const buildDir = join(root, "static", "build");
  await Deno.mkdir(buildDir, { recursive: true });
  const islands = await listIslands(root);
  const css = await Deno.readFile(join(root, "static", "style.css"));
  const work = await Deno.makeTempDir({ dir: buildDir, prefix: ".tmp-" });
  try {
    const entry = join(work, "entry.ts");
    await Deno.writeTextFile(entry, entrySource(root, islands));
    const inputHash = await hashInputs(root, entry, css);
    const existing = await readManifest(buildDir);
    if (!options.force && existing?.inputHash === inputHash) return existing;

    // Split: what a page loads with import() (hls.js) is a file of its
    // own, fetched only by the page that needs it.
    const outDir = join(work, "out");
    await runDeno([
      "bundle",
      "--config",
      join(root, "deno.json"),
      "--platform=browser",
      "--minify",
      "--code-splitting",
      "--outdir",
      outDir,
      entry,
    ], root);
    const js = await Deno.readFile(join(outDir, "entry.js"));
    const chunks: string[] = [];
    for await (const file of Deno.readDir(outDir)) {
      if (!file.isFile || file.name === "entry.js") continue;
      if (!file.name.endsWith(".js")) continue;
      // esbuild names these by their content already.
      chunks.push(file.name);
      await writeAtomically(
        join(buildDir, file.name),
        await Deno.readFile(join(outDir, file.name)),
      );
    }
    chunks.sort();
    const scriptName = `${(await sha256Hex(js)).slice(0, 20)}.js`;
    const styleName = `${(await sha256Hex(css)).slice(0, 20)}.css`;
    await writeAtomically(join(buildDir, scriptName), js);
    await writeAtomically(join(buildDir, styleName), css);
    const manifest: AssetManifest = {
      builder: BUILDER_VERSION,
      inputHash,
      script: `/static/build/${scriptName}`,
      style: `/static/build/${styleName}`,
      islands,
      chunks,
      builtAt: Date.now(),
    };
    await writeAtomically(
      join(buildDir, "manifest.json"),
      JSON.stringify(manifest, null, 2) + "\n",
    );
    // "sdk": tools/build_sdk.ts prunes its own folder.
    await pruneStaleBuilds(
      buildDir,
      new Set([scriptName, styleName, ...chunks, basename(work), "sdk"]),
    );
    return manifest;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const manifest = await buildAssets({ force: Deno.args.includes("--force") });
  console.log(
    `assets: ${manifest.script} and ${manifest.style} (${manifest.islands.length} islands: ${
      manifest.islands.join(", ")
    })`,
  );
}
