/**
 * Reads a process's memory and CPU from /proc: VmRSS and VmHWM from
 * /proc/<pid>/status, utime+stime (and waited-for children) from
 * /proc/<pid>/stat, sampled on a timer while a phase runs.
 */

import { mean, slope } from "./stats.ts";

/** One reading of a process. */
export interface ProcSample {
  /** Time of the reading (ms, performance.now()). */
  t: number;
  rssKiB: number;
  hwmKiB: number;
  /** utime + stime of the process itself, in seconds. */
  cpuS: number;
  /**
   * CPU of its children (ffmpeg), in seconds: cutime + cstime of the ones
   * it waited for plus utime + stime of the ones still running.
   */
  childCpuS: number;
  /** Busy CPU of the whole machine so far (all processes), in seconds. */
  machineBusyS: number;
}

/** Busy seconds of all CPUs together, from the first line of /proc/stat. */
export function machineBusyS(): number {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    const [user, nice, system, _idle, _iowait, irq, softirq, steal] = line
      .trim().split(/\s+/).slice(1).map(Number);
    return (user + nice + system + irq + softirq + steal) / clockTicks;
  } catch {
    return NaN;
  }
}

let clockTicks = 100;

/** Reads the kernel's clock ticks per second once (getconf CLK_TCK). */
export async function initClockTicks(): Promise<void> {
  try {
    const out = await new Deno.Command("getconf", {
      args: ["CLK_TCK"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const ticks = Number(new TextDecoder().decode(out.stdout).trim());
    if (ticks > 0) clockTicks = ticks;
  } catch {
    // keep 100, the Linux default
  }
}

/** The fields of /proc/<pid>/stat; `field(14)` is utime (1-based, as in proc(5)). */
function statFields(pid: number | string): (n: number) => number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the parenthesized command name start at field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (n: number) => Number(fields[n - 3]);
}

/** utime + stime (s) of the running children of `pid`. */
function runningChildrenCpuS(pid: number): number {
  let ticks = 0;
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const f = statFields(entry.name);
      if (f(4) === pid) ticks += f(14) + f(15);
    } catch {
      // the process ended meanwhile
    }
  }
  return ticks / clockTicks;
}

/** Reads one sample of `pid`, or null when the process is gone. */
export function readProc(pid: number, children = false): ProcSample | null {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const f = statFields(pid);
    const kib = (name: string) =>
      Number(status.match(new RegExp(`^${name}:\\s+(\\d+)`, "m"))?.[1] ?? 0);
    return {
      t: performance.now(),
      rssKiB: kib("VmRSS"),
      hwmKiB: kib("VmHWM"),
      cpuS: (f(14) + f(15)) / clockTicks,
      childCpuS: (f(16) + f(17)) / clockTicks +
        (children ? runningChildrenCpuS(pid) : 0),
      machineBusyS: machineBusyS(),
    };
  } catch {
    return null;
  }
}

/** Memory and CPU of a process over a phase. */
export interface ProcSummary {
  samples: number;
  startRssMiB: number;
  endRssMiB: number;
  peakRssMiB: number;
  /** VmHWM at the end: the peak RSS since the process started. */
  hwmMiB: number;
  /** CPU of the process over the phase, in % of one core. */
  cpuPercent: number;
  /** CPU of its waited-for children (ffmpeg) over the phase, % of one core. */
  childCpuPercent: number;
  /** Least-squares RSS trend over the phase, MiB per minute. */
  rssSlopeMiBPerMin: number;
  /** Busy CPU of the whole machine over the phase, % of one core. */
  machineCpuPercent: number;
}

/** Samples a process every `intervalMs` until {@link ProcSampler.stop}. */
export class ProcSampler {
  readonly pid: number;
  readonly samples: ProcSample[] = [];
  #timer?: ReturnType<typeof setInterval>;

  constructor(pid: number, intervalMs = 250) {
    this.pid = pid;
    const first = readProc(pid, true);
    if (first) this.samples.push(first);
    this.#timer = setInterval(() => {
      const s = readProc(pid, true);
      if (s) this.samples.push(s);
    }, intervalMs);
  }

  /** Takes a last sample, stops, and summarizes. */
  stop(): ProcSummary {
    clearInterval(this.#timer);
    const last = readProc(this.pid, true);
    if (last) this.samples.push(last);
    return summarizeSamples(this.samples);
  }

  /** Mean RSS (MiB) of the samples taken between two times (ms). */
  meanRssMiB(fromMs: number, toMs: number): number {
    return mean(
      this.samples.filter((s) => s.t >= fromMs && s.t <= toMs).map((s) =>
        s.rssKiB / 1024
      ),
    );
  }
}

/** Summarizes samples taken by {@link ProcSampler}. */
export function summarizeSamples(samples: ProcSample[]): ProcSummary {
  if (samples.length === 0) {
    return {
      samples: 0,
      startRssMiB: NaN,
      endRssMiB: NaN,
      peakRssMiB: NaN,
      hwmMiB: NaN,
      cpuPercent: NaN,
      childCpuPercent: NaN,
      rssSlopeMiBPerMin: NaN,
      machineCpuPercent: NaN,
    };
  }
  const first = samples[0];
  const last = samples[samples.length - 1];
  const wallS = Math.max(1e-3, (last.t - first.t) / 1000);
  return {
    samples: samples.length,
    startRssMiB: first.rssKiB / 1024,
    endRssMiB: last.rssKiB / 1024,
    peakRssMiB: Math.max(...samples.map((s) => s.rssKiB)) / 1024,
    hwmMiB: last.hwmKiB / 1024,
    cpuPercent: ((last.cpuS - first.cpuS) / wallS) * 100,
    childCpuPercent: ((last.childCpuS - first.childCpuS) / wallS) * 100,
    machineCpuPercent: ((last.machineBusyS - first.machineBusyS) / wallS) *
      100,
    rssSlopeMiBPerMin: slope(
      samples.map((s) => (s.t - first.t) / 60_000),
      samples.map((s) => s.rssKiB / 1024),
    ),
  };
}

/** CPU seconds used so far by this (the bench client) process. */
export function selfCpuS(): number {
  return readProc(Deno.pid)?.cpuS ?? NaN;
}
