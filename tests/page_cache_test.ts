import assert from "node:assert/strict";
import { canDropPages } from "../lib/storage/page_cache.ts";
import { LocalStorage } from "../lib/storage/local.ts";
import { spawnServer } from "./helpers.ts";

const MIB = 1024 * 1024;

/** Bytes of `path` resident in the page cache, by util-linux's fincore. */
async function residentBytes(path: string): Promise<number | null> {
  try {
    const out = await new Deno.Command("fincore", {
      args: ["--bytes", "--noheadings", "--output", "RES", path],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? Number(new TextDecoder().decode(out.stdout)) : null;
  } catch {
    return null;
  }
}

async function writeChunks(
  storage: LocalStorage,
  id: string,
  count: number,
): Promise<void> {
  for (let i = 0; i < count; i++) {
    const bytes = new Uint8Array(MIB).fill(i + 1);
    const stored = await storage.writeChunk(id, bytes, 64 * MIB);
    await stored.settle(true);
  }
}

Deno.test("page cache: flushed chunk bytes past INGEST_CACHE_BYTES leave the page cache; those within stay", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-cache-" });
  const probe = `${dir}/probe`;
  await Deno.writeFile(probe, new Uint8Array(4096));
  if ((await residentBytes(probe)) === null || !canDropPages()) {
    await Deno.remove(dir, { recursive: true });
    const why =
      "fincore (util-linux-extra) or posix_fadvise via FFI is missing";
    if (Deno.env.get("CI") === "true") assert.fail(`${why} in CI`);
    console.warn(`SKIPPED: ${why}`);
    return;
  }
  const small = new LocalStorage(dir, 0, 4 * MIB);
  const large = new LocalStorage(dir, 0, 1024 * MIB);
  try {
    await t.step("a 4 MiB budget keeps at most the last 4 MiB", async () => {
      await small.createRecording("kept-little");
      await writeChunks(small, "kept-little", 16);
      const data = `${dir}/recordings/kept-little/chunks/data`;
      assert.equal((await Deno.stat(data)).size, 16 * MIB);
      const resident = (await residentBytes(data))!;
      assert.ok(resident <= 4 * MIB, `${resident} bytes still cached`);
      assert.ok(small.dropBehind.droppedBytes >= 12 * MIB);
      // Dropped from the cache, not from the disk: every byte reads back.
      const back = await Deno.readFile(data);
      for (let i = 0; i < 16; i++) assert.equal(back[i * MIB + 7], i + 1);
    });
    await t.step("within the budget, every chunk stays cached", async () => {
      await large.createRecording("kept-all");
      await writeChunks(large, "kept-all", 16);
      const data = `${dir}/recordings/kept-all/chunks/data`;
      assert.equal(await residentBytes(data), 16 * MIB);
      assert.equal(large.dropBehind.droppedBytes, 0);
    });
  } finally {
    small.close();
    large.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("page cache: the server says at start-up whether it drops ingested bytes from the page cache", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-cache-srv-" });
  try {
    const server = await spawnServer(dataDir, {
      RUN_WORKER: "false",
      INGEST_CACHE_BYTES: String(256 * MIB),
    });
    try {
      assert.match(
        server.output(),
        canDropPages()
          ? /page cache: flushed chunk bytes past the newest 256 MiB are dropped from it/
          : /page cache: left to the kernel/,
      );
    } finally {
      await server.stop();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
