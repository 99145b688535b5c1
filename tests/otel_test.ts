/**
 * Deno's built-in OpenTelemetry (OTEL_DENO=true) exports the service's own
 * spans: a child server sends OTLP/HTTP with the JSON protocol to a tiny
 * receiver started here, and the span names of a chunk commit, a job run
 * and a webhook delivery arrive.
 */

import assert from "node:assert/strict";
import {
  type ChildServer,
  mediaBytes,
  missingTool,
  sendChunk,
  spawnServer,
} from "./helpers.ts";
import { startReceiver } from "./support/webhook_receiver.ts";

const ffmpegMissing = await missingTool("ffmpeg");

interface OtlpSpan {
  name: string;
  attributes?: { key: string; value: Record<string, unknown> }[];
}

/** A minimal OTLP/HTTP (JSON) receiver: keeps the spans of /v1/traces. */
function startOtlpReceiver() {
  const spans: OtlpSpan[] = [];
  const paths = new Set<string>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      paths.add(`${path} ${req.headers.get("content-type")}`);
      const body = await req.text();
      if (path === "/v1/traces") {
        const json = JSON.parse(body);
        for (const rs of json.resourceSpans ?? []) {
          for (const ss of rs.scopeSpans ?? []) spans.push(...ss.spans ?? []);
        }
      }
      return Response.json({});
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    spans,
    paths,
    close: () => server.shutdown(),
  };
}

Deno.test({
  name:
    "otel: with OTEL_DENO=true the spans tapedeck.chunk.commit, tapedeck.job.run and tapedeck.webhook.deliver reach an OTLP/HTTP (JSON) receiver",
  ignore: ffmpegMissing,
  async fn() {
    const otlp = startOtlpReceiver();
    const hooks = startReceiver();
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-otel-" });
    let server: ChildServer | undefined;
    try {
      server = await spawnServer(dataDir, {
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_SERVICE_NAME: "tapedeck-test",
        WEBHOOK_URLS: hooks.url,
        JOB_MAX_ATTEMPTS: "1",
      });
      const res = await fetch(`${server.url}/create/`, { method: "POST" });
      const id = (await res.json()).video_id;
      for (let i = 0; i < 2; i++) {
        const r = await sendChunk(server.url, id, mediaBytes(1000, i), i);
        assert.equal(r.status, 200);
        await r.body?.cancel();
      }
      await fetch(`${server.url}/complete_job/${id}/`, { method: "POST" })
        .then((r) => r.body?.cancel());
      const wanted = [
        "tapedeck.chunk.commit",
        "tapedeck.job.run",
        "tapedeck.webhook.deliver",
      ];
      const deadline = Date.now() + 60_000;
      const names = () => new Set(otlp.spans.map((s) => s.name));
      while (
        wanted.some((n) => !names().has(n)) && Date.now() < deadline
      ) await new Promise((r) => setTimeout(r, 200));
      console.log(
        `OTLP requests: ${[...otlp.paths].join(", ")}; span names: ${
          [...names()].join(", ")
        }`,
      );
      for (const n of wanted) assert.ok(names().has(n), `span ${n} arrived`);
      const commit = otlp.spans.find((s) =>
        s.name === "tapedeck.chunk.commit"
      )!;
      const attr = Object.fromEntries(
        (commit.attributes ?? []).map((
          a,
        ) => [a.key, Object.values(a.value)[0]]),
      );
      assert.equal(attr["tapedeck.recording"], id);
      assert.ok(
        [...otlp.paths].some((p) => p.includes("application/json")),
        "the JSON protocol was used",
      );
    } finally {
      await server?.stop("SIGKILL");
      await otlp.close();
      await hooks.close();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
