import assert from "node:assert/strict";
import { commitGrouped, type GroupedWrite } from "../lib/kv/batch.ts";
import {
  createSession,
  expectError,
  mediaBytes,
  sendChunk,
  startTestServer,
} from "./helpers.ts";

function setWrite(
  lock: string,
  key: Deno.KvKey,
  value: unknown,
  expectAbsent = true,
): GroupedWrite {
  return {
    lock,
    checks: expectAbsent ? [{ key, versionstamp: null }] : [],
    mutate: (atomic) => atomic.set(key, value),
  };
}

Deno.test("grouped commits: writes made while a commit is in flight share the next commit", async () => {
  using kv = await Deno.openKv(":memory:");
  const results = await Promise.all(
    Array.from(
      { length: 10 },
      (_, i) => commitGrouped(kv, setWrite(`r${i}`, ["k", i], i)),
    ),
  );
  assert.ok(results.every((r) => r.ok));
  const stamps = new Set(
    results.map((r) => (r as Deno.KvCommitResult).versionstamp),
  );
  // The first write goes alone at once; the nine queued behind it go together.
  assert.equal(stamps.size, 2);
  const values = await kv.getMany(
    Array.from({ length: 10 }, (_, i) => ["k", i]),
  );
  assert.deepEqual(values.map((e) => e.value), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

Deno.test("grouped commits: a failing check fails only its own write", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(["k", 3], "taken");
  const results = await Promise.all(
    Array.from(
      { length: 6 },
      (_, i) => commitGrouped(kv, setWrite(`r${i}`, ["k", i], `v${i}`)),
    ),
  );
  assert.deepEqual(results.map((r) => r.ok), [
    true,
    true,
    true,
    false,
    true,
    true,
  ]);
  const values = await kv.getMany(
    Array.from({ length: 6 }, (_, i) => ["k", i]),
  );
  assert.deepEqual(values.map((e) => e.value), [
    "v0",
    "v1",
    "v2",
    "taken",
    "v4",
    "v5",
  ]);
});

Deno.test("grouped commits: writes with the same lock never share a commit", async () => {
  using kv = await Deno.openKv(":memory:");
  const results = await Promise.all([
    commitGrouped(kv, setWrite("first", ["warm"], 0)),
    ...Array.from(
      { length: 3 },
      (_, i) => commitGrouped(kv, setWrite("same", ["s", i], i)),
    ),
  ]);
  assert.ok(results.every((r) => r.ok));
  const stamps = results.slice(1).map((r) =>
    (r as Deno.KvCommitResult).versionstamp
  );
  assert.equal(new Set(stamps).size, 3);
});

Deno.test("ingest: two instances on one KV append to one recording in turn, and a stale remembered record never gives a wrong answer", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-two-" });
  // No grace: a chunk after complete_job is refused at once (the grace
  // itself is tested in stop_race_test.ts).
  const a = await startTestServer({
    DATA_DIR: dataDir,
    COMPLETE_GRACE_MS: "0",
  });
  const b = await startTestServer({
    DATA_DIR: dataDir,
    RUN_WORKER: "false",
    COMPLETE_GRACE_MS: "0",
  });
  try {
    const id = await createSession(a.url);
    const sizes = [4000, 3000, 5000, 2000, 1000];
    for (const [i, size] of sizes.entries()) {
      const via = i % 2 === 0 ? a : b;
      const res = await sendChunk(via.url, id, mediaBytes(size, i + 1));
      assert.equal(res.status, 200, await res.clone().text());
      assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
      await res.body?.cancel();
    }
    const status = await fetch(`${b.url}/check_status/${id}/`);
    assert.equal(status.status, 200);
    const body = await status.json();
    assert.equal(body.status, "recording");
    const ledger = await (await fetch(`${a.url}/chunks/${id}/`)).json();
    assert.equal(ledger.bytes_received, sizes.reduce((n, s) => n + s, 0));
    assert.equal(ledger.chunks_received, sizes.length);
    assert.deepEqual(ledger.received, [[0, sizes.length - 1]]);
    assert.deepEqual(ledger.missing, []);

    // B completes; A still remembers the record from its own last commit.
    const done = await fetch(`${b.url}/complete_job/${id}/`, {
      method: "POST",
    });
    assert.equal(done.status, 200);
    await done.body?.cancel();
    await expectError(
      await sendChunk(a.url, id, mediaBytes(100, 9)),
      409,
      /no longer recording/,
    );
    const source = await fetch(`${a.url}/media/${id}/source`);
    assert.equal(source.status, 200);
    const bytes = new Uint8Array(await source.arrayBuffer());
    assert.equal(bytes.length, sizes.reduce((n, s) => n + s, 0));
    let offset = 0;
    for (const [i, size] of sizes.entries()) {
      assert.deepEqual(
        bytes.slice(offset, offset + size),
        mediaBytes(size, i + 1),
      );
      offset += size;
    }
  } finally {
    await b.close();
    await a.close();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
