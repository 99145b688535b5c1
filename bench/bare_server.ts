/**
 * The "stack limit" baseline: a bare `Deno.serve` that speaks just enough of
 * the recording API (`/create/`, `/add_data/<id>/`, `/complete_job/<id>/`)
 * and appends each chunk body to one file per recording, then fsyncs it.
 * No KV, no per-chunk files, no checks: what Deno itself can do.
 *
 * Run: DATA_DIR=/tmp/x deno run -A bench/bare_server.ts
 */

const UUID = /^[0-9a-f-]{36}$/;

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await file.write(bytes.subarray(offset));
  }
}

async function appendBody(path: string, body: ReadableStream<Uint8Array>) {
  const file = await Deno.open(path, { append: true, create: true });
  try {
    let size = 0;
    for await (const piece of body) {
      size += piece.length;
      await writeAll(file, piece);
    }
    await file.sync();
    return size;
  } finally {
    file.close();
  }
}

/** Where a bare server puts what the recording API sends. */
export interface BareStore {
  /** Stores the body of one add_data request (`req`, with a body) of recording `id`; its answer. */
  add(id: string, req: Request): Promise<Response>;
  /** Called on complete_job. */
  complete?(id: string): void;
}

/**
 * Answers one request of the bare API (`/create/`, `/add_data/<id>/`,
 * `/complete_job/<id>/`, POST only), the bodies handed to `store`.
 */
export async function bareRoute(
  req: Request,
  store: BareStore,
): Promise<Response> {
  const [route, id] = new URL(req.url).pathname.split("/").filter(Boolean);
  if (req.method !== "POST") {
    return Response.json({ error: "POST only" }, { status: 405 });
  }
  if (route === "create") {
    return Response.json({ video_id: crypto.randomUUID() });
  }
  if (!id || !UUID.test(id)) {
    return Response.json({ error: "unknown id" }, { status: 404 });
  }
  if (route === "add_data" && req.body) {
    return await store.add(id, req);
  }
  if (route === "complete_job") {
    store.complete?.(id);
    return Response.json({ message: "Processing started" });
  }
  return Response.json({ error: "not found" }, { status: 404 });
}

/** Answers one request of the bare API. */
export async function handle(req: Request, dir: string): Promise<Response> {
  return await bareRoute(req, {
    async add(id, req) {
      const size = await appendBody(`${dir}/${id}.webm`, req.body!);
      return Response.json({ message: "Chunk received", size });
    },
  });
}

if (import.meta.main) {
  const dir = Deno.env.get("DATA_DIR") ?? await Deno.makeTempDir();
  await Deno.mkdir(dir, { recursive: true });
  Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen: ({ port }) =>
      console.log(`bare listening on http://127.0.0.1:${port}/`),
  }, (req) => handle(req, dir));
}
