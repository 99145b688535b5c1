// Over 400 lines: the one wrapper every ffmpeg/ffprobe run goes through (spawn, limits, nice, progress, timeouts, errors).
/**
 * ffmpeg and ffprobe as subprocesses: finding the binaries, running them with
 * progress, a timeout, an AbortSignal and a memory limit, and reading
 * ffprobe's output.
 */

/** Where the binaries came from and what they are. */
export interface FfmpegTools {
  ffmpeg: string;
  ffprobe: string;
  /** "env", "PATH", "npm", "none" (not found) or "not looked for", for each binary. */
  ffmpegSource: string;
  ffprobeSource: string;
  /** ffmpeg's major and minor version, e.g. [5, 1]. */
  version: [number, number];
  /** Why the tools cannot be used, when they cannot; every run then fails with it. */
  missing?: string;
  /** ffmpeg runs under `nice -n <nice>` (lower CPU priority than ingest). */
  nice?: { path: string; level: number };
  /** The `nice` binary, for runs that ask for their own level ({@link RunOptions.nice}). */
  nicePath?: string;
  /** `setsid`, to run ffmpeg in its own process group (killed as a whole). */
  setsid?: string;
  /**
   * How a run's address space is limited (RLIMIT_AS): util-linux `prlimit`,
   * else `sh -c 'ulimit -v ...'`; absent when neither works here.
   */
  memoryLimit?: MemoryLimiter;
  /** The limit in bytes applied when a run does not give its own (0: none). */
  maxMemoryBytes?: number;
}

/** A way to start a program with its address space limited. */
export interface MemoryLimiter {
  via: "prlimit" | "ulimit";
  /** The `prlimit` or `sh` binary. */
  path: string;
}

/** An ffmpeg or ffprobe run that failed; the message is readable. */
export class FfmpegError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FfmpegError";
  }
}

