/**
 * ffmpeg and ffprobe as subprocesses: finding the binaries, running them with
 * progress, a timeout and an AbortSignal, and reading ffprobe's JSON.
 */

/** Where the binaries came from and what they are. */
export interface FfmpegTools {
  ffmpeg: string;
  ffprobe: string;
  /** "env", "PATH" or "npm", for each binary. */
  ffmpegSource: string;
  ffprobeSource: string;
  /** ffmpeg's major and minor version, e.g. [5, 1]. */
  version: [number, number];
  /** Why the tools cannot be used, when they cannot; every run then fails with it. */
  missing?: string;
  /** ffmpeg runs under `nice -n <nice>` (lower CPU priority than ingest). */
  nice?: { path: string; level: number };
  /** `setsid`, to run ffmpeg in its own process group (killed as a whole). */
  setsid?: string;
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

/**
 * Finds ffmpeg and ffprobe: env first, then PATH, then the npm packages.
 * When they cannot be found or run, the result says why in `missing`, and
 * every job fails with that reason (the server itself keeps running).
 */
export async function resolveTools(
  ffmpegPath?: string,
  ffprobePath?: string,
  options: { nice?: number } = {},
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
  try {
    const out = await new Deno.Command(ffmpeg.path, {
      args: ["-hide_banner", "-version"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const m = new TextDecoder().decode(out.stdout).match(
      /version\s+n?(\d+)\.(\d+)/,
    );
    if (m) version = [Number(m[1]), Number(m[2])];
  } catch (err) {
    missing = `ffmpeg (${ffmpeg.source}) could not be run: ${
      (err as Error).message.replace(/\s*\(os error.*$/, "")
    }; install ffmpeg or fix FFMPEG_PATH`;
  }
  const nicePath = options.nice ? await findOnPath("nice") : undefined;
  const setsid = await findOnPath("setsid");
  return {
    setsid,
    ffmpeg: ffmpeg.path,
    ffprobe: ffprobe.path,
    ffmpegSource: ffmpeg.source,
    ffprobeSource: ffprobe.source,
    version,
    missing,
    nice: nicePath && options.nice
      ? { path: nicePath, level: options.nice }
      : undefined,
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
  signal?: AbortSignal;
  /** The run is killed after this long. */
  timeoutMs?: number;
  /** Bytes fed to ffmpeg's standard input (`-i pipe:0`). */
  input?: ReadableStream<Uint8Array>;
}

function lastLines(text: string, n = 3): string {
  return text.trim().split("\n").map((l) => l.trim()).filter(Boolean).slice(-n)
    .join("; ")
    .replace(/(?:file:)?\/[^\s:'"]*\/([^\s/:'"]+)/g, "$1");
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
      ...(tools.nice ? [tools.nice.path, "-n", String(tools.nice.level)] : []),
      tools.ffmpeg,
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
      () => kill(`it ran longer than ${options.timeoutMs} ms`),
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

/** Runs ffprobe on a local file; `countPackets` also counts every packet. */
export async function probe(
  tools: FfmpegTools,
  path: string,
  options: { countPackets?: boolean; timeoutMs?: number } = {},
): Promise<ProbeResult> {
  assertUsable(tools);
  const args = [
    "-v",
    "error",
    "-protocol_whitelist",
    "file",
    "-print_format",
    "json",
    "-show_format",
    "-show_streams",
  ];
  if (options.countPackets) args.push("-count_packets");
  args.push(path);
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), options.timeoutMs ?? 120_000);
  try {
    const out = await new Deno.Command(tools.ffprobe, {
      args,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      signal: ac.signal,
    }).output().catch((err: Error) => {
      throw new FfmpegError(`ffprobe could not be started: ${err.message}`);
    });
    if (!out.success) {
      const msg = lastLines(new TextDecoder().decode(out.stderr)) ||
        `exit ${out.code}`;
      throw new FfmpegError(`ffprobe could not read the recording: ${msg}`);
    }
    const parsed = JSON.parse(new TextDecoder().decode(out.stdout));
    return { format: parsed.format, streams: parsed.streams ?? [] };
  } finally {
    clearTimeout(timer);
  }
}

/** Says at start-up which ffmpeg and ffprobe are in use. */
export function describeTools(tools: FfmpegTools): string {
  if (tools.missing) {
    return `WARNING: ${tools.missing}. Uploads work; processing jobs will fail until ffmpeg is available.`;
  }
  return `ffmpeg ${
    tools.version.join(".")
  } from ${tools.ffmpegSource} (${tools.ffmpeg}); ffprobe from ${tools.ffprobeSource} (${tools.ffprobe})`;
}
