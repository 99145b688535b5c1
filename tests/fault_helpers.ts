/** Shared by the fault-injection tests: reading what the storage holds. */

import { join } from "node:path";
import type { ChunkEntry } from "../lib/kv/keys.ts";

/** A committed chunk's bytes, wherever the storage put them (file, offset, size). */
export async function readChunk(
  dataDir: string,
  id: string,
  e: ChunkEntry,
): Promise<Uint8Array> {
  const file = await Deno.open(
    join(dataDir, "recordings", id, "chunks", e.file),
  );
  try {
    await file.seek(e.offset ?? 0, Deno.SeekMode.Start);
    const buf = new Uint8Array(e.size);
    let n = 0;
    while (n < e.size) {
      const got = await file.read(buf.subarray(n));
      if (got === null) break;
      n += got;
    }
    return buf.subarray(0, n);
  } finally {
    file.close();
  }
}

/** Every byte held in a recording's chunk folder, committed or not. */
export function bytesOnDisk(dataDir: string, id: string): number {
  const dir = join(dataDir, "recordings", id, "chunks");
  let n = 0;
  for (const e of Deno.readDirSync(dir)) {
    if (e.isFile) n += Deno.statSync(join(dir, e.name)).size;
  }
  return n;
}
