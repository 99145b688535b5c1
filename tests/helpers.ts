/**
 * Shared test helpers: real servers on port 0 over a temp data folder, test
 * recordings made with the real ffmpeg, and polling of the real API.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type Config, loadConfig } from "../lib/core/config.ts";
import { type Service, startService } from "../main.ts";
import { backendEnv, dropBackendState } from "./support/backend.ts";

/** Whether the tests run in CI (a missing tool is then a failure). */
export const IN_CI = (Deno.env.get("CI") ?? "") !== "" &&
  Deno.env.get("CI") !== "false";

/** The project root folder. */
export const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** A server running in this process. */
export interface TestServer {
  url: string;
  dataDir: string;
  service: Service;
  close(): Promise<void>;
}

/**
 * The config of an instance over `env.DATA_DIR` on this test process's
 * backend (TEST_BACKEND, see tests/support/backend.ts), for tests that open
 * a context of their own beside a test server.
 */
export async function testConfig(
  env: Record<string, string> & { DATA_DIR: string },
): Promise<Config> {
  return loadConfig({
    MIN_FREE_BYTES: "0",
    ...await backendEnv(env.DATA_DIR, env),
    ...env,
  });
}

/**
 * Starts the real app on 127.0.0.1:0 with a temp data folder, on this test
 * process's backend (by default a KV file in the folder; TEST_BACKEND, see
 * tests/support/backend.ts). Every instance runs in this process, so a
 * shared KV is allowed with local-disk storage (`sameProcess`).
 */
export async function startTestServer(
  env: Record<string, string> = {},
): Promise<TestServer> {
  const dataDir = env.DATA_DIR ??
    await Deno.makeTempDir({ prefix: "tapedeck-test-" });
  const config = loadConfig({
    DATA_DIR: dataDir,
    MIN_FREE_BYTES: "0",
    JOB_BACKOFF_MS: "100",
    LOG_LEVEL: "error",
    // Live encodes only where a test asks for them (they take a core).
    LIVE_ENCODE_SLOTS: "0",
    ...await backendEnv(dataDir, env),
    ...env,
  });
  const service = await startService(config, { sameProcess: true });
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    service.app.fetch,
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    dataDir,
    service,
    async close() {
      await server.shutdown();
      await service.close();
      if (!env.DATA_DIR) {
        await dropBackendState(dataDir);
        await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      }
    },
  };
}

/**
 * Runs `fn` with a test server that runs no job worker (RUN_WORKER=false,
 * then `env`), closed after it either way.
 */
