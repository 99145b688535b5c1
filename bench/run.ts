/**
 * `deno task bench [--quick] [--only=phase,...] [--data-dir=DIR]
 *   [--server-root=DIR] [--server-env=NAME=VALUE,...] [--soak-s=SECONDS]`
 *
 * Benchmarks tapedeck's ingest and processing against the disk's flushed
 * write rate, a bare Deno append server, a stock tus server on Node.js and
 * ffmpeg by hand, all in the same run on the same machine. Prints Markdown
 * tables and writes bench/results/<timestamp>.json and .md.
 *
 * Phases: disk, closed, steady, stepup, processing, reencode, livemp4,
 * liveview, big, soak (big and soak run in full mode only; liveview needs
 * Chromium). The quick mode takes a few minutes once the media cache
 * (bench/.cache) exists. `--server-root`
 * benchmarks tapedeck from another checkout; `--server-env` adds settings
 * to every tapedeck server; `--soak-s` shortens the soak.
 *
 * Issue 14's phases s3, pgkv and cluster (bench/s3_phases.ts,
 * bench/cluster_phases.ts) start their own Swift S3 and PostgreSQL on
 * loopback with the tests' helpers (tests/support/).
 */

import { parseArgs } from "node:util";
import { statfs } from "node:fs/promises";
import {
  bigRecording,
  ffmpegVersion,
  hourRecording,
  sourceRecording,
  vp8Recording,
} from "./media.ts";
import {
  bigPhase,
  closedLoopPhase,
  diskPhase,
  liveMp4Phase,
  liveViewPhase,
  log,
  processingPhase,
  reencodePhase,
  settingsFor,
  soakPhase,
  steadyPhase,
  stepUpPhase,
} from "./phases.ts";
import { clusterPhase } from "./cluster_phases.ts";
import { pgKvPhase, s3Phase } from "./s3_phases.ts";
import { initClockTicks } from "./proc_stats.ts";
import {
  type BenchResults,
  judgeTargets,
  type MachineInfo,
  renderReport,
} from "./report.ts";
import {
  BENCH,
  installPeer,
  parseEnvList,
  peerVersions,
  ROOT,
  setTapedeckEnv,
  setTapedeckRoot,
} from "./servers.ts";

const PHASES = [
  "disk",
  "closed",
  "steady",
  "stepup",
  "processing",
  "reencode",
  "livemp4",
  "liveview",
  "big",
  "soak",
  "s3",
  "pgkv",
  "cluster",
] as const;

async function commandOutput(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "unknown";
  }
}

/** Describes this machine: CPU, cores, RAM, OS, kernel and tool versions. */
export async function machineInfo(dataRoot: string): Promise<MachineInfo> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const osRelease = await Deno.readTextFile("/etc/os-release").catch(() => "");
  const df = (await commandOutput("df", ["-hT", dataRoot])).split("\n")[1]
    ?.split(/\s+/) ?? [];
  const s = await statfs(dataRoot);
  return {
    cpu: cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? "unknown",
    cores: navigator.hardwareConcurrency,
    ramGiB: Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0) / 1024 ** 2,
    os: osRelease.match(/^PRETTY_NAME="?([^"\n]+)"?/m)?.[1] ?? Deno.build.os,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    ffmpeg: (await ffmpegVersion()).replace(/^ffmpeg version /, "ffmpeg "),
    node: await commandOutput("node", ["--version"]),
    peer: await peerVersions(),
    dataDisk: `${df[1] ?? "?"} ${df[2] ?? "?"} (${
      (Number(s.bavail) * Number(s.bsize) / 1e9).toFixed(0)
    } GB free at start) under ${dataRoot}`,
  };
}

