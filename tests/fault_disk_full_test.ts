/**
 * Fault: the disk fills up (GitHub issue #4, "Faults to survive").
 *
 * A real full file system: a small tmpfs mounted for the test (falling back
 * to an ext4 image on a loop device when tmpfs cannot be mounted), with the
 * server's DATA_DIR on it and MIN_FREE_BYTES=0, so that the kernel's ENOSPC
 * is what the server meets. A filler file takes the free space; deleting it
 * is "an operator freed space". Outside CI the tests skip with a notice when
 * no file system can be mounted; in CI that is a failure.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  type ChunkEntry,
  chunkPrefix,
  type Job,
  jobKey,
} from "../lib/kv/keys.ts";
import {
  type ChildServer,
  createSession,
  IN_CI,
  makeRecording,
  mediaBytes,
  missingTool,
  sendChunk,
  spawnServer,
  splitBytes,
  startTestServer,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";
import { bytesOnDisk, readChunk } from "./fault_helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const PAGE = 4096;

interface SmallDisk {
  dir: string;
  how: string;
  free(): number;
  /** Takes all free space but `leave` bytes (rounded to pages). */
  fill(leave: number): Promise<void>;
  /** Deletes the filler. */
  unfill(): Promise<void>;
  cleanup(): Promise<void>;
}

