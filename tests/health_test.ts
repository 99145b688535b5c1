/**
 * `/healthz` (the process answers) and `/readyz` (KV and storage
 * reachable, the workers alive): 503 once the KV is closed, while
 * PostgreSQL is down (and 200 again once it is back), and while the
 * instance stops; cheap enough to poll every second.
 */

import assert from "node:assert/strict";
import { startTestServer } from "./helpers.ts";
import { needsPostgres, startPostgres } from "./support/postgres.ts";

async function get(url: string) {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

Deno.test("health: /healthz and /readyz answer 200 with their checks; /readyz is 503 once KV is closed or the instance stops", async () => {
  const server = await startTestServer();
  try {
    assert.deepEqual(await get(`${server.url}/healthz`), {
      status: 200,
      body: { status: "ok" },
    });
    const ready = await get(`${server.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(ready.body.status, "ready");
    assert.deepEqual(Object.keys(ready.body.checks).sort(), [
      "kv",
      "storage",
      "worker:jobs",
    ]);

    // Polling every second costs little.
    const started = performance.now();
    for (let i = 0; i < 50; i++) {
      assert.equal((await get(`${server.url}/readyz`)).status, 200);
    }
    const each = (performance.now() - started) / 50;
    console.log(`/readyz: ${each.toFixed(2)} ms per probe (50 in a row)`);
    assert.ok(each < 100, `${each} ms per probe`);

    server.service.ctx.state.stopping = true;
    const stopping = await get(`${server.url}/readyz`);
    assert.equal(stopping.status, 503);
    assert.equal(stopping.body.checks.stopping.ok, false);
    server.service.ctx.state.stopping = false;

    server.service.ctx.kv.close();
    const closed = await get(`${server.url}/readyz`);
    assert.equal(closed.status, 503, JSON.stringify(closed.body));
    assert.equal(closed.body.status, "not ready");
    assert.equal(closed.body.checks.kv.ok, false);
    assert.equal(closed.body.checks.storage.ok, true);
    assert.equal((await get(`${server.url}/healthz`)).status, 200);
  } finally {
    await server.close().catch(() => {});
  }
});

Deno.test({
  name:
    "health: /readyz is 503 while PostgreSQL (the KV) is down and 200 again once it is back",
  ...needsPostgres(),
  async fn() {
    const pg = await startPostgres({ fast: true });
    const server = await startTestServer({ KV_PATH: pg.url });
    try {
      assert.equal((await get(`${server.url}/readyz`)).status, 200);
      const restarting = pg.restart({ downMs: 4000 });
      const deadline = Date.now() + 15_000;
      let down: {
        status: number;
        body: { checks: Record<string, { ok: boolean }> };
      } | undefined;
      while (Date.now() < deadline) {
        const r = await get(`${server.url}/readyz`);
        if (r.status === 503) {
          down = r;
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(down, "readyz said 503 while PostgreSQL was down");
      assert.equal(down.body.checks.kv.ok, false);
      assert.equal((await get(`${server.url}/healthz`)).status, 200);
      await restarting;
      const back = Date.now() + 20_000;
      let status = 0;
      while (Date.now() < back) {
        status = (await get(`${server.url}/readyz`)).status;
        if (status === 200) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(status, 200, "ready again once PostgreSQL is back");
    } finally {
      await server.close().catch(() => {});
      await pg.stop();
    }
  },
});
