/**
 * Turns the measurements into the targets verdicts and Markdown tables (the
 * same text is printed on the terminal and kept next to the JSON).
 */

import type {
  BigRun,
  ClosedLoopRun,
  DiskPhase,
  ProcessingRun,
  ReencodeRun,
  SoakRun,
  SteadyRun,
  StepUp,
} from "./phases.ts";
import type { LiveSummary } from "./live_probe.ts";
import type { OpenLoopResult } from "./load.ts";
import type { LiveViewRun } from "./live_view.ts";
import type { LiveMp4Run } from "./live_mp4.ts";
import type { ServerKind } from "./servers.ts";
import { bestS3, type PgKvPhase, type S3Phase } from "./s3_phases.ts";
import type { ClusterPhase } from "./cluster_phases.ts";

/** The machine the bench ran on. */
export interface MachineInfo {
  cpu: string;
  cores: number;
  ramGiB: number;
  os: string;
  kernel: string;
  deno: string;
  ffmpeg: string;
  node: string;
  peer: Record<string, string>;
  dataDisk: string;
}

/** Everything one run measured. */
export interface BenchResults {
  mode: "quick" | "full";
  command: string;
  startedAt: string;
  wallS: number;
  machine: MachineInfo;
  /** The tapedeck code that was run (folder, commit, local changes). */
  tree: string;
  disk?: DiskPhase;
  closedLoop?: ClosedLoopRun[];
  steady?: SteadyRun[];
  stepUp?: StepUp[];
  processing?: ProcessingRun[];
  reencode?: ReencodeRun;
  /** null: the server has no /ws. */
  live?: { steady50?: LiveSummary | null; processing?: LiveSummary | null };
  soak?: SoakRun;
  big?: BigRun;
  /** Chunk acknowledged to playable in a viewer watching live (issue 15). */
  liveView?: LiveViewRun[];
  /** A VP8 recording at real-time pace with a live encode (issue 15). */
  liveMp4?: LiveMp4Run;
  /** Issue 14: S3 storage (Swift), the PostgreSQL KV, API servers on both. */
  s3?: S3Phase;
  pgkv?: PgKvPhase;
  cluster?: ClusterPhase;
  /** Phases that failed, with why. */
  failures: { phase: string; error: string }[];
  targets: TargetVerdict[];
}

/** One target of issue #5 and how this run did. */
export interface TargetVerdict {
  target: string;
  measured: string;
  verdict: "met" | "missed" | "not run" | "n/a";
}

/** The columns of an open-loop load, filled by {@link loadCells}. */
const LOAD_COLUMNS = [
  "offered MB/s",
  "acked MB/s",
  "p50 ms",
  "p95 ms",
  "p99 ms",
  "max ms",
  "errors",
];

/** An open-loop load's cells under {@link LOAD_COLUMNS}. */
function loadCells(
  load: Omit<OpenLoopResult, "played">,
): (string | number)[] {
  return [
    fmt(load.offeredMBps),
    fmt(load.ackedMBps),
    fmt(load.latency.p50),
    fmt(load.latency.p95),
    fmt(load.latency.p99),
    fmt(load.latency.max, 0),
    load.errors,
  ];
}

/** An open-loop load in words: MB/s acked, p50 and p99, errors. */
function loadSummary(load: Omit<OpenLoopResult, "played">): string {
  return `${fmt(load.ackedMBps)} MB/s acked; p50 ${
    fmt(load.latency.p50)
  } ms, p99 ${fmt(load.latency.p99)} ms, ${load.errors} errors`;
}

/** Formats a number with `digits` decimals, or "n/a". */
export function fmt(n: number | null | undefined, digits = 1): string {
  return n === null || n === undefined || !Number.isFinite(n)
    ? "n/a"
    : n.toFixed(digits);
}