export async function withServer(
  env: Record<string, string>,
  fn: (server: TestServer) => Promise<void>,
): Promise<void> {
  const server = await startTestServer({ RUN_WORKER: "false", ...env });
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

/** A server running as its own `deno run main.ts` process. */
export interface ChildServer {
  url: string;
  child: Deno.ChildProcess;
  /** Everything the process printed so far. */
  output(): string;
  /** Sends a signal and waits for the process to end. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** A worker running as its own `deno run worker.ts` process. */
export interface ChildWorker {
  /** The worker's id (a job's `workerId` while it runs it). */
  id: string;
  child: Deno.ChildProcess;
  /** Everything the process printed so far. */
  output(): string;
  /** Sends a signal and waits for the process to end. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/**
 * Runs `entry` with Deno over `dataDir` and resolves once its output matches
 * `ready` (with the match), failing if it exits or does not get there
 * within a minute.
 */
async function spawnDeno(
  entry: string,
  dataDir: string,
  env: Record<string, string>,
  ready: RegExp,
): Promise<
  {
    match: RegExpMatchArray;
    child: Deno.ChildProcess;
    output(): string;
    stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
  }
> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", "--unstable-cron", `${ROOT}${entry}`],
    cwd: ROOT,
    env: {
      PORT: "0",
      HOSTNAME: "127.0.0.1",
      DATA_DIR: dataDir,
      MIN_FREE_BYTES: "0",
      JOB_BACKOFF_MS: "100",
      LIVE_ENCODE_SLOTS: "0",
      ...await backendEnv(dataDir, env, { lone: true }),
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  let resolveReady: (match: RegExpMatchArray) => void;
  let rejectReady: (err: Error) => void;
  const readyPromise = new Promise<RegExpMatchArray>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const piece of stream) {
      text += decoder.decode(piece, { stream: true });
      const m = text.match(ready);
      if (m) resolveReady(m);
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  child.status.then(() =>
    rejectReady(new Error(`${entry} exited before it was ready:\n${text}`))
  );
  const timer = setTimeout(
    () => rejectReady(new Error(`${entry} did not start:\n${text}`)),
    60_000,
  );
  const match = await readyPromise.finally(() => clearTimeout(timer));
  return {
    match,
    child,
    output: () => text,
    async stop(signal: Deno.Signal = "SIGKILL") {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
      const status = await child.status;
      await pumps;
      return status;
    },
  };
}

/**
 * Starts `main.ts` as a child process on a free port over `dataDir`, on this
 * test process's backend (tests/support/backend.ts).
 */
export async function spawnServer(
  dataDir: string,
  env: Record<string, string> = {},
): Promise<ChildServer> {
  const { match, ...rest } = await spawnDeno(
    "main.ts",
    dataDir,
    env,
    /listening on (http:\/\/[^/\s]+)\//,
  );
  return { url: match[1], ...rest };
}

/**
 * Starts `worker.ts` (the worker alone) as a child process over `dataDir`,
 * on this test process's backend; it needs a shared KV and storage.
 */
export async function spawnWorker(
  dataDir: string,
  env: Record<string, string> = {},
): Promise<ChildWorker> {
  const { match, ...rest } = await spawnDeno(
    "worker.ts",
    dataDir,
    env,
    /tapedeck worker ([0-9a-f-]{36}) running/,
  );
  return { id: match[1], ...rest };
}

/** A tus PATCH of `body` at `offset` (tus 1.0.0, octet-stream). */
export function tusPatch(
  url: string | URL,
  body: Uint8Array<ArrayBuffer>,
  offset = 0,
): Promise<Response> {
  return fetch(url, {
    method: "PATCH",
    headers: {
      "tus-resumable": "1.0.0",
      "upload-offset": String(offset),
      "content-type": "application/offset+octet-stream",
    },
    body,
  });
}

/** The Debian Chromium binary (the /usr/bin wrapper prints a shell error). */
export const CHROMIUM_PATH = "/usr/lib/chromium/chromium";

/** Whether `name -version` runs. */
async function commandRuns(name: string): Promise<boolean> {
  try {
    const out = await new Deno.Command(name, {
      args: ["-version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false; // not installed
  }
}

/** Fails in CI, or returns false with a visible notice, when ffmpeg is missing. */
export async function haveFfmpeg(): Promise<boolean> {
  if (await commandRuns("ffmpeg")) return true;
  if (IN_CI) throw new Error("ffmpeg is required in CI but was not found");
  console.warn("SKIPPED: ffmpeg is not installed");
  return false;
}

/** A program some tests need: ffmpeg (with ffprobe), or {@link CHROMIUM_PATH}. */
export type TestTool = "ffmpeg" | "chromium";

const checked = new Map<TestTool, Promise<boolean>>();

async function findTool(tool: TestTool): Promise<boolean> {
  if (tool === "ffmpeg") {
    return await commandRuns("ffmpeg") && await commandRuns("ffprobe");
  }
  try {
    await Deno.stat(CHROMIUM_PATH);
    return true;
  } catch {
    return false;
  }
}

async function checkTool(tool: TestTool): Promise<boolean> {
  if (await findTool(tool)) return false;
  const what = tool === "ffmpeg" ? "ffmpeg or ffprobe" : CHROMIUM_PATH;
  if (IN_CI) throw new Error(`${what} is required in CI but was not found`);
  console.warn(
    `IGNORED: ${what} is not installed, so the tests that need it are ignored`,
  );
  return true;
}

/**
 * Whether the tests that need `tool` cannot run here, for
 * `Deno.test({ ignore })`: computed once at the top of a test module
 * (`const ffmpegMissing = await missingTool("ffmpeg")`). False when the
 * tool is installed; true with a notice when it is missing, so the summary
 * reports those tests as ignored; in CI (`CI=true`) a missing tool throws
 * instead, so the module, and the run, fail.
 */
export function missingTool(tool: TestTool): Promise<boolean> {
  let found = checked.get(tool);
  if (!found) {
    found = checkTool(tool);
    checked.set(tool, found);
  }
  return found;
}

/** Codec pairs a test recording can be made with. */
export type TestCodec = "vp8" | "vp9" | "h264" | "vp9-mp4";

/**
 * Makes a MediaRecorder-like recording: WebM written live (no duration, no
 * cues), a moving test picture and a tone, `seconds` long at `fps`.
 */
export async function makeRecording(
  path: string,
  options: { codec?: TestCodec; seconds?: number; fps?: number } = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const codec = options.codec ?? "vp9";
  const seconds = options.seconds ?? 4;
  const fps = options.fps ?? 30;
  const video = codec === "vp8"
    ? vpxArgs("libvpx", "600k")
    : codec === "h264"
    ? ["-c:v", "libx264", "-preset", "ultrafast"]
    : vpxArgs("libvpx-vp9", "600k");
  const container = codec === "vp9-mp4"
    ? ["-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof"]
    : ["-f", codec === "h264" ? "matroska" : "webm", "-live", "1"];
  return await ffmpegFile(path, [
    ...lavfiInputs(
      `testsrc2=size=320x240:rate=${fps}`,
      "sine=frequency=440:sample_rate=48000",
      seconds,
    ),
    ...video,
    "-g",
    String(fps * 2),
    "-c:a",
    "libopus",
    ...container,
  ], "ffmpeg could not make the test recording");
}

/**
 * Runs ffmpeg or ffprobe quietly (`-v error`) and returns what it wrote to
 * stdout; when it fails, throws an Error with its stderr (after
 * `failure: ` when given).
 */
export async function runMediaTool(
  tool: "ffmpeg" | "ffprobe",
  args: string[],
  failure?: string,
): Promise<string> {
  const out = await new Deno.Command(tool, {
    args: ["-v", "error", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const stderr = new TextDecoder().decode(out.stderr);
    throw new Error(failure ? `${failure}: ${stderr}` : stderr);
  }
  return new TextDecoder().decode(out.stdout);
}

/**
 * Writes `path` with ffmpeg (`args`: its inputs and output options,
 * overwriting) and returns the file's bytes; `failure` as for
 * {@link runMediaTool}.
 */
export async function ffmpegFile(
  path: string,
  args: string[],
  failure?: string,
): Promise<Uint8Array<ArrayBuffer>> {
  await runMediaTool("ffmpeg", ["-y", ...args, path], failure);
  return await Deno.readFile(path);
}

/**
 * ffprobe's `-show_entries <entries>` of a file as CSV lines without
 * section names (`csv=p=0`): of `stream` only ("v:0") when given, with
 * packets counted when `countPackets`.
 */
export function ffprobeEntries(
  path: string,
  entries: string,
  options: { stream?: string; countPackets?: boolean } = {},
): Promise<string> {
  return runMediaTool("ffprobe", [
    ...(options.stream ? ["-select_streams", options.stream] : []),
    ...(options.countPackets ? ["-count_packets"] : []),
    "-show_entries",
    entries,
    "-of",
    "csv=p=0",
    path,
  ], "ffprobe failed");
}

/** A test recording's inputs: lavfi's `video` and `audio`, `seconds` long. */
export function lavfiInputs(
  video: string,
  audio: string,
  seconds: number,
): string[] {
  return [
    "-f",
    "lavfi",
    "-i",
    video,
    "-f",
    "lavfi",
    "-i",
    audio,
    "-t",
    String(seconds),
  ];
}

/** A VP8/VP9 encode (`libvpx`, `libvpx-vp9`) set for speed, at `bitrate`. */
export function vpxArgs(
  encoder: "libvpx" | "libvpx-vp9",
  bitrate: string,
): string[] {
  return [
    "-c:v",
    encoder,
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-b:v",
    bitrate,
  ];
}

/** One stream of ffprobe's JSON, the fields tests compare. */
export interface ProbedStream {
  codec_type: string;
  codec_name: string;
  width?: number;
  height?: number;
  channels?: number;
  sample_rate?: string;
}

/** What ffprobe says about a file, with packets counted. */
export interface ProbeSummary {
  formatName: string;
  durationS: number;
  /** The format's duration as ffprobe printed it (none for a live WebM). */
  formatDuration?: string;
  /** Every stream as ffprobe printed it. */
  streams: ProbedStream[];
  video?: { codec: string; packets: number; width: number; height: number };
  audio?: { codec: string; packets: number };
}

/** Runs the real ffprobe on a file. */
export async function probeFile(path: string): Promise<ProbeSummary> {
  const j = JSON.parse(
    await runMediaTool("ffprobe", [
      "-count_packets",
      "-print_format",
      "json",
      "-show_format",
      "-show_streams",
      path,
    ], "ffprobe failed"),
  );
  // deno-lint-ignore no-explicit-any
  const v = j.streams.find((s: any) => s.codec_type === "video");
  // deno-lint-ignore no-explicit-any
  const a = j.streams.find((s: any) => s.codec_type === "audio");
  return {
    formatName: j.format.format_name,
    durationS: Number(j.format.duration),
    formatDuration: j.format.duration,
    streams: j.streams,
    video: v
      ? {
        codec: v.codec_name,
        packets: Number(v.nb_read_packets),
        width: v.width,
        height: v.height,
      }
      : undefined,
    audio: a
      ? { codec: a.codec_name, packets: Number(a.nb_read_packets) }
      : undefined,
  };
}

/** The per-packet MD5s of a file's video stream, copied (not decoded). */
export async function videoPacketHashes(path: string): Promise<string[]> {
  return (await videoFrameMd5(path, ["-c", "copy"]))
    .map((l) => l.split(",").map((f) => f.trim()).at(-1)!);
}

/**
 * ffmpeg's `framemd5` lines (no comments) of a file's video stream, read
 * with `codecArgs` (`-c copy`: the packets as stored).
 */
export async function videoFrameMd5(
  path: string,
  codecArgs: string[],
): Promise<string[]> {
  const out = await runMediaTool("ffmpeg", [
    "-i",
    path,
    "-map",
    "0:v:0",
    ...codecArgs,
    "-f",
    "framemd5",
    "-",
  ], "framemd5 failed");
  return out.split("\n").filter((l) => l && !l.startsWith("#"));
}

/** Polls `check_status` until the status is one of `wanted` (or times out). */
export async function waitForStatus(
  url: string,
  id: string,
  wanted: string[] = ["complete", "failed"],
  timeoutMs = 60_000,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  let last: Record<string, unknown> = {};
  while (Date.now() < deadline) {
    const res = await fetch(`${url}/check_status/${id}/`);
    last = await res.json();
    if (wanted.includes(String(last.status))) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `recording ${id} did not reach ${wanted.join("/")}: ${
      JSON.stringify(last)
    }`,
  );
}

/** Splits bytes into pieces of the given sizes, cycling through them. */
export function splitBytes(
  bytes: Uint8Array,
  sizes: number[],
): Uint8Array<ArrayBuffer>[] {
  const pieces: Uint8Array<ArrayBuffer>[] = [];
  let offset = 0;
  for (let i = 0; offset < bytes.length; i++) {
    const size = sizes[i % sizes.length];
    pieces.push(bytes.slice(offset, offset + size));
    offset += size;
  }
  return pieces;
}

/** POSTs `/create/` and returns the new id. */
export async function createSession(url: string): Promise<string> {
  const res = await fetch(`${url}/create/`, { method: "POST" });
  if (res.status !== 200) throw new Error(`create failed: ${res.status}`);
  return (await res.json()).video_id;
}

/** Sends one raw chunk, optionally with an index; returns the response. */
export async function sendChunk(
  url: string,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  index?: number,
): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "video/webm" };
  if (index !== undefined) headers["x-chunk-index"] = String(index);
  return await fetch(`${url}/add_data/${id}/`, {
    method: "POST",
    body: bytes,
    headers,
  });
}

/**
 * A request body sent in `pieces` parts, `gapMs` apart; `state.phase` says
 * how far it got ("body" once a part went, "sent" after the last).
 */
export function pacedBody(
  bytes: Uint8Array,
  pieces: number,
  gapMs: number,
  state: { phase: string },
): ReadableStream<Uint8Array> {
  const size = Math.ceil(bytes.length / pieces);
  let off = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (off > 0) await new Promise((r) => setTimeout(r, gapMs));
      state.phase = "body";
      const end = Math.min(bytes.length, off + size);
      controller.enqueue(bytes.slice(off, end));
      off = end;
      if (off >= bytes.length) {
        controller.close();
        state.phase = "sent";
      }
    },
  }, { highWaterMark: 0 });
}

/** `size` bytes that start with a WebM (EBML) header magic, then `fill`. */
export function mediaBytes(size: number, fill = 0): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size).fill(fill);
  bytes.set([0x1a, 0x45, 0xdf, 0xa3].slice(0, size));
  return bytes;
}

/**
 * Asserts a JSON error reply: the status, a JSON content type, an `error`
 * sentence without a stack trace, optionally matching `pattern`.
 */
export async function expectError(
  res: Response,
  status: number,
  pattern?: RegExp,
): Promise<string> {
  const text = await res.text();
  assert.equal(
    res.status,
    status,
    `expected ${status}, got ${res.status}: ${text}`,
  );
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = JSON.parse(text);
  assert.equal(typeof body.error, "string");
  assert.ok(body.error.length > 10, "the error must be a sentence");
  assert.doesNotMatch(body.error, /\s+at\s+\S+:\d+:\d+/, "no stack traces");
  if (pattern) assert.match(body.error, pattern);
  return body.error;
}
