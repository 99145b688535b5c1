/**
 * What the browser builds (tools/build_assets.ts, tools/build_sdk.ts) share:
 * hashing, running `deno` subcommands, listing the local modules an entry
 * reaches, and writing files atomically.
 */

import { relative } from "node:path";
import { fileURLToPath as fromFileUrl, pathToFileURL } from "node:url";

/** The SHA-256 of `data` in hex. */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string"
    ? new TextEncoder().encode(data)
    : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as BufferSource);
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/** Runs `deno <args>` in `cwd`; resolves with its output, rejects with its errors. */
export async function runDeno(args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `deno ${args[0]} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return text;
}

/**
 * One line per local module `entry` reaches (its path under `root` and the
 * hash of its text) and one per npm package version: what a build of that
 * entry depends on.
 */
export async function moduleGraphLines(
  root: string,
  entry: string,
): Promise<string[]> {
  const info = JSON.parse(
    await runDeno(
      ["info", "--json", "--config", `${root}/deno.json`, entry],
      root,
    ),
  );
  const entryUrl = pathToFileURL(entry).href;
  const lines: string[] = [];
  const locals = (info.modules as { specifier: string }[])
    .map((m) => m.specifier)
    .filter((s) => s.startsWith("file:"))
    .sort();
  for (const specifier of locals) {
    const path = fromFileUrl(specifier);
    const name = specifier === entryUrl ? "<entry>" : relative(root, path);
    lines.push(`${name}:${await sha256Hex(await Deno.readFile(path))}`);
  }
  lines.push(...Object.keys(info.npmPackages ?? {}).sort());
  return lines;
}

/** Writes a file under a temporary name, then renames it into place. */
export async function writeAtomically(
  path: string,
  data: Uint8Array | string,
): Promise<void> {
  const temp = `${path}.${crypto.randomUUID()}.tmp`;
  if (typeof data === "string") await Deno.writeTextFile(temp, data);
  else await Deno.writeFile(temp, data);
  await Deno.rename(temp, path);
}

/** Build outputs older than this are removed by {@link pruneStaleBuilds}. */
const STALE_BUILD_MS = 24 * 60 * 60 * 1000;

/**
 * Removes from `dir` the entries older than a day that are neither in
 * `keep` nor the manifest (builds that other processes may still serve
 * stay for a while).
 */
export async function pruneStaleBuilds(
  dir: string,
  keep: Set<string>,
): Promise<void> {
  const now = Date.now();
  for await (const entry of Deno.readDir(dir)) {
    if (keep.has(entry.name) || entry.name === "manifest.json") continue;
    const path = `${dir}/${entry.name}`;
    const info = await Deno.stat(path).catch(() => null);
    if (info?.mtime && now - info.mtime.getTime() > STALE_BUILD_MS) {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    }
  }
}