async function findOnPath(name: string): Promise<string | undefined> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    const candidate = `${dir}/${name}`;
    try {
      const st = await Deno.stat(candidate);
      if (st.isFile && ((st.mode ?? 0o111) & 0o111)) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Loads the binary shipped in an npm package (fetched from the registry on
 * first use) and makes sure it is executable (Deno does not run the
 * packages' install scripts, which would chmod it).
 */
async function findInNpm(pkg: string): Promise<string | undefined> {
  try {
    const specifier = `npm:${pkg}`;
    const mod = await import(specifier);
    const path = (mod.default ?? mod).path as string | undefined;
    if (!path) return undefined;
    const st = await Deno.stat(path);
    if (((st.mode ?? 0) & 0o111) === 0) await Deno.chmod(path, 0o755);
    return path;
  } catch {
    return undefined;
  }
}

async function resolveBinary(
  name: "ffmpeg" | "ffprobe",
  fromEnv: string | undefined,
): Promise<{ path: string; source: string }> {
  if (fromEnv) return { path: fromEnv, source: "env" };
  const onPath = await findOnPath(name);
  if (onPath) return { path: onPath, source: "PATH" };
  const npm = await findInNpm(
    name === "ffmpeg"
      ? "@ffmpeg-installer/ffmpeg@1.1.0"
      : "@ffprobe-installer/ffprobe@2.1.2",
  );
  if (npm) return { path: npm, source: "npm" };
  throw new FfmpegError(
    `${name} was not found: install it (apt-get install ffmpeg), put it on PATH, or set ${name.toUpperCase()}_PATH`,
  );
}

/** The argv that runs `binary` with its address space limited to `bytes`. */
function limitedArgv(
  limiter: MemoryLimiter | undefined,
  bytes: number,
  binary: string,
): string[] {
  if (!limiter || bytes <= 0) return [binary];
  if (limiter.via === "prlimit") {
    return [limiter.path, `--as=${bytes}`, "--", binary];
  }
  return [
    limiter.path,
    "-c",
    'ulimit -v "$0" && exec "$@"',
    String(Math.ceil(bytes / 1024)),
    binary,
  ];
}

/** The limit set when checking that a memory limiter works (a generous 4 GiB). */
const LIMITER_CHECK_BYTES = 4 * 1024 ** 3;

/**
 * Runs `ffmpeg -version` through the first memory limiter that works here
 * (prlimit, then sh's ulimit) and reads the version from it.
 */
async function versionWithLimiter(
  ffmpeg: string,
): Promise<{ version: [number, number]; limiter?: MemoryLimiter }> {
  const candidates: MemoryLimiter[] = [];
  const prlimit = await findOnPath("prlimit");
  if (prlimit) candidates.push({ via: "prlimit", path: prlimit });
  const sh = await findOnPath("sh") ??
    (await isExecutable("/bin/sh") ? "/bin/sh" : undefined);
  if (sh) candidates.push({ via: "ulimit", path: sh });
  let lastError: unknown;
  for (const limiter of [...candidates, undefined]) {
    const argv = limitedArgv(limiter, LIMITER_CHECK_BYTES, ffmpeg);
    try {
      const out = await new Deno.Command(argv[0], {
        args: [...argv.slice(1), "-hide_banner", "-version"],
        stdout: "piped",
        stderr: "null",
      }).output();
      if (!out.success && limiter) continue;
      const m = new TextDecoder().decode(out.stdout).match(
        /version\s+n?(\d+)\.(\d+)/,
      );
      return {
        version: m ? [Number(m[1]), Number(m[2])] : [0, 0],
        limiter,
      };
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    const st = await Deno.stat(path);
    return st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Finds ffmpeg and ffprobe: env first, then PATH, then the npm packages.
 * When they cannot be found or run, the result says why in `missing`, and
 * every job fails with that reason (the server itself keeps running).
 * `maxMemoryBytes` is the address-space limit of runs that do not give
 * their own.
 */
export async function resolveTools(
  ffmpegPath?: string,
  ffprobePath?: string,
  options: { nice?: number; maxMemoryBytes?: number } = {},
): Promise<FfmpegTools> {
  let ffmpeg = { path: "", source: "none" };
  let ffprobe = { path: "", source: "none" };
  try {
    ffmpeg = await resolveBinary("ffmpeg", ffmpegPath);
    ffprobe = await resolveBinary("ffprobe", ffprobePath);
  } catch (err) {
    return {
      ffmpeg: ffmpeg.path,
      ffprobe: ffprobe.path,
      ffmpegSource: ffmpeg.source,
      ffprobeSource: ffprobe.source,
      version: [0, 0],
      missing: (err as Error).message,
    };
  }
  let version: [number, number] = [0, 0];
  let missing: string | undefined;
  let memoryLimit: MemoryLimiter | undefined;
  try {
    ({ version, limiter: memoryLimit } = await versionWithLimiter(
      ffmpeg.path,
    ));
  } catch (err) {
    missing = `ffmpeg (${ffmpeg.source}) could not be run: ${
      (err as Error).message.replace(/\s*\(os error.*$/, "")
    }; install ffmpeg or fix FFMPEG_PATH`;
  }
  const nicePath = await findOnPath("nice");
  const setsid = await findOnPath("setsid");
  return {
    setsid,
    nicePath,
    ffmpeg: ffmpeg.path,
    ffprobe: ffprobe.path,
    ffmpegSource: ffmpeg.source,
    ffprobeSource: ffprobe.source,
    version,
    missing,
    nice: nicePath && options.nice
      ? { path: nicePath, level: options.nice }
      : undefined,
    memoryLimit,
    maxMemoryBytes: options.maxMemoryBytes,
  };
}

/** The source of tools that were not looked for ({@link toolsNotLookedFor}). */
const NOT_LOOKED_FOR = "not looked for";

/**
 * The tools of an instance that runs no processing worker (RUN_WORKER=false,
 * such as an API instance on Deno Deploy, where ffmpeg is not guaranteed):
 * nothing is searched on PATH, no npm package is fetched and no subprocess
 * is started; a run, should one be asked for, fails saying why.
 */
export function toolsNotLookedFor(): FfmpegTools {
  return {
    ffmpeg: "",
    ffprobe: "",
    ffmpegSource: NOT_LOOKED_FOR,
    ffprobeSource: NOT_LOOKED_FOR,
    version: [0, 0],
    missing:
      "this instance runs no processing worker (RUN_WORKER=false), so ffmpeg was not looked for",
  };
}

function assertUsable(tools: FfmpegTools): void {
  if (tools.missing) throw new FfmpegError(tools.missing);
}

/** Options of one ffmpeg run. */
export interface RunOptions {
  /** Called with the output time reached, in seconds. */
  onProgress?: (outTimeS: number) => void;
  /**
   * Called with the bytes written so far to the first output (`total_size`
   * of `-progress`); with streams copied that tracks the input read.
   */
  onBytes?: (totalSize: number) => void;
  /** Called with the video frames written so far (`frame` of `-progress`). */
  onFrames?: (frames: number) => void;
  signal?: AbortSignal;
  /** The run is killed after this long. */
  timeoutMs?: number;
  /** How the timeout reads in the error ("2000 ms plus ..."); `timeoutMs` ms by default. */
  timeoutText?: string;
  /** Bytes fed to ffmpeg's standard input (`-i pipe:0`). */
  input?: ReadableStream<Uint8Array>;
  /** Address-space limit of the run in bytes (0: none); the tools' own by default. */
  maxMemoryBytes?: number;
  /** `nice` level of this run (0 to 19), instead of the tools' (FFMPEG_NICE). */
  nice?: number;
}

/** The `nice` prefix of a run's argv: its own level, else the tools'. */
function niceArgv(tools: FfmpegTools, own: number | undefined): string[] {
  const level = own ?? tools.nice?.level ?? 0;
  const path = tools.nice?.path ?? tools.nicePath;
  return level > 0 && path ? [path, "-n", String(level)] : [];
}

/**
 * ffmpeg's last error lines, fit to show: server paths cut to file names,
 * and the heap addresses of its log prefixes (`[vp8 @ 0x55f6a13221c0]`)
 * and `subfile` URL options left out.
 */
export function lastLines(text: string, n = 3): string {
  return text.trim().split("\n").map((l) => l.trim()).filter(Boolean).slice(-n)
    .join("; ")
    .replace(/ @ 0x[0-9a-fA-F]+\]/g, "]")
    .replace(/subfile,,[^:]*,,:/g, "")
    .replace(/(?:file:)?\/[^\s:'"]*\/([^\s/:'"]+)/g, "$1");
}

/** The memory limit a run gets: its own, else the tools' default. */
function memoryOf(tools: FfmpegTools, own: number | undefined): number {
  return own ?? tools.maxMemoryBytes ?? 0;
}

/**
 * Runs ffmpeg with `args` (inputs and outputs), reading only local files.
 * Progress comes from `-progress pipe:1`. Throws {@link FfmpegError} with
 * ffmpeg's own last error lines when it fails, times out or is aborted.
 */
export async function runFfmpeg(
  tools: FfmpegTools,
  args: string[],
  options: RunOptions = {},
): Promise<void> {
  assertUsable(tools);
  const fullArgs = [
    "-hide_banner",
    "-nostdin",
    "-nostats",
    "-loglevel",
    "error",
    "-progress",
    "pipe:1",
    "-y",
    ...args,
  ];
  let child: Deno.ChildProcess;
  try {
    const argv = [
      ...(tools.setsid ? [tools.setsid] : []),
      ...niceArgv(tools, options.nice),
      ...limitedArgv(
        tools.memoryLimit,
        memoryOf(tools, options.maxMemoryBytes),
        tools.ffmpeg,
      ),
      ...fullArgs,
    ];
    child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: options.input ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw new FfmpegError(
      `ffmpeg could not be started: ${(err as Error).message}`,
    );
  }
  let killedFor = "";
  const kill = (why: string) => {
    if (killedFor) return;
    killedFor = why;
    try {
      // The whole process group: ffmpeg and anything it (or a wrapper) started.
      if (tools.setsid) Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // no such group
    }
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  };
  const timer = options.timeoutMs
    ? setTimeout(
      () =>
        kill(
          `it ran longer than ${
            options.timeoutText ?? `${options.timeoutMs} ms`
          }`,
        ),
      options.timeoutMs,
    )
    : undefined;
  const onAbort = () => kill("it was cancelled");
  options.signal?.addEventListener("abort", onAbort);
  if (options.signal?.aborted) onAbort();

  const feeding = options.input
    ? options.input.pipeTo(child.stdin).catch(() => {})
    : Promise.resolve();
  const readProgress = (async () => {
    let buf = "";
    for await (
      const text of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buf += text;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = line.match(/^out_time_(?:us|ms)=(\d+)/);
        if (m && options.onProgress) options.onProgress(Number(m[1]) / 1e6);
        const size = line.match(/^total_size=(\d+)/);
        if (size && options.onBytes) options.onBytes(Number(size[1]));
        const frames = line.match(/^frame=(\d+)/);
        if (frames && options.onFrames) options.onFrames(Number(frames[1]));
      }
    }
  })();
  const readErrors = (async () => {
    let text = "";
    for await (
      const piece of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      text = (text + piece).slice(-8192);
    }
    return text;
  })();
  try {
    const status = await child.status;
    // Output pipes close with the process, unless a child of it holds them:
    // give them a moment, then stop reading.
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((r) => graceTimer = setTimeout(r, 2000));
    await Promise.race([Promise.all([readProgress, feeding]), grace]);
    const stderr = await Promise.race([readErrors, grace.then(() => "")]);
    clearTimeout(graceTimer);
    if (killedFor) {
      throw new FfmpegError(`ffmpeg was stopped because ${killedFor}`);
    }
    if (!status.success) {
      throw new FfmpegError(
        `ffmpeg failed (exit ${status.code}): ${
          lastLines(stderr) || "no message"
        }`,
      );
    }
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/** The parts of ffprobe's JSON that we use. */
export interface ProbeResult {
  format?: { format_name?: string; duration?: string; size?: string };
  streams: Array<{
    index: number;
    codec_type?: string;
    codec_name?: string;
    width?: number;
    height?: number;
    channels?: number;
    sample_rate?: string;
    duration?: string;
    nb_read_packets?: string;
    nb_frames?: string;
  }>;
}

/**
 * What ffprobe reads: a URL, the protocols it may open and the demuxer,
 * which is always named so the format is never guessed from the bytes (an
 * HLS playlist, say, would make it open the files the playlist names).
 */
export interface ProbeInput {
  /** A `file:` or `subfile,...` URL, or `pipe:0` with `stream`. */
  url: string;
  /** The protocols allowed (`-protocol_whitelist`). */
  whitelist: string;
  /** The demuxer (`-f`). */
  format: "matroska" | "mov";
  /** Bytes fed to ffprobe's standard input when `url` is `pipe:0`. */
  stream?: ReadableStream<Uint8Array>;
}

/** Options of an ffprobe run. */
export interface ProbeOptions {
  /** The run is killed after this long (120 s by default). */
  timeoutMs?: number;
  /** Decoders refuse pictures with more pixels (`-max_pixels`). */
  maxPixels?: number;
  /** Address-space limit of the run in bytes (0: none); the tools' own by default. */
  maxMemoryBytes?: number;
}

/**
 * Runs ffprobe on `input` with `args` (before the input), handing each
 * line of its output to `onLine`. Throws {@link FfmpegError} with its last
 * error lines when it fails or times out.
 */
async function runProbe(
  tools: FfmpegTools,
  input: ProbeInput,
  args: string[],
  options: ProbeOptions,
  onLine: (line: string) => void,
): Promise<void> {
  assertUsable(tools);
  const argv = [
    ...limitedArgv(
      tools.memoryLimit,
      memoryOf(tools, options.maxMemoryBytes),
      tools.ffprobe,
    ),
    "-v",
    "error",
    "-protocol_whitelist",
    input.whitelist,
    "-f",
    input.format,
    ...(options.maxPixels ? ["-max_pixels", String(options.maxPixels)] : []),
    ...args,
    input.url,
  ];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: input.stream ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw new FfmpegError(
      `ffprobe could not be started: ${(err as Error).message}`,
    );
  }
  const timeoutMs = options.timeoutMs ?? 120_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, timeoutMs);
  const feeding = input.stream
    ? input.stream.pipeTo(child.stdin).catch(() => {})
    : Promise.resolve();
  const reading = (async () => {
    let buf = "";
    for await (
      const text of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buf += text;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
    if (buf) onLine(buf);
  })();
  const errors = (async () => {
    let text = "";
    for await (
      const piece of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      text = (text + piece).slice(-8192);
    }
    return text;
  })();
  try {
    const [status, , , stderr] = await Promise.all([
      child.status,
      reading,
      feeding,
      errors,
    ]);
    if (timedOut) {
      throw new FfmpegError(
        `ffprobe was stopped because it ran longer than ${timeoutMs} ms`,
      );
    }
    if (!status.success) {
      throw new FfmpegError(
        `ffprobe could not read the recording: ${
          lastLines(stderr) || `exit ${status.code}`
        }`,
      );
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Runs ffprobe for the format and streams; `countPackets` also counts every packet. */
export async function probe(
  tools: FfmpegTools,
  input: ProbeInput,
  options: ProbeOptions & { countPackets?: boolean } = {},
): Promise<ProbeResult> {
  const lines: string[] = [];
  await runProbe(
    tools,
    input,
    [
      "-print_format",
      "json",
      "-show_format",
      "-show_streams",
      ...(options.countPackets ? ["-count_packets"] : []),
    ],
    options,
    (line) => lines.push(line),
  );
  let parsed: { format?: ProbeResult["format"]; streams?: unknown[] };
  try {
    parsed = JSON.parse(lines.join("\n"));
  } catch {
    throw new FfmpegError("ffprobe printed no readable description");
  }
  return {
    format: parsed.format,
    streams: (parsed.streams ?? []) as ProbeResult["streams"],
  };
}

/** The packets of one stream, as the demuxer reads them. */
export interface PacketTally {
  packets: number;
  /** The earliest and latest timestamps in seconds (absent when none is known). */
  firstS?: number;
  lastS?: number;
}

/**
 * Counts the packets of the first video (`"v:0"`) or audio (`"a:0"`)
 * stream with the demuxer ffmpeg uses, reading the whole input but decoding
 * nothing past what ffprobe needs to open it; memory stays constant however
 * many packets there are.
 */
export async function probePackets(
  tools: FfmpegTools,
  input: ProbeInput,
  stream: "v:0" | "a:0",
  options: ProbeOptions = {},
): Promise<PacketTally> {
  const tally: PacketTally = { packets: 0 };
  await runProbe(
    tools,
    input,
    [
      "-select_streams",
      stream,
      "-show_entries",
      "packet=pts_time,dts_time",
      "-of",
      "csv=p=0",
    ],
    options,
    (line) => {
      if (!line.trim()) return;
      tally.packets++;
      const [pts, dts] = line.split(",").map(Number);
      const t = Number.isFinite(pts) ? pts : dts;
      if (!Number.isFinite(t)) return;
      tally.firstS = Math.min(tally.firstS ?? t, t);
      tally.lastS = Math.max(tally.lastS ?? t, t);
    },
  );
  return tally;
}

/** Says at start-up which ffmpeg and ffprobe are in use. */
export function describeTools(tools: FfmpegTools): string {
  if (tools.ffmpegSource === NOT_LOOKED_FOR) {
    return "ffmpeg: not looked for (RUN_WORKER=false: this instance takes uploads and serves files; workers elsewhere process)";
  }
  if (tools.missing) {
    return `WARNING: ${tools.missing}. Uploads work; processing jobs will fail until ffmpeg is available.`;
  }
  return `ffmpeg ${
    tools.version.join(".")
  } from ${tools.ffmpegSource} (${tools.ffmpeg}); ffprobe from ${tools.ffprobeSource} (${tools.ffprobe}); ${
    describeMemoryLimit(tools)
  }`;
}

/** Says how (and whether) the memory of ffmpeg and ffprobe runs is limited. */
export function describeMemoryLimit(tools: FfmpegTools): string {
  const amount = tools.maxMemoryBytes
    ? `${Math.round(tools.maxMemoryBytes / 2 ** 20)} MiB`
    : "FFMPEG_MAX_MEMORY_BYTES";
  if (!tools.memoryLimit) {
    return "WARNING: neither prlimit nor sh can limit memory here, so ffmpeg and ffprobe run without FFMPEG_MAX_MEMORY_BYTES";
  }
  return tools.memoryLimit.via === "prlimit"
    ? `their address space is limited to ${amount} by prlimit (${tools.memoryLimit.path})`
    : `their address space is limited to ${amount} by ulimit -v in ${tools.memoryLimit.path}`;
}
