/**
 * `deno run -A bench/compare.ts [--rounds=N] [--seconds=S] [--load=KIND]
 *   VARIANT...`
 *
 * Interleaved A/B runs of one ingest load against several tapedeck
 * variants, for questions a single bench run cannot settle on a noisy
 * machine ("is this change within noise?"): each round runs every variant
 * once, one after the other, so drifts of the machine (disk, other
 * processes) fall on all of them alike; the medians and ranges over the
 * rounds are printed at the end.
 *
 * A variant is `ROOT`, `ROOT|NAME=VALUE,...` or `|NAME=VALUE,...`: the
 * checkout tapedeck is served from (default: this one; e.g. a `git worktree`
 * of an older commit) and settings on top of the bench's. `--load` is
 * `closed:U` (U uploaders sending 512 KiB chunks back to back, as the
 * bench's saturation phase) or `steady:N` (N simulated browsers, as its
 * steady phase). Example, the slow-client listener on and off against the
 * round 3 code:
 *
 *   git worktree add /tmp/a1bfcbe a1bfcbe
 *   deno run -A bench/compare.ts --rounds=3 --load=closed:8 \
 *     "" "|HEADER_TIMEOUT_MS=0" /tmp/a1bfcbe
 */

import { parseArgs } from "node:util";
import { planLoad, runClosedLoop, runOpenLoop } from "./load.ts";
import { sourceRecording } from "./media.ts";
import { settleDisk, warmUp } from "./phases.ts";
import { initClockTicks, ProcSampler } from "./proc_stats.ts";
import {
  parseEnvList,
  ROOT,
  setTapedeckRoot,
  startTapedeck,
} from "./servers.ts";
import { median } from "./stats.ts";
import { apiClient } from "./upload_clients.ts";

/** One variant's figures in one round. */
interface Outcome {
  /** Acknowledged MB/s. */
  MBps: number;
  p50: number;
  p99: number;
  /** Server CPU milliseconds per acknowledged MB. */
  cpuMsPerMB: number;
  /** The server's peak RSS (VmHWM), MiB. */
  hwmMiB: number;
}

interface Variant {
  label: string;
  root: string;
  env: Record<string, string>;
}

function parseVariant(text: string): Variant {
  const [root, settings = ""] = text.split("|");
  const env = parseEnvList(settings, `the settings of "${text}"`);
  return { label: text || "(this checkout)", root: root || ROOT, env };
}

async function runOnce(
  variant: Variant,
  load: { kind: "closed" | "steady"; n: number },
  seconds: number,
  round: number,
  source: Uint8Array<ArrayBuffer>,
  dataRoot: string,
): Promise<Outcome> {
  setTapedeckRoot(variant.root);
  const dataDir = await Deno.makeTempDir({ dir: dataRoot, prefix: "ab-" });
  await settleDisk();
  const server = await startTapedeck(dataDir, variant.env);
  try {
    await warmUp(server, source);
    const sampler = new ProcSampler(server.pid, 250);
    const client = apiClient(server.url);
    let MBps: number, p50: number, p99: number;
    if (load.kind === "closed") {
      const r = await runClosedLoop(client, source, {
        uploaders: load.n,
        durationS: seconds,
        chunkBytes: 512 * 1024,
      });
      ({ MBps } = r);
      ({ p50, p99 } = r.latency);
    } else {
      const plans = planLoad({
        slots: load.n,
        durationS: seconds,
        seed: 600 + round,
      });
      const r = await runOpenLoop(client, plans, source);
      MBps = r.ackedMBps;
      ({ p50, p99 } = r.latency);
    }
    const proc = sampler.stop();
    return {
      MBps,
      p50,
      p99,
      cpuMsPerMB: (proc.cpuPercent * 10) / MBps,
      hwmMiB: proc.hwmMiB,
    };
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

function spread(values: number[], digits = 1): string {
  const sorted = values.toSorted((a, b) => a - b);
  return `${median(sorted).toFixed(digits)} (${sorted[0].toFixed(digits)}-${
    sorted.at(-1)!.toFixed(digits)
  })`;
}

async function main() {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      rounds: { type: "string", default: "3" },
      seconds: { type: "string", default: "8" },
      load: { type: "string", default: "closed:8" },
      "data-dir": { type: "string" },
    },
  });
  const m = /^(closed|steady):(\d+)$/.exec(values.load!);
  if (!m) throw new Error(`--load is closed:U or steady:N, not ${values.load}`);
  const load = { kind: m[1] as "closed" | "steady", n: Number(m[2]) };
  const variants = (positionals.length ? positionals : [""]).map(parseVariant);
  const rounds = Number(values.rounds);
  const seconds = Number(values.seconds);
  await initClockTicks();
  const source = await Deno.readFile((await sourceRecording()).path);
  const dataRoot = await Deno.makeTempDir({
    dir: values["data-dir"],
    prefix: "tapedeck-compare-",
  });
  const outcomes = new Map<Variant, Outcome[]>(variants.map((v) => [v, []]));
  try {
    for (let round = 0; round < rounds; round++) {
      for (const v of variants) {
        const o = await runOnce(v, load, seconds, round, source, dataRoot);
        outcomes.get(v)!.push(o);
        console.log(
          `round ${round + 1} ${v.label}: ${o.MBps.toFixed(1)} MB/s, p50 ${
            o.p50.toFixed(1)
          } p99 ${o.p99.toFixed(1)} ms, ${
            o.cpuMsPerMB.toFixed(2)
          } CPU ms/MB, VmHWM ${o.hwmMiB.toFixed(0)} MiB`,
        );
      }
    }
  } finally {
    await Deno.remove(dataRoot, { recursive: true }).catch(() => {});
  }
  console.log(
    `\n${load.kind}:${load.n}, ${rounds} rounds of ${seconds} s; median (min-max)\n`,
  );
  console.log(
    "| variant | MB/s | p50 ms | p99 ms | server CPU ms/MB | VmHWM MiB |",
  );
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const [v, os] of outcomes) {
    console.log(
      `| ${v.label.replaceAll("|", "\\|")} | ${
        spread(os.map((o) => o.MBps))
      } | ${spread(os.map((o) => o.p50))} | ${spread(os.map((o) => o.p99))} | ${
        spread(os.map((o) => o.cpuMsPerMB), 2)
      } | ${spread(os.map((o) => o.hwmMiB), 0)} |`,
    );
  }
}

if (import.meta.main) await main();