async function run(cmd: string, args: string[]): Promise<boolean> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** Mounts an 8 MiB file system: tmpfs, else an ext4 image on a loop device. */
async function mountSmallDisk(): Promise<SmallDisk | null> {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-full-" });
  let how = "";
  let image: string | undefined;
  if (await run("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", dir])) {
    how = "tmpfs (8 MiB)";
  } else {
    image = await Deno.makeTempFile({ suffix: ".img" });
    if (
      await run("truncate", ["-s", "8M", image]) &&
      await run("mkfs.ext4", ["-q", "-F", image]) &&
      await run("mount", ["-o", "loop", image, dir])
    ) {
      how = "ext4 image on a loop device (8 MiB)";
    } else {
      await Deno.remove(image).catch(() => {});
      await Deno.remove(dir).catch(() => {});
      const why =
        "no small file system could be mounted (mount -t tmpfs and mount -o loop failed)";
      if (IN_CI) throw new Error(`the disk-full tests need root: ${why}`);
      console.warn(`SKIPPED: ${why}`);
      return null;
    }
  }
  const free = () => {
    const out = new Deno.Command("df", {
      args: ["-B1", "--output=avail", dir],
    }).outputSync();
    return Number(new TextDecoder().decode(out.stdout).split("\n")[1]);
  };
  return {
    dir,
    how,
    free,
    async fill(leave: number) {
      const room = free() - Math.ceil(leave / PAGE) * PAGE;
      if (room <= 0) return;
      const f = await Deno.open(join(dir, `filler-${crypto.randomUUID()}`), {
        write: true,
        createNew: true,
      });
      try {
        const block = new Uint8Array(64 * 1024);
        let left = room;
        while (left > 0) {
          left -= await f.write(
            block.subarray(0, Math.min(block.length, left)),
          );
        }
      } finally {
        f.close();
      }
    },
    async unfill() {
      for (const e of Deno.readDirSync(dir)) {
        if (e.name.startsWith("filler")) await Deno.remove(join(dir, e.name));
      }
    },
    async cleanup() {
      for (let i = 0; i < 20; i++) {
        if (await run("umount", [dir])) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      if (image) await Deno.remove(image).catch(() => {});
    },
  };
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function expectStatus(
  url: string,
  id: string,
  chunks: number,
  bytes: number,
) {
  const res = await fetch(`${url}/check_status/${id}/`);
  assert.equal(res.status, 200);
  const st = await res.json();
  assert.equal(st.chunks_received, chunks);
  assert.equal(st.bytes_received, bytes);
}

async function assembled(kvPath: string, dataDir: string, id: string) {
  const kv = await Deno.openKv(kvPath);
  const hash = createHash("sha256");
  try {
    for await (const e of kv.list<ChunkEntry>({ prefix: chunkPrefix(id) })) {
      hash.update(await readChunk(dataDir, id, e.value));
    }
  } finally {
    kv.close();
  }
  return hash.digest("hex");
}

Deno.test({
  name:
    "disk full: a chunk that does not fit on a full data disk (KV elsewhere) gets 507, loses nothing acknowledged, leaves no partial file, and the retry completes after space is freed",
  ignore: ffmpegMissing,
  async fn() {
    const disk = await mountSmallDisk();
    if (!disk) return;
    const kvDir = await Deno.makeTempDir({ prefix: "tapedeck-full-kv-" });
    const kvPath = join(kvDir, "tapedeck.kv");
    let server: ChildServer | undefined;
    try {
      const srcPath = join(kvDir, "src.webm");
      const source = await makeRecording(srcPath, { seconds: 6 });
      const pieces = splitBytes(source, [100_000]);
      server = await spawnServer(disk.dir, {
        KV_PATH: kvPath,
        MIN_FREE_BYTES: "0",
      });
      const id = await createSession(server.url);
      let bytes = 0;
      for (const i of [0, 1]) {
        const res = await sendChunk(server.url, id, pieces[i], i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
        bytes += pieces[i].length;
      }
      // 40 kB left: chunk 2 (100 kB) starts writing and hits ENOSPC midway.
      await disk.fill(40_000);
      const freeBefore = disk.free();
      const full = await sendChunk(server.url, id, pieces[2], 2);
      assert.equal(full.status, 507);
      assert.equal(full.headers.get("content-type"), "application/json");
      const err = await full.json();
      assert.match(err.error, /storage is full/);
      assert.match(err.error, /not stored/);
      // A retry while still full is refused the same way.
      const again = await sendChunk(server.url, id, pieces[2], 2);
      assert.equal(again.status, 507);
      await again.body?.cancel();
      await expectStatus(server.url, id, 2, bytes);
      assert.equal(
        bytesOnDisk(disk.dir, id),
        bytes,
        "no byte of the chunk kept",
      );
      assert.equal(disk.free(), freeBefore, "the partial write was given back");

      await disk.unfill();
      for (let i = 2; i < pieces.length; i++) {
        const res = await sendChunk(server.url, id, pieces[i], i);
        assert.equal(res.status, 200);
        const body = await res.json();
        assert.equal(body.duplicate, false);
      }
      const done = await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      });
      assert.equal(done.status, 200);
      await done.body?.cancel();
      const st = await waitForStatus(server.url, id);
      assert.equal(st.status, "complete", JSON.stringify(st));
      const media = await fetch(`${server.url}/media/${id}/${id}.webm`);
      assert.equal(media.status, 200);
      const out = join(kvDir, "out.webm");
      await Deno.writeFile(out, new Uint8Array(await media.arrayBuffer()));
      assert.deepEqual(
        await videoPacketHashes(out),
        await videoPacketHashes(srcPath),
      );
      assert.equal((await server.stop("SIGTERM")).code, 0);
      server = undefined;
      assert.equal(await assembled(kvPath, disk.dir, id), sha256(source));
      console.log(
        `disk-full figures (${disk.how}, KV elsewhere): chunk over the free space: 507 twice, ` +
          `no partial file, ${bytes} acknowledged bytes kept; after freeing space: complete; bytes lost: 0`,
      );
    } finally {
      await server?.stop("SIGKILL");
      await disk.cleanup();
      await Deno.remove(kvDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("disk full: with KV on the full disk too, create, chunks and complete get 507 (not 500), nothing acknowledged is lost, and all resumes after space is freed", async () => {
  const disk = await mountSmallDisk();
  if (!disk) return;
  let server: ChildServer | undefined;
  try {
    server = await spawnServer(disk.dir, { MIN_FREE_BYTES: "0" });
    const id = await createSession(server.url);
    const sent = [mediaBytes(100_000, 1), mediaBytes(1_000, 2)];
    for (const [i, c] of sent.entries()) {
      const res = await sendChunk(server.url, id, c, i);
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
    const wrong: string[] = [];
    const expect507 = async (what: string, res: Response) => {
      assert.equal(res.headers.get("content-type"), "application/json");
      const body = await res.json();
      assert.equal(typeof body.error, "string");
      if (res.status !== 507) {
        wrong.push(`${what}: ${res.status} "${body.error}"`);
      }
    };
    // Room for the chunk file itself, not for the KV commit that records it.
    const chunk = mediaBytes(40_000, 3);
    await disk.fill(chunk.length);
    await expect507(
      "a chunk whose file fits but whose KV commit does not",
      await sendChunk(server.url, id, chunk, 2),
    );
    assert.equal(bytesOnDisk(disk.dir, id), 101_000, "no byte of it kept");
    await disk.fill(0);
    await expect507(
      "a chunk on a full disk",
      await sendChunk(server.url, id, chunk, 2),
    );
    await expect507(
      "create on a full disk",
      await fetch(`${server.url}/create/`, { method: "POST" }),
    );
    await expect507(
      "complete_job on a full disk",
      await fetch(`${server.url}/complete_job/${id}/`, { method: "POST" }),
    );
    await expectStatus(server.url, id, 2, 101_000);
    assert.equal(bytesOnDisk(disk.dir, id), 101_000, "no byte of them kept");

    await disk.unfill();
    const retry = await sendChunk(server.url, id, chunk, 2);
    assert.equal(retry.status, 200);
    assert.equal((await retry.json()).chunks_received, 3);
    const created = await fetch(`${server.url}/create/`, { method: "POST" });
    assert.equal(created.status, 200);
    await created.body?.cancel();
    const done = await fetch(`${server.url}/complete_job/${id}/`, {
      method: "POST",
    });
    assert.equal(done.status, 200);
    await done.body?.cancel();
    assert.equal((await server.stop("SIGTERM")).code, 0);
    server = undefined;
    const kv = await Deno.openKv(join(disk.dir, "tapedeck.kv"));
    try {
      let n = 0;
      for await (const e of kv.list<ChunkEntry>({ prefix: chunkPrefix(id) })) {
        const bytes = await readChunk(disk.dir, id, e.value);
        assert.equal(sha256(bytes), sha256([...sent, chunk][n++]));
      }
      assert.equal(n, 3);
      const job = (await kv.get<Job>(jobKey(id))).value;
      assert.ok(job, "the job was queued once space was back");
    } finally {
      kv.close();
    }
    console.log(
      `disk-full figures (${disk.how}, KV on the full disk): ${
        wrong.length ? `wrong statuses: ${wrong.join("; ")}` : "all 507"
      }; acknowledged chunks intact; bytes lost: 0`,
    );
    assert.deepEqual(
      wrong,
      [],
      "a full disk under KV must be a 507 like a full data folder",
    );
  } finally {
    await server?.stop("SIGKILL");
    await disk.cleanup();
  }
});

Deno.test({
  name:
    "disk full: processing on a full disk fails with a readable reason, lists nothing, and retry_job completes it after space is freed",
  ignore: ffmpegMissing,
  async fn() {
    const disk = await mountSmallDisk();
    if (!disk) return;
    const kvDir = await Deno.makeTempDir({ prefix: "tapedeck-full-kv-" });
    const kvPath = join(kvDir, "tapedeck.kv");
    let server: Awaited<ReturnType<typeof startTestServer>> | undefined;
    try {
      const srcPath = join(kvDir, "src.webm");
      const source = await makeRecording(srcPath, { seconds: 4 });
      server = await startTestServer({
        DATA_DIR: disk.dir,
        KV_PATH: kvPath,
        JOB_MAX_ATTEMPTS: "2",
        JOB_BACKOFF_MS: "100",
      });
      const id = await createSession(server.url);
      for (const [i, p] of splitBytes(source, [60_000]).entries()) {
        const res = await sendChunk(server.url, id, p, i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      // Not even room to assemble the source in the work folder.
      await disk.fill(source.length / 2);
      const done = await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      });
      assert.equal(done.status, 200);
      await done.body?.cancel();
      const failed = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        30_000,
      );
      assert.equal(failed.status, "failed");
      assert.match(String(failed.error), /after 2 attempts/);
      assert.match(String(failed.error), /space/i);
      assert.doesNotMatch(
        String(failed.error),
        /tapedeck-full|\/tmp\//,
        "no server paths",
      );
      const list = await (await fetch(`${server.url}/video/${id}/`)).json();
      assert.deepEqual(list.completed_videos, []);
      assert.deepEqual(
        entriesOf(join(disk.dir, "recordings", id, "files")),
        [],
        "nothing was published",
      );

      await disk.unfill();
      const retry = await fetch(`${server.url}/retry_job/${id}/`, {
        method: "POST",
      });
      assert.equal(retry.status, 200);
      assert.equal((await retry.json()).status, "processing");
      const st = await waitForStatus(
        server.url,
        id,
        ["complete", "failed"],
        30_000,
      );
      assert.equal(st.status, "complete", JSON.stringify(st));
      const media = await fetch(`${server.url}/media/${id}/${id}.webm`);
      assert.equal(media.status, 200);
      const out = join(kvDir, "out.webm");
      await Deno.writeFile(out, new Uint8Array(await media.arrayBuffer()));
      assert.deepEqual(
        await videoPacketHashes(out),
        await videoPacketHashes(srcPath),
      );
      console.log(
        `disk-full figures (${disk.how}): processing on a full disk: failed ("${failed.error}"); after freeing space and retry_job: complete`,
      );
    } finally {
      await server?.close();
      await disk.cleanup();
      await Deno.remove(kvDir, { recursive: true }).catch(() => {});
    }
  },
});

function entriesOf(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((e) => e.name);
  } catch {
    return [];
  }
}