/** Which code was benchmarked: the folder, its commit and local changes. */
export async function describeTree(root: string): Promise<string> {
  const head = await commandOutput("git", [
    "-C",
    root,
    "rev-parse",
    "--short",
    "HEAD",
  ]);
  const changed = (await commandOutput("git", [
    "--no-optional-locks",
    "-C",
    root,
    "status",
    "--porcelain",
  ])).split("\n").filter(Boolean).length;
  return `${root} at ${head || "no git"}${
    changed ? ` + ${changed} uncommitted files` : ""
  }`;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      "data-dir": { type: "string" },
      "server-root": { type: "string" },
      "server-env": { type: "string" },
      "soak-s": { type: "string" },
    },
  });
  const quick = values.quick ?? false;
  const only = values.only
    ? new Set(values.only.split(",").map((s) => s.trim()))
    : undefined;
  for (const name of only ?? []) {
    if (!(PHASES as readonly string[]).includes(name)) {
      throw new Error(`unknown phase "${name}"; phases: ${PHASES.join(", ")}`);
    }
  }
  const wanted = (phase: (typeof PHASES)[number]) =>
    (only ? only.has(phase) : true) &&
    (!quick || (phase !== "big" && phase !== "soak"));

  const serverRoot = values["server-root"] ?? ROOT;
  setTapedeckRoot(serverRoot);
  setTapedeckEnv(parseEnvList(values["server-env"] ?? "", "--server-env"));
  const started = performance.now();
  const dataRoot = await Deno.makeTempDir({
    dir: values["data-dir"],
    prefix: "tapedeck-bench-",
  });
  await initClockTicks();
  log(`data in ${dataRoot}; preparing media and the tus peer`);
  await installPeer();
  const settings = settingsFor(quick, dataRoot);
  const sourceFile = await sourceRecording();
  const source = await Deno.readFile(sourceFile.path);
  settings.warmUpSource = source;
  if (values["soak-s"]) settings.soakS = Number(values["soak-s"]);

  const results: BenchResults = {
    mode: quick ? "quick" : "full",
    command: ["deno task bench", ...Deno.args].join(" "),
    startedAt: new Date().toISOString(),
    wallS: 0,
    machine: await machineInfo(dataRoot),
    tree: await describeTree(serverRoot),
    live: {},
    failures: [],
    targets: [],
  };

  const phase = async (
    name: (typeof PHASES)[number],
    fn: () => Promise<void>,
  ) => {
    if (!wanted(name)) return;
    log(`phase ${name}`);
    try {
      await fn();
    } catch (err) {
      const error = (err as Error).message ?? String(err);
      log(`phase ${name} failed: ${error}`);
      results.failures.push({ phase: name, error: error.split("\n")[0] });
    }
  };

  try {
    await phase("disk", async () => {
      results.disk = await diskPhase(settings, source);
    });
    await phase("closed", async () => {
      results.closedLoop = await closedLoopPhase(settings, source);
    });
    await phase("steady", async () => {
      results.steady = await steadyPhase(settings, source, (live) => {
        results.live!.steady50 = live;
      });
    });
    await phase("stepup", async () => {
      results.stepUp = await stepUpPhase(settings, source);
    });
    await phase("processing", async () => {
      results.processing = await processingPhase(settings, [
        { label: "5-min VP9", media: sourceFile },
        { label: "1-hour VP9", media: await hourRecording() },
      ], (live) => {
        results.live!.processing = live;
      });
    });
    await phase("reencode", async () => {
      const vp8 = await vp8Recording(quick ? 40 : 120);
      results.reencode = await reencodePhase(settings, source, vp8);
    });
    await phase("livemp4", async () => {
      const vp8 = await vp8Recording(quick ? 40 : 300);
      results.liveMp4 = await liveMp4Phase(settings, source, vp8);
    });
    await phase("liveview", async () => {
      results.liveView = await liveViewPhase(settings, await vp8Recording(20));
    });
    await phase("big", async () => {
      results.big = await bigPhase(settings, await bigRecording());
    });
    await phase("soak", async () => {
      results.soak = await soakPhase(settings, source);
    });
    await phase("s3", async () => {
      results.s3 = await s3Phase(settings, source);
    });
    await phase("pgkv", async () => {
      results.pgkv = await pgKvPhase(settings);
    });
    await phase("cluster", async () => {
      results.cluster = await clusterPhase(settings, source);
    });
  } finally {
    await Deno.remove(dataRoot, { recursive: true }).catch(() => {});
  }

  results.wallS = (performance.now() - started) / 1000;
  results.targets = judgeTargets(results);
  const report = renderReport(results);
  console.log(report);
  const stamp = results.startedAt.replace(/[:.]/g, "-");
  await Deno.mkdir(`${BENCH}results`, { recursive: true });
  await Deno.writeTextFile(
    `${BENCH}results/${stamp}.json`,
    JSON.stringify(results, null, 2),
  );
  await Deno.writeTextFile(`${BENCH}results/${stamp}.md`, report);
  log(
    `wrote bench/results/${stamp}.json and .md in ${
      (results.wallS / 60).toFixed(1)
    } min`,
  );
  return results.failures.length ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
