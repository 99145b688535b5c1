/**
 * The "stack limit" baseline for object storage: a bare `Deno.serve` that
 * speaks just enough of the recording API (`/create/`, `/add_data/<id>/`,
 * `/complete_job/<id>/`) and PUTs each chunk body to the bucket as one
 * object (`<prefix>/<id>/<n>`), answering once S3 said 200. No KV, no
 * checks, no retries: what Deno and the S3 service can do together.
 *
 * The body is read into memory (chunks are at most a few MiB) and sent with
 * its Content-Length and `UNSIGNED-PAYLOAD` (no SHA-256 of the body, the
 * cheapest signature Swift's s3api takes), signed by `aws4fetch`.
 *
 * Run: S3_ENDPOINT=http://127.0.0.1:8080 AWS_REGION=... AWS_ACCESS_KEY_ID=...
 *   AWS_SECRET_ACCESS_KEY=... S3_BUCKET=bench S3_PREFIX=bare
 *   deno run -A bench/s3_bare_server.ts
 */

import { AwsClient } from "aws4fetch";
import { bareRoute } from "./bare_server.ts";

/** Where the bare server stores. */
export interface BareS3Options {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
  prefix: string;
}

/** A request handler that PUTs each add_data body as an object. */
export function bareS3Handler(
  o: BareS3Options,
): (req: Request) => Promise<Response> {
  const aws = new AwsClient({
    accessKeyId: o.accessKeyId,
    secretAccessKey: o.secretAccessKey,
    region: o.region,
    service: "s3",
    retries: 0,
  });
  const counters = new Map<string, number>();
  return (req) =>
    bareRoute(req, {
      async add(id, req) {
        const body = new Uint8Array(await req.arrayBuffer());
        const n = counters.get(id) ?? 0;
        counters.set(id, n + 1);
        const res = await aws.fetch(
          `${o.endpoint}/${o.bucket}/${o.prefix}/${id}/${n}`,
          {
            method: "PUT",
            body,
            headers: { "x-amz-content-sha256": "UNSIGNED-PAYLOAD" },
          },
        );
        await res.body?.cancel();
        if (!res.ok) {
          return Response.json({ error: `S3 ${res.status}` }, { status: 503 });
        }
        return Response.json({ message: "Chunk received", size: body.length });
      },
      complete(id) {
        counters.delete(id);
      },
    });
}

if (import.meta.main) {
  const env = (name: string) => {
    const v = Deno.env.get(name);
    if (!v) throw new Error(`${name} is not set`);
    return v;
  };
  const handler = bareS3Handler({
    endpoint: env("S3_ENDPOINT"),
    region: env("AWS_REGION"),
    accessKeyId: env("AWS_ACCESS_KEY_ID"),
    secretAccessKey: env("AWS_SECRET_ACCESS_KEY"),
    bucket: env("S3_BUCKET"),
    prefix: Deno.env.get("S3_PREFIX") ?? "bare",
  });
  Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen: ({ port }) =>
      console.log(`bare-s3 listening on http://127.0.0.1:${port}/`),
  }, handler);
}