function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const widths = head.map((_, i) =>
    Math.max(...cells.map((r) => (r[i] ?? "").length))
  );
  const line = (r: string[]) =>
    `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(cells[0]),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...cells.slice(1).map(line),
  ].join("\n");
}

/**
 * CPU used by other processes on the machine during a phase (% of one
 * core): machine busy minus the server, its ffmpeg children and the client.
 */
export function otherCpuPercent(
  server: {
    machineCpuPercent: number;
    cpuPercent: number;
    childCpuPercent: number;
  },
  clientCpuPercent: number,
): number {
  return Math.max(
    0,
    server.machineCpuPercent - server.cpuPercent - server.childCpuPercent -
      clientCpuPercent,
  );
}

/** Best closed-loop MB/s of a server over the uploader counts tried. */
export function bestClosedLoop(
  runs: ClosedLoopRun[] | undefined,
  kind: ServerKind,
): ClosedLoopRun | undefined {
  const mine = (runs ?? []).filter((r) => r.kind === kind && r.errors === 0);
  return mine.sort((a, b) => b.MBps - a.MBps)[0];
}

function verdict(ok: boolean): "met" | "missed" {
  return ok ? "met" : "missed";
}

/** Judges every target of issue #5 against the measurements. */
export function judgeTargets(r: BenchResults): TargetVerdict[] {
  const out: TargetVerdict[] = [];
  const notRun = (target: string, why = "phase not run") =>
    out.push({ target, measured: why, verdict: "not run" });

  const n50 = r.steady?.find((s) => s.slots === 50);
  if (n50) {
    const l = n50.load.latency;
    out.push({
      target: "N=50 steady: p50 < 10 ms, p99 < 50 ms, 0 errors",
      measured: `${fmt(n50.load.ackedMBps)} MB/s acked; p50 ${
        fmt(l.p50)
      } ms, p99 ${fmt(l.p99)} ms, ${n50.load.errors} errors`,
      verdict: verdict(l.p50 < 10 && l.p99 < 50 && n50.load.errors === 0),
    });
  } else notRun("N=50 steady: p50 < 10 ms, p99 < 50 ms, 0 errors");

  const ours = bestClosedLoop(r.closedLoop, "tapedeck");
  const bare = bestClosedLoop(r.closedLoop, "bare");
  const tus = bestClosedLoop(r.closedLoop, "tus");
  if (ours && bare) {
    const ratio = ours.MBps / bare.MBps;
    out.push({
      target: "Saturation >= 80% of the bare Deno append server",
      measured: `${fmt(ours.MBps)} vs ${fmt(bare.MBps)} MB/s = ${
        fmt(ratio * 100, 0)
      }%`,
      verdict: verdict(ratio >= 0.8),
    });
  } else notRun("Saturation >= 80% of the bare Deno append server");
  if (ours && r.disk) {
    const ratio = ours.MBps / r.disk.flushed.MBps;
    out.push({
      target: "Saturation >= 70% of the disk's flushed write rate",
      measured: `${fmt(ours.MBps)} vs ${fmt(r.disk.flushed.MBps)} MB/s = ${
        fmt(ratio * 100, 0)
      }%`,
      verdict: verdict(ratio >= 0.7),
    });
  } else notRun("Saturation >= 70% of the disk's flushed write rate");
  if (ours && tus) {
    const ratio = ours.MBps / tus.MBps;
    out.push({
      target: "Saturation >= 1.2x the tus peer's (ours flushed, theirs not)",
      measured: `${fmt(ours.MBps)} vs ${fmt(tus.MBps)} MB/s = ${
        fmt(ratio, 2)
      }x`,
      verdict: verdict(ratio >= 1.2),
    });
  } else notRun("Saturation >= 1.2x the tus peer's");

  // The issue's own definition of the saturation point: the open-loop
  // step-up's last step with p99 <= 1 s and no errors.
  const stepOf = (kind: ServerKind) =>
    r.stepUp?.find((s) => s.kind === kind && s.saturationMBps > 0);
  const stepOurs = stepOf("tapedeck");
  for (
    const [kind, target, min] of [
      ["bare", "Saturation point (step-up) >= 80% of the bare server's", 0.8],
      ["tus", "Saturation point (step-up) >= 1.2x the tus peer's", 1.2],
    ] as const
  ) {
    const peer = stepOf(kind);
    if (stepOurs && peer) {
      const ratio = stepOurs.saturationMBps / peer.saturationMBps;
      out.push({
        target,
        measured: `${fmt(stepOurs.saturationMBps)} vs ${
          fmt(peer.saturationMBps)
        } MB/s acknowledged = ${
          min < 1 ? `${fmt(ratio * 100, 0)}%` : `${fmt(ratio, 2)}x`
        }`,
        verdict: verdict(ratio >= min),
      });
    } else notRun(target, "step-up not run for both servers");
  }

  const n100 = r.steady?.find((s) => s.slots === 100);
  if (n100) {
    out.push({
      target: "Server RSS < 150 MiB at N=100",
      measured: `VmHWM ${fmt(n100.server.hwmMiB)} MiB (peak VmRSS ${
        fmt(n100.server.peakRssMiB)
      })`,
      verdict: verdict(n100.server.hwmMiB < 150),
    });
  } else notRun("Server RSS < 150 MiB at N=100");
  if (r.soak) {
    out.push({
      target: "No RSS growth over the soak beyond 5 MiB",
      measured: `${fmt(r.soak.rssEarlyMiB)} -> ${
        fmt(r.soak.rssLateMiB)
      } MiB (minute 2 vs last minute) = ${fmt(r.soak.growthMiB)} MiB`,
      verdict: verdict(r.soak.growthMiB <= 5),
    });
  } else notRun("No RSS growth over the soak beyond 5 MiB", "full mode only");
  if (r.big) {
    out.push({
      target: "One 2 GiB upload raises RSS by <= 20 MiB",
      measured: `${fmt(r.big.rssBeforeMiB)} -> peak ${
        fmt(r.big.rssPeakMiB)
      } MiB = +${fmt(r.big.rssDeltaMiB)} MiB (bare Deno server: +${
        fmt(r.big.peers.find((p) => p.kind === "bare")?.rssDeltaMiB)
      } MiB)`,
      verdict: verdict(r.big.rssDeltaMiB <= 20),
    });
  } else notRun("One 2 GiB upload raises RSS by <= 20 MiB", "full mode only");

  const copy = r.processing?.find((p) => p.label === "5-min VP9");
  if (copy) {
    // With `last_chunk` the job waits for no grace: its time is processing.
    const ratio = copy.hintedMedianS / copy.byHandMedian.sameFilesS;
    out.push({
      target: "Stream-copy job (last_chunk given) within 10% of ffmpeg by hand",
      measured: `${fmt(copy.hintedMedianS, 2)} s vs ${
        fmt(copy.byHandMedian.sameFilesS, 2)
      } s (by hand: one-pass WebM+MP4 and poster at once) = ${
        fmt(ratio, 2)
      }x; vs MP4 alone ${fmt(copy.byHandMedian.mp4OnlyS, 2)} s = ${
        fmt(copy.hintedMedianS / copy.byHandMedian.mp4OnlyS, 2)
      }x`,
      verdict: verdict(ratio <= 1.1),
    });
    const grace = 1.0;
    out.push({
      target:
        "Ordered stop without last_chunk: complete within the hinted time + COMPLETE_GRACE_MS (1 s)",
      measured: `${fmt(copy.oursMedianS, 2)} s without, ${
        fmt(copy.hintedMedianS, 2)
      } s with last_chunk`,
      verdict: verdict(copy.oursMedianS <= copy.hintedMedianS + grace + 0.1),
    });
  } else notRun("Stream-copy job within 10% of ffmpeg by hand");
  const hour = r.processing?.find((p) => p.label === "1-hour VP9");
  if (hour) {
    out.push({
      target: "MP4 of a 1-hour VP9 recording ready < 5 s after complete_job",
      measured: `${fmt(hour.oursMedianS, 2)} s (${hour.files.join(", ")})`,
      verdict: verdict(
        hour.oursMedianS < 5 && hour.files.some((f) => f.endsWith(".mp4")),
      ),
    });
  } else notRun("MP4 of a 1-hour VP9 recording ready < 5 s after complete_job");
  if (r.reencode) {
    const l = r.reencode.latencyDuringJob;
    out.push({
      target: "Ingest p99 < 100 ms while a re-encode runs",
      measured: `p99 ${fmt(l.p99)} ms over ${l.count} sends in ${
        fmt(r.reencode.overlapS, 0)
      } s of re-encode (N=50)`,
      verdict: verdict(l.p99 < 100 && l.count > 0),
    });
  } else notRun("Ingest p99 < 100 ms while a re-encode runs");
  const live = r.live?.steady50;
  if (live === null) {
    out.push({
      target: "Status change to WebSocket message p99 < 100 ms",
      measured: "n/a (no /ws)",
      verdict: "n/a",
    });
  } else if (live) {
    out.push({
      target: "Status change to WebSocket message p99 < 100 ms",
      measured: `p99 ${
        fmt(live.changes.p99)
      } ms over ${live.changes.count} changes at N=50 (status changes: p99 ${
        fmt(live.statusChanges.p99)
      } ms over ${live.statusChanges.count})`,
      verdict: verdict(live.changes.p99 < 100),
    });
  } else notRun("Status change to WebSocket message p99 < 100 ms");
  const lm = r.liveMp4;
  const mp4Target =
    `MP4 of a VP8 recording at real-time pace listed < 5 s after complete_job (live encode)`;
  const ingestTarget = "Ingest p99 < 50 ms at N=50 while a live encode runs";
  if (lm) {
    out.push({
      target: mp4Target,
      measured: `${fmt(lm.mp4AfterStopS ?? NaN, 2)} s for ${
        fmt(lm.videoS / 60, 1)
      } min (WebM ${fmt(lm.webmAfterStopS ?? NaN, 2)} s; live encode ${
        lm.liveEncodeDone ? "kept up" : "did not end whole"
      })`,
      verdict: verdict(
        lm.mp4AfterStopS !== null && lm.mp4AfterStopS < 5 && lm.liveEncodeDone,
      ),
    });
    const l = lm.ingestDuringLive;
    out.push({
      target: ingestTarget,
      measured: `p99 ${
        fmt(l.p99)
      } ms over ${l.count} sends (${lm.ingestErrors} errors); the live encode used ${
        fmt(lm.liveCpuSPerMin, 1)
      } CPU s per recorded minute`,
      verdict: verdict(l.p99 < 50 && l.count > 0 && lm.ingestErrors === 0),
    });
  } else {
    notRun(mp4Target);
    notRun(ingestTarget);
  }
  for (const mode of ["mse", "hls"] as const) {
    const target = `Chunk acknowledged -> playable in a viewer p50 < 3 s (${
      mode === "mse" ? "from the upload, MSE" : "live encode, HLS"
    })`;
    const run = r.liveView?.find((v) => v.mode === mode);
    if (!run) {
      notRun(target);
      continue;
    }
    const l = run.latency;
    out.push({
      target,
      measured: `p50 ${fmt(l.p50 / 1000, 2)} s, p95 ${
        fmt(l.p95 / 1000, 2)
      } s, max ${
        fmt(l.max / 1000, 2)
      } s over ${l.count} chunks (${run.missed} never playable; page: ${run.pageMode})`,
      verdict: verdict(l.p50 < 3000 && run.pageMode === mode),
    });
  }
  out.push(...judgeIssue14(r, notRun));
  return out;
}

/** Issue 14's targets (and its figures without a bar, as "n/a"). */
function judgeIssue14(
  r: BenchResults,
  notRun: (target: string, why?: string) => void,
): TargetVerdict[] {
  const out: TargetVerdict[] = [];
  const s3Ours = bestS3(r.s3?.closedLoop, "tapedeck");
  const s3Bare = bestS3(r.s3?.closedLoop, "bare-s3");
  const satTarget =
    "S3 saturation >= 80% of a bare Deno server PUTting each body to the same Swift";
  if (s3Ours && s3Bare) {
    const ratio = s3Ours.MBps / s3Bare.MBps;
    out.push({
      target: satTarget,
      measured: `${fmt(s3Ours.MBps)} vs ${fmt(s3Bare.MBps)} MB/s = ${
        fmt(ratio, 2)
      }x (best of ${s3Ours.uploaders} / ${s3Bare.uploaders} uploaders)`,
      verdict: verdict(ratio >= 0.8),
    });
  } else notRun(satTarget);
  const s50 = r.s3?.steady.find((s) =>
    s.slots === 50 && (s.kind ?? "tapedeck") === "tapedeck"
  );
  const bare50 = r.s3?.steady.find((s) =>
    s.slots === 50 && s.kind === "bare-s3"
  );
  const steadyTarget = "N=50 steady on S3: p99 < 100 ms, 0 errors";
  if (s50) {
    const l = s50.load.latency;
    out.push({
      target: steadyTarget,
      measured: loadSummary(s50.load) +
        (s50.beforeStops
          ? `; before any recording stopped: p99 ${fmt(s50.beforeStops.p99)} ms`
          : "") +
        (bare50
          ? ` (the bare PUT server, same load and Swift: p50 ${
            fmt(bare50.load.latency.p50)
          }, p99 ${fmt(bare50.load.latency.p99)} ms${
            bare50.beforeStops
              ? `, ${fmt(bare50.beforeStops.p99)} before any stop`
              : ""
          })`
          : ""),
      verdict: verdict(l.p99 < 100 && s50.load.errors === 0),
    });
  } else notRun(steadyTarget);
  const kvTarget =
    "PostgreSQL KV commit and watch latency next to local Deno KV's (a figure, no bar)";
  if (r.pgkv?.runs.length) {
    out.push({
      target: kvTarget,
      measured: r.pgkv.runs.map((k) =>
        `${k.backend}: commit p50 ${fmt(k.commit.p50, 2)} / p99 ${
          fmt(k.commit.p99, 2)
        } ms, watch p50 ${fmt(k.watch.p50, 2)} / p99 ${fmt(k.watch.p99, 2)} ms`
      ).join("; "),
      verdict: "n/a",
    });
  } else notRun(kvTarget);
  const two = r.cluster?.runs.find((c) => c.servers === 2);
  const twoTarget =
    "Two API servers on PostgreSQL + S3 at N=100, round-robin (a figure, no bar)";
  if (two) {
    out.push({
      target: twoTarget,
      measured: `${loadSummary(two.load)}; /ws change p99 ${
        two.live.map((x) => x ? `${fmt(x.changes.p99)} ms` : "n/a").join(
          " / ",
        )
      }`,
      verdict: "n/a",
    });
  } else notRun(twoTarget);
  const memTarget =
    "API instance (RUN_WORKER=false) on S3 + PostgreSQL at N=100: memory < 512 MB (Deno Deploy)";
  const apis = (r.cluster?.runs ?? []).flatMap((c) =>
    c.procs.filter((p) => p.label.startsWith("api-")).map((p) => ({
      servers: c.servers,
      hwmMiB: p.proc.hwmMiB,
    }))
  );
  if (apis.length) {
    const worst = apis.reduce((a, b) => (b.hwmMiB > a.hwmMiB ? b : a));
    const mb = worst.hwmMiB * 1.048576;
    out.push({
      target: memTarget,
      measured: `highest VmHWM ${fmt(worst.hwmMiB)} MiB = ${
        fmt(mb)
      } MB (of ${apis.length} API processes; ${worst.servers} server(s) sharing the load)`,
      verdict: verdict(mb < 512),
    });
  } else notRun(memTarget);
  return out;
}

/** The whole report as Markdown. */
export function renderReport(r: BenchResults): string {
  const parts: string[] = [];
  const m = r.machine;
  parts.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${
      fmt(m.ramGiB)
    } GiB RAM, ${m.os}, kernel ${m.kernel}; ` +
      `Deno ${m.deno}, ${m.ffmpeg}, Node ${m.node}, @tus/server ${
        m.peer["@tus/server"]
      } + @tus/file-store ${
        m.peer["@tus/file-store"]
      }; data disk ${m.dataDisk}.`,
    `Code: ${r.tree}.`,
    `Mode: ${r.mode}; command: \`${r.command}\`; started ${r.startedAt}; took ${
      fmt(r.wallS / 60)
    } min. Client and servers share the machine; "other CPU %" is what other processes on the machine used meanwhile (% of one core), a noise flag.`,
  );

  parts.push("### Targets");
  parts.push(table(
    ["target", "measured", "verdict"],
    r.targets.map((t) => [t.target, t.measured, t.verdict]),
  ));

  if (r.steady?.length) {
    parts.push(
      "### Steady load (open loop, tapedeck)\n\nLatency is add_data from its scheduled send time to the 200.",
    );
    parts.push(table(
      [
        "N",
        "s",
        ...LOAD_COLUMNS,
        "srv RSS peak MiB",
        "srv CPU %",
        "client CPU %",
        "other CPU %",
        "client lag p99 ms",
      ],
      r.steady.map((s) => [
        s.slots,
        s.durationS,
        ...loadCells(s.load),
        fmt(s.server.hwmMiB),
        fmt(s.server.cpuPercent, 0),
        fmt(s.load.clientCpuPercent, 0),
        fmt(otherCpuPercent(s.server, s.load.clientCpuPercent), 0),
        fmt(s.load.clientLagMs.p99),
      ]),
    ));
  }

  if (r.disk || r.closedLoop?.length) {
    parts.push(
      "### Saturation (closed loop, 512 KiB chunks back to back) and baselines",
    );
    const rows: (string | number)[][] = [];
    if (r.disk) {
      for (
        const [name, d] of [
          ["disk: 512 KiB write + fdatasync, 1 file", r.disk.flushed],
          [
            "disk: new file per 512 KiB + fsync file & dir, 4 writers",
            r.disk.filePerChunk,
          ],
        ] as const
      ) {
        rows.push([
          name,
          "-",
          fmt(d.MBps),
          fmt(d.flushMs.p50),
          fmt(d.flushMs.p99),
          0,
          "-",
          "-",
          "-",
          "-",
        ]);
      }
    }
    for (const c of r.closedLoop ?? []) {
      rows.push([
        c.kind,
        c.uploaders,
        fmt(c.MBps),
        fmt(c.latency.p50),
        fmt(c.latency.p99),
        c.errors,
        fmt(c.server.cpuPercent, 0),
        fmt(c.server.hwmMiB),
        fmt(c.clientCpuPercent, 0),
        fmt(otherCpuPercent(c.server, c.clientCpuPercent), 0),
      ]);
    }
    parts.push(table(
      [
        "what",
        "uploaders",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "srv CPU %",
        "srv RSS MiB",
        "client CPU %",
        "other CPU %",
      ],
      rows,
    ));
    const ours = bestClosedLoop(r.closedLoop, "tapedeck");
    const ratios: string[] = [];
    for (const kind of ["bare", "tus"] as const) {
      const other = bestClosedLoop(r.closedLoop, kind);
      if (ours && other) {
        ratios.push(
          `ours/${kind} = ${fmt(ours.MBps / other.MBps, 2)}`,
        );
      }
    }
    if (ours && r.disk) {
      ratios.push(`ours/disk = ${fmt(ours.MBps / r.disk.flushed.MBps, 2)}`);
    }
    if (ratios.length) {
      parts.push(`Best of each (any uploader count): ${ratios.join("; ")}.`);
    }
  }

  for (const s of r.stepUp ?? []) {
    parts.push(
      `### Step-up to saturation (open loop, 100 recordings, shorter intervals): ${s.kind}`,
    );
    parts.push(table(
      [
        "x",
        "offered MB/s",
        "acked MB/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "client CPU %",
        "passed",
      ],
      s.steps.map((st) => [
        st.multiplier,
        fmt(st.offeredMBps),
        fmt(st.ackedMBps),
        fmt(st.latency.p50),
        fmt(st.latency.p99),
        fmt(st.latency.max, 0),
        st.errors,
        fmt(st.clientCpuPercent, 0),
        st.passed ? "yes" : "no",
      ]),
    ));
    parts.push(
      `Saturation point (last step with p99 <= 1 s and no errors): ${
        fmt(s.saturationMBps)
      } MB/s acknowledged; server VmHWM ${fmt(s.server.hwmMiB)} MiB.`,
    );
  }

  if (r.processing?.length || r.reencode) {
    parts.push(
      "### Processing (complete_job to status complete) vs ffmpeg by hand\n\n" +
        '"same files" runs by hand, from the recording file, the ffmpeg commands the service runs: the one-pass WebM + faststart MP4 command and the poster command (`-ss 1`, one frame), started together, until both end; no fsync, as the service now flushes after "complete". "MP4 only" is one `ffmpeg -c copy -movflags +faststart` (or the H.264 encode) from the recording.',
    );
    const rows: (string | number)[][] = (r.processing ?? []).map((p) => [
      `${p.label} (${fmt(p.bytes / 1e6, 0)} MB)`,
      fmt(p.durationS / 60, 1),
      fmt(p.oursMedianS, 2),
      fmt(p.hintedMedianS, 2),
      fmt(p.oursPerMinuteS, 3),
      fmt(p.byHandMedian.sameFilesS, 2),
      fmt(p.byHandMedian.mp4OnlyS, 2),
      fmt(p.oursMedianS / p.byHandMedian.sameFilesS, 2),
      p.status,
    ]);
    if (r.reencode) {
      const e = r.reencode;
      rows.push([
        `VP8 -> H.264 (${fmt(e.bytes / 1e6, 0)} MB), under N=50 ingest`,
        fmt(e.videoS / 60, 1),
        fmt(e.jobS, 2),
        "-",
        fmt(e.jobS === null ? NaN : e.jobS / (e.videoS / 60), 3),
        fmt(e.byHand.sameFilesS, 2),
        fmt(e.byHand.mp4OnlyS, 2),
        fmt(e.jobS === null ? NaN : e.jobS / e.byHand.sameFilesS, 2),
        e.jobStatus,
      ]);
    }
    if (r.big) {
      rows.push([
        `2 GiB VP9 ${fmt(r.big.durationS / 60, 0)}-min (${
          fmt(r.big.bytes / 1e6, 0)
        } MB)`,
        fmt(r.big.durationS / 60, 1),
        fmt(r.big.processingS, 2),
        "-",
        fmt(
          r.big.processingS === null
            ? NaN
            : r.big.processingS / (r.big.durationS / 60),
          3,
        ),
        "-",
        "-",
        "-",
        r.big.status,
      ]);
    }
    parts.push(table(
      [
        "recording",
        "min",
        "ours s",
        "ours with last_chunk s",
        "ours s per rec. min",
        "by hand, same files (one pass + poster) s",
        "by hand, MP4 only s",
        "ours / by hand",
        "status",
      ],
      rows,
    ));
  }

  for (const p of r.processing ?? []) {
    parts.push(
      `Stages of the ${p.label} job (first seen by polling every 100 ms with /ws, else 10 ms, s after complete_job): ${
        p.stages.map((s) => `${s.stage} ${fmt(s.atS, 2)}`).join(", ")
      }.`,
    );
  }

  if (r.reencode) {
    const e = r.reencode;
    parts.push(
      `While the re-encode ran (${
        fmt(e.overlapS, 0)
      } s of overlap): add_data p50 ${fmt(e.latencyDuringJob.p50)} ms, p99 ${
        fmt(e.latencyDuringJob.p99)
      } ms, max ${
        fmt(e.latencyDuringJob.max, 0)
      } ms over ${e.latencyDuringJob.count} sends; ${e.load.errors} errors; server CPU ${
        fmt(e.server.cpuPercent, 0)
      }% + ffmpeg ${fmt(e.server.childCpuPercent, 0)}%, client ${
        fmt(e.load.clientCpuPercent, 0)
      }%, other processes ${
        fmt(otherCpuPercent(e.server, e.load.clientCpuPercent), 0)
      }% (of one core; 2 cores = 200%).`,
    );
  }

  parts.push("### Memory and live updates");
  const mem: (string | number)[][] = [];
  const n100 = r.steady?.find((s) => s.slots === 100);
  if (n100) {
    mem.push([
      "N=100 steady",
      `VmHWM ${fmt(n100.server.hwmMiB)} MiB, RSS ${
        fmt(n100.server.startRssMiB)
      } -> ${fmt(n100.server.endRssMiB)} MiB`,
    ]);
  }
  if (r.soak) {
    mem.push([
      `soak ${
        fmt(r.soak.durationS / 60, 0)
      } min, ${r.soak.slots} recordings at once (60-120 s each)`,
      `RSS after warm-up (minute 2) ${
        fmt(r.soak.rssEarlyMiB)
      } MiB, last minute ${fmt(r.soak.rssLateMiB)} MiB, growth ${
        fmt(r.soak.growthMiB)
      } MiB, trend ${fmt(r.soak.server.rssSlopeMiBPerMin, 2)} MiB/min, VmHWM ${
        fmt(r.soak.server.hwmMiB)
      } MiB; ${r.soak.load.recordings} recordings, ${
        fmt(r.soak.load.ackedMBps)
      } MB/s, p99 ${
        fmt(r.soak.load.latency.p99)
      } ms, ${r.soak.load.errors} errors`,
    ]);
  }
  if (r.big) {
    for (const b of [r.big, ...r.big.peers]) {
      mem.push([
        `one 2 GiB recording, one chunk in flight: ${b.kind}`,
        `RSS ${fmt(b.rssBeforeMiB)} -> peak ${fmt(b.rssPeakMiB)} MiB (+${
          fmt(b.rssDeltaMiB)
        }), ${fmt(b.rssAfterMiB)} MiB 2 s after; upload ${
          fmt(b.uploadMBps)
        } MB/s`,
      ]);
    }
  }
  const liveRow = (name: string, l: LiveSummary | null | undefined) => {
    if (l === undefined) return;
    mem.push([
      name,
      l === null
        ? "n/a (no /ws)"
        : `change -> message p50 ${fmt(l.changes.p50)} ms, p99 ${
          fmt(l.changes.p99)
        } ms, max ${
          fmt(l.changes.max)
        } ms (${l.changes.count}); status changes p99 ${
          fmt(l.statusChanges.p99)
        } ms (${l.statusChanges.count})`,
    ]);
  };
  liveRow("/ws during N=50", r.live?.steady50);
  liveRow("/ws during processing", r.live?.processing);
  if (mem.length) parts.push(table(["what", "measured"], mem));

  const lm = r.liveMp4;
  if (lm) {
    parts.push(
      "### Encoding while recording (issue 15)\n\nA VP8 720p recording uploaded at real-time pace (1 s of media per chunk) to a server with LIVE_ENCODE_SLOTS=1, while N=50 simulated browsers upload too; times from the complete_job answer until `GET /video/<id>/` lists the file.",
    );
    parts.push(table(
      [
        "recording min",
        "MB",
        "WebM listed s",
        "MP4 listed s",
        "live encode",
        "ingest p50 ms",
        "ingest p99 ms",
        "live encode CPU s per rec. min",
        "live encode CPU % of one core",
      ],
      [[
        fmt(lm.videoS / 60, 1),
        fmt(lm.bytes / 1e6, 0),
        fmt(lm.webmAfterStopS ?? NaN, 2),
        fmt(lm.mp4AfterStopS ?? NaN, 2),
        lm.liveEncodeDone ? "kept up" : "did not end whole",
        fmt(lm.ingestDuringLive.p50),
        fmt(lm.ingestDuringLive.p99),
        fmt(lm.liveCpuSPerMin, 1),
        fmt(lm.liveCpuPercent, 0),
      ]],
    ));
  }

  if (r.liveView?.length) {
    parts.push(
      "### Watching live (chunk acknowledged -> playable in a viewer)\n\nA 720p VP8 recording uploaded in real time, 1 s of media per chunk, watched on its page in headless Chromium: from the add_data answer until the viewer's buffered media covers the chunk.",
    );
    parts.push(table(
      [
        "how",
        "page",
        "recordings",
        "chunks",
        "never playable",
        "p50 s",
        "p95 s",
        "max s",
        "page said behind s",
      ],
      r.liveView.map((v) => [
        v.mode === "mse" ? "from the upload (MSE)" : "live encode (HLS)",
        v.pageMode,
        v.recordings,
        v.chunks,
        v.missed,
        fmt(v.latency.p50 / 1000, 2),
        fmt(v.latency.p95 / 1000, 2),
        fmt(v.latency.max / 1000, 2),
        fmt(v.behindS),
      ]),
    ));
  }

  parts.push(...renderIssue14(r));

  if (r.failures.length) {
    parts.push("### Phases that failed");
    for (const f of r.failures) parts.push(`- ${f.phase}: ${f.error}`);
  }
  return parts.join("\n\n") + "\n";
}

