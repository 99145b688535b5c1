/**
 * Differential contract of the `Deno.Kv` subset tapedeck uses: one set of
 * cases, run against Deno's own KV (the reference) and against the
 * PostgreSQL backend (lib/kv/postgres.ts); then what only PostgreSQL can do:
 * random keys compared entry for entry with Deno KV, processes racing on one
 * key, watch across processes, and a server restart under a stream of
 * commits. Latency figures are printed on a `figures:` line, not asserted.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { KvConnectionError } from "../lib/kv/connection_error.ts";
import { openPostgresKv } from "../lib/kv/postgres.ts";
import { compareBytes, encodeKey } from "../lib/kv/key_codec.ts";
import {
  needsPostgres,
  startPostgres,
  type TestPostgres,
} from "./support/postgres.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** A fresh, empty store of one backend, with a second handle on the same data. */
interface Store {
  kv: Deno.Kv;
  second(): Promise<Deno.Kv>;
  /** Whether two handles may commit at the same time (a Deno KV file: "database is locked"). */
  concurrentHandles: boolean;
  close(): Promise<void>;
}

type Case = (s: Store) => Promise<void>;

const closeKv = async (kv: Deno.Kv) => {
  await (kv.close() as unknown as Promise<void> | undefined);
};

async function denoStore(): Promise<Store> {
  const dir = await Deno.makeTempDir({ prefix: "kv-contract-" });
  const path = `${dir}/kv.sqlite`;
  const handles: Deno.Kv[] = [await Deno.openKv(path)];
  return {
    kv: handles[0],
    concurrentHandles: false,
    async second() {
      const kv = await Deno.openKv(path);
      handles.push(kv);
      return kv;
    },
    async close() {
      for (const h of handles) {
        try {
          h.close();
        } catch {
          // already closed
        }
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

let tableNo = 0;
async function pgStore(url: string): Promise<Store> {
  const table = `c${++tableNo}_${Date.now().toString(36)}`;
  const handles: Deno.Kv[] = [await openPostgresKv(url, { table })];
  return {
    kv: handles[0],
    concurrentHandles: true,
    async second() {
      const kv = await openPostgresKv(url, { table });
      handles.push(kv);
      return kv;
    },
    async close() {
      for (const h of handles) await closeKv(h);
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function keysOf(
  kv: Deno.Kv,
  selector: Deno.KvListSelector,
  options?: Deno.KvListOptions,
): Promise<Deno.KvKey[]> {
  return await Array.fromAsync(kv.list(selector, options), (e) => e.key);
}

/** Reads a watch stream until `pred` holds for an emission, or fails after `ms`. */
async function readUntil<T>(
  reader: ReadableStreamDefaultReader<T>,
  pred: (v: T) => boolean,
  ms = 10_000,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no matching emission in ${ms} ms`)),
      ms,
    );
  });
  try {
    while (true) {
      const { value, done } = await Promise.race([reader.read(), deadline]);
      if (done) throw new Error("watch stream ended");
      if (pred(value)) return value;
    }
  } finally {
    clearTimeout(timer);
  }
}

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomKey(rand: () => number): Deno.KvKey {
  const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];
  const part = (): Deno.KvKeyPart => {
    switch (Math.floor(rand() * 5)) {
      case 0:
        return pick([
          "",
          "a",
          "ab",
          "b",
          "\u0000",
          "a\u0000b",
          "é",
          "😀",
          "z",
        ]) +
          (rand() < 0.3 ? String(Math.floor(rand() * 100)) : "");
      case 1:
        return new Uint8Array(
          Array.from(
            { length: Math.floor(rand() * 4) },
            () => pick([0, 1, 0x7f, 0xff, 0x00]),
          ),
        );
      case 2:
        return pick([
          -Infinity,
          -1e300,
          -1.5,
          -1,
          -0,
          0,
          5e-324,
          0.5,
          1,
          2,
          1e300,
          Infinity,
          NaN,
          rand() * 2000 - 1000,
          Math.floor(rand() * 1000) - 500,
        ]);
      case 3:
        return pick([
          0n,
          1n,
          -1n,
          255n,
          -255n,
          256n,
          -256n,
          2n ** 63n,
          -(2n ** 63n),
          2n ** 64n,
          -(2n ** 64n),
          2n ** 70n,
          -(2n ** 70n),
          BigInt(Math.floor(rand() * 1e6)) - 500000n,
        ]);
      default:
        return rand() < 0.5;
    }
  };
  return Array.from({ length: 1 + Math.floor(rand() * 3) }, part);
}

// ---------------------------------------------------------------------------
// The cases, run on both backends.

const cases: Record<string, Case> = {
  async "get, set, delete, getMany"({ kv }) {
    const r = await kv.set(["a"], "one");
    assert.equal(r.ok, true);
    assert.match(r.versionstamp, /^[0-9a-f]{20}$/);
    assert.deepEqual(await kv.get(["a"]), {
      key: ["a"],
      value: "one",
      versionstamp: r.versionstamp,
    });
    assert.deepEqual(await kv.get(["missing"]), {
      key: ["missing"],
      value: null,
      versionstamp: null,
    });
    await kv.set(["b", 1], { n: 1 });
    const many = await kv.getMany([["b", 1], ["none"], ["a"]]);
    assert.deepEqual(many.map((e) => e.value), [{ n: 1 }, null, "one"]);
    assert.deepEqual(many[1], {
      key: ["none"],
      value: null,
      versionstamp: null,
    });
    assert.deepEqual(await kv.getMany([]), []);
    await assert.rejects(
      kv.getMany(Array.from({ length: 11 }, (_, i) => [i])),
      { name: "TypeError", message: "Too many ranges (max 10)" },
    );
    assert.equal(await kv.delete(["a"]), undefined);
    assert.equal((await kv.get(["a"])).versionstamp, null);
    await kv.delete(["never-set"]);
    await assert.rejects(kv.set([], 1), {
      name: "TypeError",
      message: "key cannot be empty",
    });
    assert.deepEqual(await kv.get([]), {
      key: [],
      value: null,
      versionstamp: null,
    });
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      kv.set([{} as any], 1),
      {
        name: "TypeError",
        message: "expected string, number, bigint, ArrayBufferView, boolean",
      },
    );
  },

  async "values round-trip"({ kv }) {
    const values: unknown[] = [
      {
        id: "r1",
        status: "recording",
        n: 3,
        files: ["a.mp4"],
        nested: { deep: [true, null] },
      },
      [1, "two", [3], { four: 4 }],
      "",
      "héllo 😀 \u0000 end",
      0,
      -0,
      1.5,
      NaN,
      Infinity,
      Number.MAX_SAFE_INTEGER,
      true,
      false,
      null,
      undefined,
      { present: 1, missing: undefined },
      123456789012345678901234567890n,
      new Uint8Array([0, 1, 255]),
      { bytes: new Uint8Array([9, 8, 7]), date: new Date(1_700_000_000_000) },
      new Date(0),
      new Map<unknown, unknown>([["a", 1], [2, { b: [3] }]]),
      new Set([1, "x", 3n]),
      [1, , 3],
      /re+gex/gi,
      new Deno.KvU64(42n),
    ];
    for (const [i, v] of values.entries()) {
      await kv.set(["v", i], v);
      const got = (await kv.get(["v", i])).value;
      assert.deepStrictEqual(got, v, `value ${i}`);
    }
    const listed = await Array.fromAsync(
      kv.list({ prefix: ["v"] }),
      (e) => e.value,
    );
    assert.deepStrictEqual(listed, values);
    await assert.rejects(kv.set(["f"], { f() {} }), TypeError);
    assert.throws(() => kv.atomic().set(["f"], Symbol("s")), TypeError);
  },

  async "key parts round-trip and order"({ kv }) {
    const ordered: Deno.KvKey[] = [
      [new Uint8Array([])],
      [new Uint8Array([0])],
      [new Uint8Array([0, 0])],
      [new Uint8Array([1])],
      [new Uint8Array([255])],
      [""],
      ["\u0000"],
      ["a"],
      ["a", 1],
      ["a\u0000"],
      ["b"],
      ["é"],
      ["😀"],
      [-(2n ** 70n)],
      [-(2n ** 64n)],
      [-256n],
      [-1n],
      [0n],
      [1n],
      [255n],
      [2n ** 64n],
      [2n ** 70n],
      [-Infinity],
      [-1],
      [-5e-324],
      [-0],
      [0],
      [5e-324],
      [0.5],
      [1],
      [Infinity],
      [NaN], // NaN sorts last; a NaN with the sign bit set would sort first,
      // but V8 does not keep the sign of `-NaN` reliably (it differs by tier)
      [false],
      [true],
    ];
    for (const [i, key] of [...ordered].reverse().entries()) {
      await kv.set(key, i);
    }
    const keys = await keysOf(kv, { prefix: [] });
    assert.deepStrictEqual(keys, ordered);
    assert.deepStrictEqual(
      await keysOf(kv, { prefix: [] }, { reverse: true }),
      [...ordered].reverse(),
    );
    // a non-Uint8Array view is stored as its bytes
    await kv.set(
      ["view", new Uint16Array([1]) as unknown as Uint8Array],
      "u16",
    );
    assert.deepStrictEqual(
      (await kv.get(["view", new Uint8Array([1, 0])])).value,
      "u16",
    );
    assert.deepStrictEqual((await keysOf(kv, { prefix: ["view"] }))[0], [
      "view",
      new Uint8Array([1, 0]),
    ]);
  },

  async "prefix, start, end, reverse, limit"({ kv }) {
    await kv.set(["p"], "prefix itself");
    for (let i = 0; i < 10; i++) await kv.set(["p", i], i);
    await kv.set(["p", 3, "sub"], "sub");
    await kv.set(["q", 0], "other");
    await kv.set(["o", 9], "other");
    const all = await keysOf(kv, { prefix: ["p"] });
    assert.equal(all.length, 11);
    assert.deepEqual(all[0], ["p", 0]);
    assert.deepEqual(all[4], ["p", 3, "sub"]);
    assert.deepEqual(await keysOf(kv, { prefix: ["p"], start: ["p", 7] }), [
      ["p", 7],
      ["p", 8],
      ["p", 9],
    ]);
    assert.deepEqual(await keysOf(kv, { prefix: ["p"], end: ["p", 2] }), [[
      "p",
      0,
    ], ["p", 1]]);
    assert.deepEqual(await keysOf(kv, { start: ["p", 2], end: ["p", 4] }), [
      ["p", 2],
      ["p", 3],
      ["p", 3, "sub"],
    ]);
    assert.deepEqual(await keysOf(kv, { start: ["p"], end: ["p", 1] }), [
      ["p"],
      ["p", 0],
    ]);
    assert.deepEqual(await keysOf(kv, { start: ["p", 4], end: ["p", 4] }), []);
    assert.deepEqual(
      await keysOf(kv, { prefix: ["p"] }, { reverse: true, limit: 3 }),
      [["p", 9], ["p", 8], ["p", 7]],
    );
    assert.deepEqual(
      await keysOf(kv, { prefix: ["p"], start: ["p", 8] }, { reverse: true }),
      [["p", 9], ["p", 8]],
    );
    assert.deepEqual(
      await keysOf(kv, { prefix: ["p"] }, { limit: 2, batchSize: 1 }),
      [["p", 0], ["p", 1]],
    );
    assert.equal((await keysOf(kv, { prefix: [] })).length, 14);
    assert.deepEqual(await keysOf(kv, { prefix: ["nothing"] }), []);
  },

  async "cursor paging, both directions"({ kv }) {
    for (let i = 0; i < 23; i++) await kv.set(["c", i], i);
    await kv.set(["c"], "self");
    await kv.set(["d"], "after");
    const selectors: Deno.KvListSelector[] = [
      { prefix: ["c"] },
      { prefix: ["c"], start: ["c", 5] },
      { prefix: ["c"], end: ["c", 17] },
      { start: ["c", 3], end: ["c", 19] },
      { start: ["c"], end: ["d", 0] },
    ];
    for (const selector of selectors) {
      for (const reverse of [false, true]) {
        const full = await keysOf(kv, selector, { reverse });
        for (const pageSize of [1, 4, 7]) {
          const paged: Deno.KvKey[] = [];
          let cursor: string | undefined;
          for (let n = 0; n < 100; n++) {
            const it = kv.list(selector, { limit: pageSize, cursor, reverse });
            const page = await Array.fromAsync(it, (e) => e.key);
            paged.push(...page);
            if (page.length < pageSize) {
              assert.equal(it.cursor, "", "cursor after the last entry");
              break;
            }
            cursor = it.cursor;
            assert.notEqual(cursor, "");
            // the cursor resumes with exactly the rest
            const rest = await keysOf(kv, selector, { cursor, reverse });
            assert.deepEqual([...paged, ...rest], full);
          }
          assert.deepEqual(
            paged,
            full,
            JSON.stringify({ selector, reverse, pageSize }),
          );
        }
      }
    }
    const it = kv.list({ prefix: ["c"] });
    assert.throws(() => it.cursor, {
      message: "Cannot get cursor before first iteration",
    });
    const given = kv.list({ prefix: ["c"] }, { cursor: "AA==" });
    assert.equal(given.cursor, "AA==");
  },

  async "list argument errors"({ kv }) {
    assert.throws(() => kv.list({ prefix: [] }, { limit: 0 }), {
      name: "Error",
      message: "Limit must be a positive integer: received 0",
    });
    assert.throws(() => kv.list({ prefix: [] }, { batchSize: 1.5 }), Error);
    assert.throws(
      () => kv.list({ start: ["a"] } as unknown as Deno.KvListSelector),
      {
        name: "TypeError",
        message:
          "Selector must specify either 'prefix' or both 'start' and 'end' key",
      },
    );
    assert.throws(
      () =>
        kv.list(
          {
            prefix: ["a"],
            start: ["a", 1],
            end: ["a", 2],
          } as unknown as Deno.KvListSelector,
        ),
      TypeError,
    );
    const first = (s: Deno.KvListSelector, o?: Deno.KvListOptions) =>
      kv.list(s, o).next();
    await assert.rejects(first({ prefix: ["a"], start: ["b"] }), {
      name: "TypeError",
      message: "Start key is not in the keyspace defined by prefix",
    });
    await assert.rejects(first({ prefix: ["a"], end: ["a"] }), {
      name: "TypeError",
      message: "End key is not in the keyspace defined by prefix",
    });
    await assert.rejects(first({ start: ["b"], end: ["a"] }), {
      name: "TypeError",
      message: "Start key is greater than end key",
    });
    await assert.rejects(first({ prefix: [] }, { cursor: "!!" }), {
      name: "TypeError",
      message: "invalid cursor",
    });
    // cursors (of ["c", 1] and ["c", 8]) outside the selector's bounds
    await assert.rejects(
      first({ prefix: ["c"], start: ["c", 5] }, { cursor: "Ib_wAAAAAAAA" }),
      { name: "TypeError", message: "cursor out of bounds" },
    );
    await assert.rejects(
      first({ prefix: ["c"], end: ["c", 5] }, {
        cursor: "IcAgAAAAAAAA",
        reverse: true,
      }),
      { name: "TypeError", message: "cursor out of bounds" },
    );
    await assert.rejects(first({ prefix: [] }, { batchSize: 1001 }), {
      name: "TypeError",
      message: "Too many entries (max 1000)",
    });
  },

  async "atomic checks"({ kv }) {
    const absent = { key: ["acc"], versionstamp: null };
    const first = await kv.atomic().check(absent).set(["acc"], 1).commit();
    assert.equal(first.ok, true);
    assert.deepEqual(await kv.atomic().check(absent).set(["acc"], 2).commit(), {
      ok: false,
    });
    assert.equal((await kv.get(["acc"])).value, 1);
    const entry = await kv.get(["acc"]);
    const second = await kv.atomic().check(entry).set(["acc"], 3).set(
      ["other"],
      1,
    ).commit();
    assert.equal(second.ok, true);
    // stale: the entry read before the last commit
    assert.deepEqual(
      await kv.atomic().check(entry).set(["acc"], 4).set(["side"], 1).commit(),
      { ok: false },
    );
    assert.equal((await kv.get(["acc"])).value, 3);
    assert.equal(
      (await kv.get(["side"])).versionstamp,
      null,
      "a failed commit writes nothing",
    );
    // several checks: all must hold
    const now = await kv.get(["acc"]);
    assert.deepEqual(
      await kv.atomic().check(now, { key: ["other"], versionstamp: null })
        .delete(["acc"]).commit(),
      { ok: false },
    );
    const other = await kv.get(["other"]);
    assert.equal(
      (await kv.atomic().check(now, other).delete(["acc"]).commit()).ok,
      true,
    );
    assert.equal((await kv.get(["acc"])).versionstamp, null);
    // a well-formed but unknown versionstamp fails, a malformed one throws
    assert.deepEqual(
      await kv.atomic().check({
        key: ["other"],
        versionstamp: "00000000000000000000",
      }).commit(),
      { ok: false },
    );
    await assert.rejects(
      kv.atomic().check({ key: ["other"], versionstamp: "zz" }).commit(),
      { name: "TypeError", message: "Invalid check" },
    );
    // checks only, no mutation: still a commit with a versionstamp
    const checkOnly = await kv.atomic().check(other).commit();
    assert.equal(checkOnly.ok, true);
  },

  async "concurrent check(absent)+set: one winner per key"(store) {
    const handles = store.concurrentHandles
      ? [store.kv, await store.second()]
      : [store.kv];
    for (let key = 0; key < 10; key++) {
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          handles[i % handles.length].atomic()
            .check({ key: ["once", key], versionstamp: null })
            .set(["once", key], i)
            .commit()),
      );
      const winners = results.flatMap((r, i) => r.ok ? [i] : []);
      assert.equal(winners.length, 1, `key ${key}: ${winners}`);
      assert.equal((await store.kv.get(["once", key])).value, winners[0]);
    }
  },

  async "versionstamps: increasing, shared within a commit"({ kv }) {
    let last = "";
    for (let i = 0; i < 20; i++) {
      const r = i % 2
        ? await kv.set(["vs", i % 3], i)
        : await kv.atomic().set(["vs2"], i).commit();
      assert.equal(r.ok, true);
      if (!r.ok) return;
      assert.ok(r.versionstamp > last, `${r.versionstamp} > ${last}`);
      last = r.versionstamp;
    }
    const r = await kv.atomic().set(["m", 1], 1).set(["m", 2], 2).set(
      ["m", 3],
      3,
    ).delete(["vs2"]).commit();
    assert.equal(r.ok, true);
    const entries = await kv.getMany([["m", 1], ["m", 2], ["m", 3]]);
    for (const e of entries) {
      assert.equal(e.versionstamp, r.ok && r.versionstamp);
    }
    // mutations of one key apply in order
    await kv.atomic().set(["order"], 1).delete(["order"]).commit();
    assert.equal((await kv.get(["order"])).versionstamp, null);
    await kv.atomic().delete(["order"]).set(["order"], 2).set(["order"], 3)
      .commit();
    assert.equal((await kv.get(["order"])).value, 3);
  },

  async "sum, min, max on KvU64"({ kv }) {
    await kv.atomic().sum(["n"], 5n).commit();
    await kv.atomic().sum(["n"], 0xffffffffffffffffn).commit();
    assert.deepStrictEqual((await kv.get(["n"])).value, new Deno.KvU64(4n));
    await kv.atomic().min(["lo"], 7n).max(["hi"], 7n).commit();
    await kv.atomic().min(["lo"], 9n).max(["hi"], 9n).min(["lo"], 3n).commit();
    const [lo, hi] = await kv.getMany([["lo"], ["hi"]]);
    assert.deepStrictEqual([lo.value, hi.value], [
      new Deno.KvU64(3n),
      new Deno.KvU64(9n),
    ]);
    await kv.set(["str"], "x");
    await assert.rejects(kv.atomic().sum(["str"], 1n).commit(), {
      name: "TypeError",
      message:
        "Failed to perform 'sum' mutation on a non-U64 value in the database",
    });
    assert.throws(
      () => kv.atomic().sum(["n"], 1 as unknown as bigint),
      TypeError,
    );
    assert.equal((await kv.get(["str"])).value, "x");
    await kv.atomic().mutate({
      type: "sum",
      key: ["n"],
      value: new Deno.KvU64(1n),
    }).commit();
    assert.deepStrictEqual((await kv.get(["n"])).value, new Deno.KvU64(5n));
  },

  async "expireIn: written, validated"({ kv }) {
    const r = await kv.set(["exp"], "soon", { expireIn: 60_000 });
    assert.equal((await kv.get(["exp"])).versionstamp, r.versionstamp);
    await kv.atomic().set(["exp2"], 1, { expireIn: 60_000 }).commit();
    assert.equal((await kv.get(["exp2"])).value, 1);
    await assert.rejects(kv.set(["exp"], 1, { expireIn: -1 }), {
      name: "TypeError",
      message: "expireIn must be a non-negative integer: received -1",
    });
    assert.throws(
      () => kv.atomic().set(["exp"], 1, { expireIn: 1.5 }),
      TypeError,
    );
  },

  async "limits"({ kv }) {
    const keyOf = (n: number) => ["k".repeat(n - 2)]; // 0x02, n-2 bytes, 0x00
    assert.equal(encodeKey(keyOf(2048)).length, 2048);
    await kv.set(keyOf(2048), 1);
    assert.equal((await kv.get(keyOf(2048))).value, 1);
    await assert.rejects(kv.set(keyOf(2049), 1), {
      name: "TypeError",
      message: "Key too large for write (max 2048 bytes)",
    });
    await assert.rejects(kv.get(keyOf(2049)), {
      name: "TypeError",
      message: "Key too large for read (max 2049 bytes)",
    });
    await kv.set(["v"], "a".repeat(65530));
    await assert.rejects(kv.set(["v"], "a".repeat(65531)), {
      name: "TypeError",
      message: "Value too large (max 65536 bytes)",
    });
    await kv.set(["v"], { b: new Uint8Array(65517) });
    await assert.rejects(
      kv.set(["v"], { b: new Uint8Array(65518) }),
      TypeError,
    );
    await kv.set(["v"], new Uint8Array(65536));
    await assert.rejects(kv.set(["v"], new Uint8Array(65537)), TypeError);
    const many = kv.atomic();
    for (let i = 0; i < 1001; i++) many.set(["m", i], i);
    await assert.rejects(many.commit(), {
      name: "TypeError",
      message: "Too many mutations (max 1000)",
    });
    const full = kv.atomic();
    for (let i = 0; i < 1000; i++) full.set(["m", i], i);
    assert.equal((await full.commit()).ok, true);
    const checks = kv.atomic();
    for (let i = 0; i < 101; i++) {
      checks.check({ key: ["c", i], versionstamp: null });
    }
    await assert.rejects(checks.commit(), {
      name: "TypeError",
      message: "Too many checks (max 100)",
    });
    const big = kv.atomic();
    for (let i = 0; i < 20; i++) big.set(["big", i], "a".repeat(60_000));
    await assert.rejects(big.commit(), {
      name: "TypeError",
      message: "Total mutation size too large (max 819200 bytes)",
    });
    assert.throws(() => kv.watch(Array.from({ length: 11 }, (_, i) => [i])), {
      name: "TypeError",
      message: "Too many keys (max 10)",
    });
  },

  async "watch: initial, changes, deletes, second handle"(store) {
    const { kv } = store;
    await kv.set(["w", 1], "one");
    const reader = kv.watch([["w", 1], ["w", 2]]).getReader();
    const initial = (await reader.read()).value!;
    assert.deepEqual(initial.map((e) => e.value), ["one", null]);
    assert.deepEqual(initial[1], {
      key: ["w", 2],
      value: null,
      versionstamp: null,
    });
    await kv.set(["w", 2], "two");
    await readUntil(reader, (v) => v[1].value === "two");
    await kv.set(["w", "unrelated"], 0);
    await kv.delete(["w", 1]);
    const afterDelete = await readUntil(
      reader,
      (v) => v[0].versionstamp === null,
    );
    assert.deepEqual(afterDelete[0], {
      key: ["w", 1],
      value: null,
      versionstamp: null,
    });
    const other = await store.second();
    const r = await other.set(["w", 1], "from the second handle");
    const seen = await readUntil(
      reader,
      (v) => v[0].value === "from the second handle",
    );
    assert.equal(seen[0].versionstamp, r.versionstamp);
    // many quick writes: the last value arrives (intermediate ones may be coalesced)
    for (let i = 0; i < 20; i++) await other.set(["w", 2], i);
    await readUntil(reader, (v) => v[1].value === 19);
    await reader.cancel();
  },
};

// ---------------------------------------------------------------------------
// Deno KV, the reference.

Deno.test("kv contract: Deno KV (reference)", async (t) => {
  for (const [name, fn] of Object.entries(cases)) {
    await t.step(name, async () => {
      const store = await denoStore();
      try {
        await fn(store);
      } finally {
        await store.close();
      }
    });
  }
});

// ---------------------------------------------------------------------------
// PostgreSQL: the same cases, then what needs PostgreSQL.

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 1)}ms`;

interface Child {
  proc: Deno.ChildProcess;
  lines: AsyncIterator<string>;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
}

async function spawnChild(args: string[]): Promise<Child> {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", "tests/support/kv_child.ts", ...args],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = proc.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TransformStream<string, string>(
      {
        buffer: "",
        transform(chunk, controller) {
          this.buffer += chunk;
          const parts = this.buffer.split("\n");
          this.buffer = parts.pop()!;
          for (const p of parts) controller.enqueue(p);
        },
        flush(controller) {
          if (this.buffer) controller.enqueue(this.buffer);
        },
      } as Transformer<string, string> & { buffer: string },
    ),
  )[Symbol.asyncIterator]();
  const child = { proc, lines, stdin: proc.stdin.getWriter() };
  const first = await child.lines.next();
  assert.equal(first.value, "ready", "child process did not start");
  return child;
}

async function finishChild(child: Child): Promise<string[]> {
  const out: string[] = [];
  for (
    let r = await child.lines.next();
    !r.done;
    r = await child.lines.next()
  ) out.push(r.value);
  const status = await child.proc.status;
  assert.equal(status.code, 0, `child exited with ${status.code}`);
  return out;
}

async function go(child: Child): Promise<void> {
  await child.stdin.write(new TextEncoder().encode("go\n"));
  await child.stdin.close();
}

async function raceProcesses(
  url: string,
  locking: string,
  procs: number,
  keys: number,
) {
  const table = `race_${locking}_${Date.now().toString(36)}`;
  const setup = await openPostgresKv(url, { table }); // schema first, so children only open
  const children = await Promise.all(
    Array.from(
      { length: procs },
      () => spawnChild(["race", url, table, String(keys), locking]),
    ),
  );
  const t0 = performance.now();
  await Promise.all(children.map(go));
  const results = await Promise.all(children.map(async (c) => {
    const out = await finishChild(c);
    return {
      pid: c.proc.pid,
      ...JSON.parse(out.at(-1)!) as { wins: number[]; errors: string[] },
    };
  }));
  const elapsed = performance.now() - t0;
  for (const r of results) assert.deepEqual(r.errors, [], `errors in ${r.pid}`);
  const winners = new Map<number, number>();
  for (const r of results) {
    for (const i of r.wins) {
      assert.ok(
        !winners.has(i),
        `key ${i} won by ${winners.get(i)} and ${r.pid}`,
      );
      winners.set(i, r.pid);
    }
  }
  assert.equal(winners.size, keys, "every key has exactly one winner");
  for (let i = 0; i < keys; i += 10) {
    const batch = Array.from(
      { length: Math.min(10, keys - i) },
      (_, j) => ["race", i + j],
    );
    const entries = await setup.getMany(batch);
    for (const e of entries) {
      assert.equal(e.value, winners.get(e.key[1] as number));
    }
  }
  await closeKv(setup);
  const spread = results.map((r) => r.wins.length).join("/");
  return { elapsed, spread };
}

async function commitLatencies(
  kv: Deno.Kv,
  n: number,
  concurrency: number,
  prefix: string,
) {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      const i = next++;
      const key = [prefix, i];
      const s = performance.now();
      const r = await kv.atomic().check({ key, versionstamp: null }).set(key, {
        i,
        at: Date.now(),
      }).commit();
      lat.push(performance.now() - s);
      assert.equal(r.ok, true);
    }
  }));
  const total = performance.now() - t0;
  return {
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    perSec: (n / total) * 1000,
  };
}

async function hotKey(kv: Deno.Kv, workers: number, perWorker: number) {
  let conflicts = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: workers }, async () => {
    for (let done = 0; done < perWorker;) {
      const e = await kv.get<number>(["hot"]);
      const r = await kv.atomic().check(e).set(["hot"], (e.value ?? 0) + 1)
        .commit();
      if (r.ok) done++;
      else conflicts++;
    }
  }));
  assert.equal((await kv.get(["hot"])).value, workers * perWorker);
  return {
    perSec: ((workers * perWorker) / (performance.now() - t0)) * 1000,
    conflicts,
  };
}

