/**
 * Opens the storage backend the config names (STORAGE_URL): local disk by
 * default, or an S3 bucket with local scratch space under DATA_DIR.
 */

import type { Config } from "../core/config.ts";
import type { Logger } from "../core/log.ts";
import { LocalStorage } from "./local.ts";
import { openLocalStorage, releaseLocalStorage } from "./local_shared.ts";
import { ScratchSpace } from "./scratch.ts";
import type { Storage } from "./storage.ts";

/**
 * The storage of `config`, said in the log. A bucket is checked (and made
 * when missing); one that cannot be reached now is only logged: requests
 * get 503 until it answers.
 */
export async function openStorage(
  config: Config,
  log?: Logger,
): Promise<Storage> {
  const s = config.storage;
  log?.info(describeStorage(config));
  if (s.kind === "local") {
    await Deno.mkdir(`${s.dir}/recordings`, { recursive: true });
    return await openLocalStorage(
      s.dir,
      config.minFreeBytes,
      config.ingestCacheBytes,
    );
  }
  await Deno.mkdir(config.dataDir, { recursive: true });
  // The S3 modules load only for a bucket, as the PostgreSQL client does.
  const [{ S3Client }, { S3Storage }] = await Promise.all([
    import("./s3_client.ts"),
    import("./s3.ts"),
  ]);
  const client = new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    bucket: s.bucket,
    accessKeyId: s.accessKeyId,
    secretAccessKey: s.secretAccessKey,
    sessionToken: s.sessionToken,
    style: s.forcePathStyle ? "path" : "virtual-host",
    timeoutMs: s.timeoutMs,
  });
  try {
    await client.ensureBucket();
  } catch (err) {
    log?.warn("object storage not reachable at start-up; requests get 503", {
      bucket: s.bucket,
      endpoint: s.endpoint,
      error: (err as Error).message,
    });
  }
  return new S3Storage({
    client,
    prefix: s.prefix,
    scratch: new ScratchSpace(config.dataDir),
  });
}

/** Closes a storage of {@link openStorage} (a shared local one is given back). */
export function closeStorage(storage: Storage): void {
  if (storage instanceof LocalStorage) releaseLocalStorage(storage);
  else storage.close();
}

/** A line for the start-up log: where the bytes go (no credentials). */
export function describeStorage(config: Config): string {
  const s = config.storage;
  return s.kind === "local"
    ? `storage: local disk in ${s.dir}`
    : `storage: s3://${s.bucket}/${s.prefix} at ${s.endpoint} (${
      s.forcePathStyle ? "path" : "virtual-host"
    } style, region ${s.region}); scratch in ${config.dataDir}${
      config.mediaRedirect ? "; /media redirects to presigned URLs" : ""
    }`;
}
