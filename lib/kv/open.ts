/**
 * Opens the KV a config names: a local file or `:memory:` (Deno KV's
 * SQLite), a KV Connect URL (`http(s)://`), PostgreSQL
 * (`postgres://`, lib/kv/postgres.ts), or, with an empty path, the KV the
 * platform gives (Deno Deploy's per-app KV).
 */

/** Whether a KV location is a PostgreSQL URL. */
export function isPostgresKv(kvPath: string): boolean {
  return /^postgres(ql)?:\/\//i.test(kvPath);
}

/** Opens the KV at `kvPath`. */
export async function openKv(kvPath: string): Promise<Deno.Kv> {
  if (isPostgresKv(kvPath)) {
    // Loaded only here: an instance on Deno KV (a Deploy API instance, a
    // worker) never loads the PostgreSQL client.
    const { openPostgresKv } = await import("./postgres.ts");
    return await openPostgresKv(kvPath);
  }
  if (kvPath === "") return await Deno.openKv();
  return await Deno.openKv(kvPath);
}

/** Where a KV is, for logs and messages: a URL's password is hidden. */
export function describeKvPath(kvPath: string): string {
  if (kvPath === "") return "the platform's KV";
  return kvPath.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*):[^@/]*@/i, "$1:***@");
}
