/**
 * `/metrics`: the Prometheus text format checked by `promtool check
 * metrics`, the counters moving with real requests, the API key, and a real
 * Prometheus (Debian's, started in a temp folder on a loopback port,
 * scraping every second) answering a query for the chunk counter.
 */

import assert from "node:assert/strict";
import { openSocket, wsUrl } from "./browser_helpers.ts";
import { mediaBytes, sendChunk, startTestServer } from "./helpers.ts";
import {
  needsPrometheus,
  promtoolCheck,
  startPrometheus,
} from "./support/prometheus.ts";

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.split(" ").at(-1));
  }
  return undefined;
}

async function create(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}/create/`, { method: "POST", headers });
  assert.equal(res.status, 200);
  return (await res.json()).video_id as string;
}

Deno.test({
  name:
    "metrics: /metrics passes promtool check metrics and counts requests, chunks, bytes, sockets, jobs and memory",
  ...needsPrometheus(),
  async fn() {
    const server = await startTestServer({ RUN_WORKER: "false" });
    try {
      const id = await create(server.url);
      for (let i = 0; i < 3; i++) {
        const res = await sendChunk(server.url, id, mediaBytes(1000, i), i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      const dup = await sendChunk(server.url, id, mediaBytes(1000, 0), 0);
      await dup.body?.cancel();
      const missing = await fetch(`${server.url}/check_status/nope/`);
      await missing.body?.cancel();
      const socket = await openSocket(wsUrl(server.url, `/ws/${id}`));
      await socket.next();
      const other = await create(server.url);
      await fetch(`${server.url}/complete_job/${other}/`, { method: "POST" })
        .then((r) => r.body?.cancel());
      await sendChunk(server.url, id, mediaBytes(500), 3).then((r) =>
        r.body?.cancel()
      );
      await fetch(`${server.url}/complete_job/${id}/`, { method: "POST" })
        .then((r) => r.body?.cancel());

      const res = await fetch(`${server.url}/metrics`);
      assert.equal(res.status, 200);
      assert.match(
        res.headers.get("content-type") ?? "",
        /^text\/plain; version=0\.0\.4/,
      );
      const text = await res.text();
      await socket.close();

      const check = await promtoolCheck(text);
      assert.ok(check.ok, `promtool check metrics failed:\n${check.output}`);

      assert.equal(
        sample(text, 'tapedeck_chunks_received_total{result="stored"}'),
        4,
      );
      assert.equal(
        sample(text, 'tapedeck_chunks_received_total{result="duplicate"}'),
        1,
      );
      assert.equal(sample(text, "tapedeck_received_bytes_total"), 3500);
      assert.equal(
        sample(
          text,
          'tapedeck_http_requests_total{route="/add_data/:id",method="POST",status="200"}',
        ),
        5,
      );
      assert.equal(
        sample(
          text,
          'tapedeck_http_requests_total{route="/check_status/:id",method="GET",status="404"}',
        ),
        1,
      );
      assert.equal(
        sample(
          text,
          'tapedeck_chunk_duration_seconds_count{protocol="api"}',
        ),
        5,
      );
      assert.equal(sample(text, "tapedeck_live_sockets"), 1);
      assert.equal(sample(text, "tapedeck_open_recordings"), 0);
      // RUN_WORKER=false: both completed recordings wait in the queue.
      assert.equal(sample(text, 'tapedeck_jobs{state="queued"}'), 2);
      assert.equal(sample(text, 'tapedeck_jobs{state="running"}'), 0);
      assert.equal(sample(text, "tapedeck_kv_up"), 1);
      assert.ok(sample(text, "process_resident_memory_bytes")! > 1e6);
      assert.ok(sample(text, 'tapedeck_memory_bytes{kind="heap_used"}')! > 0);
      assert.match(text, /# TYPE tapedeck_job_run_duration_seconds histogram/);
      assert.match(text, /# TYPE tapedeck_webhook_deliveries_total counter/);
      assert.equal(sample(text, "tapedeck_webhook_deliveries_pending"), 0);
      // Ids never become labels.
      assert.ok(!text.includes(id), "no recording id in the metrics");
    } finally {
      await server.close();
    }
  },
});

Deno.test("metrics: /metrics needs an API key when API_KEYS is set", async () => {
  const server = await startTestServer({ API_KEYS: "k1" });
  try {
    const anon = await fetch(`${server.url}/metrics`);
    assert.equal(anon.status, 401);
    await anon.body?.cancel();
    const keyed = await fetch(`${server.url}/metrics`, {
      headers: { Authorization: "Bearer k1" },
    });
    assert.equal(keyed.status, 200);
    assert.match(await keyed.text(), /tapedeck_http_requests_total/);
  } finally {
    await server.close();
  }
});

Deno.test({
  name:
    "metrics: a real Prometheus scrapes /metrics (with the API key) and answers a query for the chunk counter",
  ...needsPrometheus(),
  async fn() {
    const server = await startTestServer({ API_KEYS: "scrape-key" });
    const prom = await startPrometheus(new URL(server.url).host, {
      bearer: "scrape-key",
    });
    try {
      const auth = { Authorization: "Bearer scrape-key" };
      const id = await create(server.url, auth);
      for (let i = 0; i < 7; i++) {
        const res = await sendChunk(server.url, id, mediaBytes(2000, i), i);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      const expr = 'sum(tapedeck_chunks_received_total{result="stored"})';
      const deadline = Date.now() + 30_000;
      let value: number | undefined;
      while (Date.now() < deadline) {
        const result = await prom.query(expr);
        value = result.length ? Number(result[0].value[1]) : undefined;
        if (value === 7) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(value, 7, `Prometheus said ${value}:\n${prom.output()}`);
      const up = await prom.query('up{job="tapedeck"}');
      assert.equal(up[0].value[1], "1");
      console.log(
        `Prometheus ${prom.url} answered ${expr} = ${value} (scraping ${server.url}/metrics every 1 s)`,
      );
    } finally {
      await prom.stop();
      await server.close();
    }
  },
});