/** Issue 14's tables: S3, the KV backends, API servers on both. */
function renderIssue14(r: BenchResults): string[] {
  const parts: string[] = [];
  const cpuOf = (
    procs: { label: string; proc: { cpuPercent: number } }[],
    label: string,
  ) => fmt(procs.find((p) => p.label === label)?.proc.cpuPercent, 0);
  if (r.s3) {
    parts.push(
      `### Object storage: Swift S3 on loopback (started in ${
        fmt(r.s3.swiftStartMs / 1000)
      } s)\n\ntapedeck with \`STORAGE_URL=s3://...\` (KV file local) against bench/s3_bare_server.ts, which PUTs each body as one object and answers after S3's 200. Swift's four servers run in one Python process ("swift CPU %").`,
    );
    const rows: (string | number)[][] = r.s3.closedLoop.map((c) => [
      `closed loop, ${c.kind}`,
      c.uploaders,
      fmt(c.MBps),
      fmt(c.latency.p50),
      fmt(c.latency.p99),
      c.errors,
      cpuOf(c.procs, c.kind),
      fmt(c.procs[0]?.proc.hwmMiB),
      cpuOf(c.procs, "swift"),
      fmt(c.clientCpuPercent, 0),
      fmt(c.otherCpuPercent, 0),
    ]);
    for (const s of r.s3.steady) {
      rows.push([
        `steady N=${s.slots} ${s.durationS} s, ${
          s.kind ?? "tapedeck"
        } (acked MB/s; p95 ${fmt(s.load.latency.p95)}, max ${
          fmt(s.load.latency.max, 0)
        } ms${
          s.beforeStops
            ? `; before the first stop p99 ${fmt(s.beforeStops.p99)} ms`
            : ""
        })`,
        s.slots,
        fmt(s.load.ackedMBps),
        fmt(s.load.latency.p50),
        fmt(s.load.latency.p99),
        s.load.errors,
        cpuOf(s.procs, s.kind ?? "tapedeck"),
        fmt(s.procs[0]?.proc.hwmMiB),
        cpuOf(s.procs, "swift"),
        fmt(s.load.clientCpuPercent, 0),
        fmt(s.otherCpuPercent, 0),
      ]);
    }
    parts.push(table([
      "what",
      "uploaders / N",
      "MB/s",
      "p50 ms",
      "p99 ms",
      "errors",
      "srv CPU %",
      "srv VmHWM MiB",
      "swift CPU %",
      "client CPU %",
      "other CPU %",
    ], rows));
  }
  if (r.pgkv) {
    parts.push(
      `### KV backends: commit, get and watch latency\n\nIn the bench process, as the app calls them: a commit is get + atomic check(recording) + set(recording) + set(chunk); "16 in flight" runs 16 such writers on their own recordings; watch is a set on one handle until \`watch\` on a second handle yields it. PostgreSQL: ${r.pgkv.postgres}.`,
    );
    parts.push(table(
      [
        "backend",
        "get p50 ms",
        "commit p50 ms",
        "commit p99 ms",
        "16 in flight: commits/s",
        "16 in flight: p99 ms",
        "watch p50 ms",
        "watch p99 ms",
        "watch max ms",
      ],
      r.pgkv.runs.map((k) => [
        k.backend,
        fmt(k.get.p50, 2),
        fmt(k.commit.p50, 2),
        fmt(k.commit.p99, 2),
        fmt(k.concurrent.perS, 0),
        fmt(k.concurrent.latency.p99, 1),
        fmt(k.watch.p50, 2),
        fmt(k.watch.p99, 2),
        fmt(k.watch.max, 1),
      ]),
    ));
  }
  if (r.cluster?.runs.length) {
    parts.push(
      "### API servers (RUN_WORKER=false) on PostgreSQL + S3 at N=100\n\nEach server its own process; with two, each recording's chunks alternate between them. A `/ws` observer on each server times change -> message (changes made on either server). No worker runs.",
    );
    parts.push(table(
      [
        "servers",
        "s",
        ...LOAD_COLUMNS,
        "srv VmHWM MiB",
        "srv CPU %",
        "swift CPU %",
        "postgres CPU %",
        "client CPU %",
        "other CPU %",
        "/ws change p99 ms",
      ],
      r.cluster.runs.map((c) => {
        const apis = c.procs.filter((p) => p.label.startsWith("api-"));
        return [
          c.servers,
          c.durationS,
          ...loadCells(c.load),
          apis.map((p) => fmt(p.proc.hwmMiB)).join(" / "),
          apis.map((p) => fmt(p.proc.cpuPercent, 0)).join(" / "),
          cpuOf(c.procs, "swift"),
          fmt(
            (c.procs.find((p) => p.label === "postgres")?.proc.cpuPercent ??
              NaN) +
              (c.procs.find((p) => p.label === "postgres")?.proc
                .childCpuPercent ?? NaN),
            0,
          ),
          fmt(c.load.clientCpuPercent, 0),
          fmt(c.otherCpuPercent, 0),
          c.live.map((l) => (l ? fmt(l.changes.p99) : "n/a")).join(" / "),
        ];
      }),
    ));
  }
  return parts;
}
