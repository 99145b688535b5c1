/**
 * A separate process on the PostgreSQL KV, driven by tests/kv_contract_test.ts.
 * Prints `ready` once open, waits for `go` on stdin, then:
 *
 * - `race URL TABLE KEYS LOCKING`: for each of KEYS keys, in the same order
 *   as the other racers and 4 commits at a time, commits check(absent) +
 *   set(its pid);
 *   prints `{"wins":[...],"errors":[...]}`.
 * - `write URL TABLE COUNT`: sets `["xproc"]` to `{ i, t: Date.now() }`
 *   COUNT times, 30 ms apart; prints `done`.
 */

import { openPostgresKv } from "../../lib/kv/postgres.ts";

const [mode, url, table, countArg, locking] = Deno.args;
const kv = await openPostgresKv(url, {
  table,
  locking: locking === "serializable" ? "serializable" : "advisory",
});
console.log("ready");
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream())
  .getReader();
let input = "";
while (!input.includes("go")) {
  const { value, done } = await lines.read();
  if (done) break;
  input += value;
}
const count = Number(countArg);
if (mode === "race") {
  const wins: number[] = [];
  const errors: string[] = [];
  const order = Array.from({ length: count }, (_, i) => i);
  const race = async (i: number) => {
    try {
      const res = await kv.atomic()
        .check({ key: ["race", i], versionstamp: null })
        .set(["race", i], Deno.pid)
        .commit();
      if (res.ok) wins.push(i);
    } catch (e) {
      errors.push(String(e));
    }
  };
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let i = order.shift(); i !== undefined; i = order.shift()) {
        await race(i);
      }
    }),
  );
  console.log(JSON.stringify({ wins, errors }));
} else if (mode === "write") {
  for (let i = 0; i < count; i++) {
    await kv.set(["xproc"], { i, t: Date.now() });
    await new Promise((r) => setTimeout(r, 30));
  }
  console.log("done");
}
await (kv.close() as unknown as Promise<void>);
Deno.exit(0); // stdin stays open in the parent