Deno.test({
  name: "kv contract: PostgreSQL",
  ...needsPostgres(),
  async fn(t) {
    const pg: TestPostgres = await startPostgres();
    const figures: string[] = [];
    try {
      const url = pg.url;
      for (const [name, fn] of Object.entries(cases)) {
        await t.step(name, async () => {
          const store = await pgStore(url);
          try {
            await fn(store);
          } finally {
            await store.close();
          }
        });
      }

      await t.step(
        "random mixed keys: same order, pages and cursors as Deno KV",
        async () => {
          const ref = await denoStore();
          const store = await pgStore(url);
          try {
            const rand = mulberry32(20261201);
            const keys = Array.from({ length: 700 }, () => randomKey(rand));
            for (let i = 0; i < keys.length; i += 100) {
              for (const kv of [ref.kv, store.kv]) {
                const op = kv.atomic();
                keys.slice(i, i + 100).forEach((k, j) => op.set(k, i + j));
                assert.equal((await op.commit()).ok, true);
              }
            }
            const full = async (kv: Deno.Kv, reverse: boolean) =>
              await Array.fromAsync(
                kv.list({ prefix: [] }, { reverse }),
                (e) => [e.key, e.value],
              );
            const expected = await full(ref.kv, false);
            assert.ok(expected.length > 500);
            assert.deepStrictEqual(await full(store.kv, false), expected);
            assert.deepStrictEqual(
              await full(store.kv, true),
              await full(ref.kv, true),
            );
            // the codec's byte order is Deno's order
            const sorted = [
              ...new Map(keys.map((k) => [encodeKey(k).join(), k])).values(),
            ]
              .sort((a, b) => compareBytes(encodeKey(a), encodeKey(b)));
            assert.deepStrictEqual(expected.map((e) => e[0]), sorted);
            // random selectors, pages and cursors
            const pick = () => keys[Math.floor(rand() * keys.length)];
            for (let n = 0; n < 60; n++) {
              let selector: Deno.KvListSelector;
              const a = pick(), b = pick();
              const [lo, hi] = compareBytes(encodeKey(a), encodeKey(b)) <= 0
                ? [a, b]
                : [b, a];
              const prefix = a.slice(0, Math.max(0, a.length - 1));
              switch (n % 4) {
                case 0:
                  selector = { start: lo, end: hi };
                  break;
                case 1:
                  selector = { prefix };
                  break;
                case 2:
                  selector = a.length > prefix.length
                    ? { prefix, start: a }
                    : { prefix };
                  break;
                default:
                  selector = a.length > prefix.length
                    ? { prefix, end: a }
                    : { prefix };
              }
              const reverse = rand() < 0.5;
              const limit = 1 + Math.floor(rand() * 40);
              const page = async (kv: Deno.Kv, cursor?: string) => {
                const it = kv.list(selector, {
                  limit,
                  reverse,
                  cursor,
                  batchSize: 1 + Math.floor(limit / 3),
                });
                const keys = await Array.fromAsync(it, (e) => e.key);
                return { keys, cursor: it.cursor };
              };
              const [p1, q1] = [await page(ref.kv), await page(store.kv)];
              assert.deepStrictEqual(
                q1,
                p1,
                JSON.stringify({ n, reverse, limit }),
              );
              if (p1.cursor) {
                assert.deepStrictEqual(
                  await page(store.kv, p1.cursor),
                  await page(ref.kv, p1.cursor),
                );
              }
            }
          } finally {
            await ref.close();
            await store.close();
          }
        },
      );

      await t.step(
        "expired entries are invisible at once, swept, and wake watchers",
        async () => {
          const store = await pgStore(url);
          try {
            const { kv } = store;
            await kv.set(["e", 1], "short", { expireIn: 300 });
            await kv.set(["e", 2], "long", { expireIn: 60_000 });
            await kv.set(["e", 3], "none");
            const reader = kv.watch([["e", 1]]).getReader();
            assert.equal((await reader.read()).value![0].value, "short");
            await sleep(400);
            assert.equal((await kv.get(["e", 1])).versionstamp, null);
            assert.deepEqual(await keysOf(kv, { prefix: ["e"] }), [["e", 2], [
              "e",
              3,
            ]]);
            // the sweep's NOTIFY wakes the watcher
            await readUntil(reader, (v) => v[0].versionstamp === null, 5000);
            await reader.cancel();
            // an expired key counts as absent for checks
            await kv.set(["e", 4], "x", { expireIn: 50 });
            await sleep(100);
            const r = await kv.atomic().check({
              key: ["e", 4],
              versionstamp: null,
            }).set(["e", 4], "y").commit();
            assert.equal(r.ok, true);
          } finally {
            await store.close();
          }
        },
      );

      await t.step("queues throw a clear error", async () => {
        const store = await pgStore(url);
        try {
          await assert.rejects(
            store.kv.enqueue("x"),
            /queues .* not supported/,
          );
          await assert.rejects(store.kv.listenQueue(() => {}), /not supported/);
          assert.throws(() => store.kv.atomic().enqueue("x"), /not supported/);
        } finally {
          await store.close();
        }
      });

      await t.step("close ends watch streams", async () => {
        const store = await pgStore(url);
        const reader = store.kv.watch([["x"]]).getReader();
        await reader.read();
        const next = reader.read();
        await store.close();
        assert.equal((await next).done, true);
      });

      await t.step(
        "processes racing check(absent)+set: exactly one wins per key",
        async () => {
          for (const locking of ["advisory", "serializable"]) {
            const { elapsed, spread } = await raceProcesses(
              url,
              locking,
              4,
              150,
            );
            figures.push(
              `race.${locking}(4 procs x 150 keys)=${
                Math.round(elapsed)
              }ms wins=${spread}`,
            );
          }
        },
      );

      await t.step("watch across processes", async () => {
        const table = `xproc_${Date.now().toString(36)}`;
        const kv = await openPostgresKv(url, { table });
        try {
          const reader = kv.watch<[{ i: number; t: number }]>([["xproc"]])
            .getReader();
          assert.equal((await reader.read()).value![0].versionstamp, null);
          const child = await spawnChild(["write", url, table, "20"]);
          await go(child);
          const delays: number[] = [];
          await readUntil(reader, (v) => {
            const value = v[0].value;
            if (value) delays.push(Date.now() - value.t);
            return value?.i === 19;
          });
          assert.deepEqual(await finishChild(child), ["done"]);
          await reader.cancel();
          figures.push(
            `watch.xproc.delay.p50=${ms(percentile(delays, 50))} max=${
              ms(Math.max(...delays))
            } (${delays.length} of 20 emitted)`,
          );
        } finally {
          await closeKv(kv);
        }
      });

      await t.step("server restart under a stream of commits", async () => {
        const store = await pgStore(url);
        const watcherKv = await store.second();
        try {
          const { kv } = store;
          const reader = watcherKv.watch<[number]>([["restart"]]).getReader();
          await reader.read();
          const outcomes: {
            ok: boolean;
            error?: unknown;
            ms: number;
            i: number;
          }[] = [];
          let stop = false;
          let lastOk = -1;
          let restarted = false;
          let okAfterRestart = 0;
          const writer = (async () => {
            for (let i = 0; !stop; i++) {
              const s = performance.now();
              try {
                await kv.set(["restart"], i);
                lastOk = i;
                if (restarted) okAfterRestart++;
                outcomes.push({ ok: true, ms: performance.now() - s, i });
              } catch (error) {
                outcomes.push({
                  ok: false,
                  error,
                  ms: performance.now() - s,
                  i,
                });
              }
              await sleep(20);
            }
          })();
          await sleep(300);
          const t0 = performance.now();
          await pg.restart();
          const downMs = performance.now() - t0;
          restarted = true;
          const deadline = Date.now() + 20_000;
          while (okAfterRestart < 10 && Date.now() < deadline) await sleep(50);
          stop = true;
          await writer;
          const failures = outcomes.filter((o) => !o.ok);
          for (const f of failures) {
            assert.ok(
              f.error instanceof KvConnectionError,
              `not a KvConnectionError: ${f.error}`,
            );
          }
          assert.ok(failures.length > 0, "the outage was not seen");
          assert.ok(
            okAfterRestart >= 10,
            "commits did not succeed again after the restart",
          );
          assert.ok(
            Math.max(...outcomes.map((o) => o.ms)) < 15_000,
            "an operation hung",
          );
          await readUntil(reader, (v) => v[0].value === lastOk, 10_000);
          assert.equal((await kv.get(["restart"])).value, lastOk);
          await reader.cancel();
          figures.push(
            `restart: down ${
              Math.round(downMs)
            }ms, ${failures.length} commits failed with KvConnectionError, ` +
              `${outcomes.length - failures.length} ok`,
          );
        } finally {
          await store.close();
        }
      });

      await t.step(
        "an operation while the server is down fails within timeoutMs, and the next one after it reconnects",
        async () => {
          const table = `tmo_${Date.now().toString(36)}`;
          const kv = await openPostgresKv(url, { table, timeoutMs: 800 });
          try {
            await kv.set(["tmo"], 1);
            const restarting = pg.restart({ downMs: 3_000 });
            await sleep(1_000);
            const s = performance.now();
            await assert.rejects(kv.get(["tmo"]), KvConnectionError);
            const took = performance.now() - s;
            assert.ok(took < 2_000, `failed after ${took.toFixed(0)} ms`);
            await restarting;
            assert.equal((await kv.get(["tmo"])).value, 1);
          } finally {
            await closeKv(kv);
          }
        },
      );

      await t.step("figures", async () => {
        const ref = await denoStore();
        try {
          const d = await commitLatencies(ref.kv, 300, 1, "seq");
          const dc = await commitLatencies(ref.kv, 400, 16, "conc");
          figures.push(
            `deno-kv.commit seq p50=${ms(d.p50)} p99=${ms(d.p99)}; 16-way p50=${
              ms(dc.p50)
            } p99=${ms(dc.p99)} ${Math.round(dc.perSec)}/s`,
          );
        } finally {
          await ref.close();
        }
        for (const locking of ["advisory", "serializable"] as const) {
          const table = `fig_${locking}_${Date.now().toString(36)}`;
          const kv = await openPostgresKv(url, { table, locking });
          try {
            await commitLatencies(kv, 20, 1, "warm");
            const s = await commitLatencies(kv, 300, 1, "seq");
            const c = await commitLatencies(kv, 400, 16, "conc");
            const h = await hotKey(kv, 8, 25);
            figures.push(
              `pg.${locking}.commit seq p50=${ms(s.p50)} p99=${
                ms(s.p99)
              }; 16-way p50=${ms(c.p50)} p99=${ms(c.p99)} ${
                Math.round(c.perSec)
              }/s; ` +
                `hot key 8 workers ${
                  Math.round(h.perSec)
                }/s ${h.conflicts} conflicts`,
            );
          } finally {
            await closeKv(kv);
          }
        }
        const store = await pgStore(url);
        try {
          const other = await store.second();
          const reader = store.kv.watch<[number]>([["lat"]]).getReader();
          await reader.read();
          const delays: number[] = [];
          for (let i = 0; i < 30; i++) {
            const s = performance.now();
            await other.set(["lat"], i);
            await readUntil(reader, (v) => v[0].value === i);
            delays.push(performance.now() - s);
          }
          await reader.cancel();
          figures.push(
            `watch.other-handle commit+notify p50=${
              ms(percentile(delays, 50))
            } p99=${ms(percentile(delays, 99))}`,
          );
        } finally {
          await store.close();
        }
      });
    } finally {
      console.log(`figures: ${figures.join(" | ")}`);
      await pg.stop();
    }
  },
});
