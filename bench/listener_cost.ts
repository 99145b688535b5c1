/**
 * `deno run -A bench/listener_cost.ts [--seconds=S] [--rounds=N]`
 *
 * What the slow-client listener costs per byte, without the app: three small
 * servers, each its own process under the flags of `deno task serve`, take
 * 512 KiB POST bodies from 8 clients back to back on loopback, and their CPU
 * per MiB is read from /proc:
 *
 * - `guarded`: {@link serveGuarded} (lib/http/slow_guard.ts, `node:http`)
 *   reading each body with the app's {@link PieceReader};
 * - `node-copy`: a bare `node:http` server copying each `data` event into a
 *   256 KiB buffer (what a body path without the stream bridge would cost);
 * - `plain`: {@link serveGuarded} with `headerTimeoutMs` 0 (`Deno.serve`) and
 *   the same reader.
 *
 * docs/benchmarks.md ("Round 4, second pass") cites its figures.
 */

import http from "node:http";
import { parseArgs } from "node:util";
import { serveGuarded } from "../lib/http/slow_guard.ts";
import { PieceReader } from "../lib/storage/body_reader.ts";
import { initClockTicks, readProc } from "./proc_stats.ts";
import { median } from "./stats.ts";

const KINDS = ["guarded", "node-copy", "plain"] as const;
type Kind = (typeof KINDS)[number];

async function serve(kind: Kind): Promise<void> {
  const announce = (port: number) => console.log(`listening on ${port}`);
  if (kind === "node-copy") {
    const buffer = new Uint8Array(256 * 1024);
    const server = http.createServer((req, res) => {
      let filled = 0;
      let total = 0;
      req.on("data", (data: Uint8Array) => {
        for (let at = 0; at < data.length;) {
          const n = Math.min(buffer.length - filled, data.length - at);
          buffer.set(data.subarray(at, at + n), filled);
          filled += n;
          at += n;
          if (filled === buffer.length) {
            total += filled;
            filled = 0;
          }
        }
      });
      req.on("end", () => {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ size: total + filled }));
      });
    });
    server.listen(0, "127.0.0.1", () => {
      announce((server.address() as { port: number }).port);
    });
    return;
  }
  const server = await serveGuarded({
    hostname: "127.0.0.1",
    port: 0,
    headerTimeoutMs: kind === "guarded" ? 20_000 : 0,
    bodyMinBytesPerS: 1024,
    bodyRateWindowMs: 30_000,
    bodyTimeoutMs: 0,
  }, async (req) => {
    const reader = new PieceReader(req.body!);
    let size = 0;
    for (;;) {
      const piece = await reader.next(() => {}, Infinity);
      if (!piece) break;
      size += piece.length;
    }
    reader.release();
    return Response.json({ size });
  });
  announce(server.addr.port);
}

/** Posts 512 KiB bodies from 8 clients for `seconds`; returns MiB sent. */
async function load(port: number, seconds: number): Promise<number> {
  const body = new Uint8Array(512 * 1024);
  const end = performance.now() + seconds * 1000;
  let sent = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (performance.now() < end) {
      const res = await fetch(`http://127.0.0.1:${port}/`, {
        method: "POST",
        body,
      });
      await res.arrayBuffer();
      sent++;
    }
  }));
  return sent / 2;
}

async function measure(kind: Kind, seconds: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--max-semi-space-size=1",
      import.meta.filename!,
      `--serve=${kind}`,
    ],
    env: { MALLOC_MMAP_THRESHOLD_: "131072" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening on \d+/.test(text)) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`${kind} server exited`);
    text += value;
  }
  const port = Number(/listening on (\d+)/.exec(text)![1]);
  try {
    const before = readProc(child.pid)!;
    const t0 = performance.now();
    const mib = await load(port, seconds);
    const wallS = (performance.now() - t0) / 1000;
    const after = readProc(child.pid)!;
    return {
      MiBps: mib / wallS,
      cpuMsPerMiB: ((after.cpuS - before.cpuS) * 1000) / mib,
    };
  } finally {
    child.kill("SIGKILL");
    await child.status;
    reader.cancel().catch(() => {});
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      serve: { type: "string" },
      seconds: { type: "string", default: "6" },
      rounds: { type: "string", default: "2" },
    },
  });
  if (values.serve) {
    await serve(values.serve as Kind);
  } else {
    await initClockTicks();
    const results = new Map<Kind, number[]>(KINDS.map((k) => [k, []]));
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const kind of KINDS) {
        const r = await measure(kind, Number(values.seconds));
        results.get(kind)!.push(r.cpuMsPerMiB);
        console.log(
          `${kind}: ${r.MiBps.toFixed(0)} MiB/s, ${
            r.cpuMsPerMiB.toFixed(2)
          } server CPU ms per MiB`,
        );
      }
    }
    console.log("\nserver CPU ms per MiB, median (min-max):");
    for (const [kind, xs] of results) {
      const sorted = xs.toSorted((a, b) => a - b);
      console.log(
        `  ${kind}: ${median(sorted).toFixed(2)} (${sorted[0].toFixed(2)}-${
          sorted.at(-1)!.toFixed(2)
        })`,
      );
    }
  }
}
