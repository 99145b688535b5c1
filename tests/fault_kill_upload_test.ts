/**
 * Fault: `kill -9` of the server while recordings are being uploaded
 * (GitHub issue #4, "Faults to survive").
 *
 * Three clients upload 1-8 MiB chunks of three different recordings, each
 * chunk streamed slowly in pieces, to a real `deno run main.ts` child. The
 * server is SIGKILLed at many moments chosen by a seeded PRNG: at random
 * times, in the middle of a body, right after a chunk's bytes reached the
 * disk (before the KV commit), and right after the KV file changed (before
 * the reply). After each kill the test opens the KV file itself and looks at
 * the disk to classify where the kill landed, checks that every chunk that
 * got a 200 is there and nothing else is half there, restarts the server on
 * the same folder and lets each client retry its unanswered chunk. At the
 * end every session is processed, its finished file's video packets are
 * compared with the source, and its committed chunk files are read back in
 * index order and compared byte for byte (SHA-256) with the source.
 *
 * Set KILL_SEED to replay a run.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  type ChunkEntry,
  chunkPrefix,
  type Recording,
  recordingKey,
} from "../lib/kv/keys.ts";
import {
  type ChildServer,
  ffmpegFile,
  lavfiInputs,
  missingTool,
  spawnServer,
  videoPacketHashes,
  waitForStatus,
} from "./helpers.ts";
import { seededRandom } from "./support/random.ts";

const ffmpegMissing = await missingTool("ffmpeg");

const MIB = 1024 * 1024;
const MIN_KILLS = 50;
const MAX_KILLS = 90;
/** Wall-clock budget for the kill loop; the test fails if it ends with too few kills. */
const KILL_LOOP_BUDGET_MS = 130_000;

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A lossless, noisy H.264 recording in live Matroska: big (~23 MB) and quick to make. */
async function makeBigRecording(
  path: string,
  seed: number,
): Promise<Uint8Array> {
  return await ffmpegFile(path, [
    ...lavfiInputs(
      `testsrc2=size=320x240:rate=30,noise=alls=40:allf=t:all_seed=${seed}`,
      `sine=frequency=${300 + seed * 50}:sample_rate=48000`,
      6,
    ),
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-qp",
    "0",
    "-g",
    "60",
    "-c:a",
    "libopus",
    "-f",
    "matroska",
    "-live",
    "1",
  ]);
}

/** Where an unanswered request was when the server died, judged from KV and disk. */
type Landing =
  | "mid-body, no byte on disk"
  | "mid-body, part on disk"
  | "bytes on disk, KV not committed"
  | "KV committed, reply not received"
  | "create or complete unanswered";

interface Session {
  id: string;
  pieces: Uint8Array[];
  shas: string[];
  acked: Set<number>;
  completeAcked: boolean;
  /** Chunks the last inspection found committed in KV (index -> entry). */
  committed: Map<number, ChunkEntry>;
  /** Committed chunks read back from disk and hashed: index -> where. */
  checked: Map<number, string>;
}

interface Pending {
  kind: "chunk" | "create" | "complete";
  index?: number;
  /** Client side: what the request was doing. */
  phase: "connecting" | "body" | "sent";
  /** After an inspection: whether the retry must be reported as a duplicate. */
  expectDuplicate?: boolean;
}

interface Client {
  name: string;
  source: Uint8Array;
  sourcePath: string;
  sourceSha: string;
  rng: () => number;
  sessions: Session[];
  current?: Session;
  next: number;
  pending?: Pending;
  /** Set when the client's current chunk body starts / finishes streaming. */
  onBodyStart?: (index: number, size: number, bytesBefore: number) => void;
  onBodySent?: (index: number, size: number, bytesBefore: number) => void;
}

interface Life {
  url: string;
  http: Deno.HttpClient;
  /** Set just before the kill signal is sent. */
  killing: boolean;
  /** Sends at full speed, no slow streaming (the last life). */
  fast: boolean;
  /** Clients that must not start new requests this life. */
  idle: Set<string>;
  /** Start no new sessions (the last life). */
  noNewSessions: boolean;
}

function splitRandom(bytes: Uint8Array, rng: () => number): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  let off = 0;
  while (off < bytes.length) {
    const size = MIB + Math.floor(rng() * 7 * MIB);
    pieces.push(bytes.slice(off, off + size));
    off += size;
  }
  return pieces;
}

function chunkDir(dataDir: string, id: string): string {
  return join(dataDir, "recordings", id, "chunks");
}

/** Sizes of the files in a recording's chunk folder, by name. */
function chunkFiles(dataDir: string, id: string): Map<string, number> {
  const files = new Map<string, number>();
  const dir = chunkDir(dataDir, id);
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isFile) files.set(e.name, Deno.statSync(join(dir, e.name)).size);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return files;
}

/** Every byte held in a recording's chunk folder, committed or not. */
function bytesOnDisk(dataDir: string, id: string): number {
  let n = 0;
  for (const size of chunkFiles(dataDir, id).values()) n += size;
  return n;
}

async function readRange(
  path: string,
  start: number,
  length: number,
): Promise<Uint8Array> {
  const file = await Deno.open(path);
  try {
    await file.seek(start, Deno.SeekMode.Start);
    const buf = new Uint8Array(length);
    let n = 0;
    while (n < length) {
      const got = await file.read(buf.subarray(n));
      if (got === null) break;
      n += got;
    }
    return buf.subarray(0, n);
  } finally {
    file.close();
  }
}

/** A committed chunk's bytes, wherever the storage put them (file, offset, size). */
function readChunk(
  dataDir: string,
  id: string,
  e: ChunkEntry,
): Promise<Uint8Array> {
  return readRange(join(chunkDir(dataDir, id), e.file), e.offset ?? 0, e.size);
}

/**
 * The bytes in a recording's chunk folder that no committed chunk covers
 * (a file of its own, or a stretch of a shared data file), in file order.
 */
async function uncommittedBytes(
  dataDir: string,
  id: string,
  entries: ChunkEntry[],
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (const [name, size] of [...chunkFiles(dataDir, id)].sort()) {
    const ranges = entries.filter((e) => e.file === name)
      .map((e) => [e.offset ?? 0, (e.offset ?? 0) + e.size])
      .sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [start, end] of [...ranges, [size, size]]) {
      if (start > at) {
        parts.push(
          await readRange(join(chunkDir(dataDir, id), name), at, start - at),
        );
      }
      at = Math.max(at, end);
    }
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A body that sends `bytes` in 128 KiB pieces with a pause between them. */
function slowBody(
  bytes: Uint8Array,
  rng: () => number,
  onStart: () => void,
  onSent: () => void,
): ReadableStream<Uint8Array> {
  const piece = 128 * 1024;
  let off = 0;
  let cancelled = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (off === 0) onStart();
      else await delay(8 + rng() * 14);
      if (cancelled) return;
      const end = Math.min(bytes.length, off + piece);
      controller.enqueue(bytes.slice(off, end));
      off = end;
      if (off >= bytes.length) {
        controller.close();
        onSent();
      }
    },
    cancel() {
      cancelled = true;
    },
  }, { highWaterMark: 0 });
}

class ServerDied extends Error {}

async function request(
  life: Life,
  path: string,
  init: RequestInit,
): Promise<Response> {
  try {
    return await fetch(
      `${life.url}${path}`,
      {
        ...init,
        client: life.http,
      } as RequestInit & { client: Deno.HttpClient },
    );
  } catch (err) {
    if (life.killing) throw new ServerDied(String(err));
    throw new Error(
      `a request to ${path} failed while the server was up: ${err}`,
    );
  }
}

async function readJson(life: Life, res: Response): Promise<unknown> {
  try {
    return await res.json();
  } catch (err) {
    if (life.killing) return undefined;
    throw err;
  }
}

/** Runs one client until the server dies (or, in the last life, until its session is done). */
async function runClient(
  c: Client,
  life: Life,
  dataDir: string,
): Promise<void> {
  if (life.idle.has(c.name)) return;
  try {
    while (true) {
      if (!c.current) {
        if (life.noNewSessions) return;
        c.pending = { kind: "create", phase: "connecting" };
        const res = await request(life, "/create/", { method: "POST" });
        assert.equal(res.status, 200);
        const body = await readJson(life, res) as { video_id: string };
        if (!body) throw new ServerDied("create reply cut");
        const pieces = splitRandom(c.source, c.rng);
        c.current = {
          id: body.video_id,
          pieces,
          shas: pieces.map(sha256),
          acked: new Set(),
          completeAcked: false,
          committed: new Map(),
          checked: new Map(),
        };
        c.sessions.push(c.current);
        c.next = 0;
        c.pending = undefined;
        continue;
      }
      const s = c.current;
      if (c.pending?.kind === "chunk" || c.next < s.pieces.length) {
        const index = c.pending?.kind === "chunk" ? c.pending.index! : c.next;
        const expectDuplicate = c.pending?.kind === "chunk"
          ? c.pending.expectDuplicate
          : false;
        const bytes = s.pieces[index];
        const pending: Pending = { kind: "chunk", index, phase: "connecting" };
        c.pending = pending;
        const before = bytesOnDisk(dataDir, s.id);
        const body = life.fast ? bytes.slice() : slowBody(
          bytes,
          c.rng,
          () => {
            pending.phase = "body";
            c.onBodyStart?.(index, bytes.length, before);
          },
          () => {
            pending.phase = "sent";
            c.onBodySent?.(index, bytes.length, before);
          },
        );
        const res = await request(life, `/add_data/${s.id}/`, {
          method: "POST",
          headers: {
            "content-type": "video/x-matroska",
            "x-chunk-index": String(index),
          },
          body,
          duplex: "half",
        } as RequestInit);
        if (res.status !== 200) {
          assert.fail(
            `chunk ${index} of ${s.id} got ${res.status}: ${await res.text()}`,
          );
        }
        // A 200 is an acknowledgement, whatever happens to the rest of the reply.
        s.acked.add(index);
        c.pending = undefined;
        if (index === c.next) c.next++;
        const json = await readJson(life, res) as
          | { duplicate: boolean; index: number }
          | undefined;
        if (json) {
          assert.equal(json.index, index);
          if (expectDuplicate !== undefined) {
            assert.equal(
              json.duplicate,
              expectDuplicate,
              `the retry of chunk ${index} of ${s.id} should say duplicate: ${expectDuplicate}`,
            );
          }
        }
        continue;
      }
      if (!s.completeAcked) {
        c.pending = { kind: "complete", phase: "connecting" };
        const res = await request(life, `/complete_job/${s.id}/`, {
          method: "POST",
        });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("content-type"), "application/json");
        s.completeAcked = true;
        c.pending = undefined;
        await readJson(life, res);
        c.current = undefined;
        continue;
      }
      c.current = undefined;
    }
  } catch (err) {
    if (err instanceof ServerDied) return;
    throw err;
  }
}

/** Polls until `check()` is true or `ms` pass; returns whether it became true. */
async function waitUntil(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await delay(0);
  }
  return check();
}

function statOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

Deno.test({
  name:
    "kill-upload: kill -9 at random moments of chunk uploads loses no acknowledged byte and the retries give byte-exact recordings",
  ignore: ffmpegMissing,
  async fn() {
    const seed = Number(Deno.env.get("KILL_SEED") ?? Date.now() % 1_000_000);
    console.log(`kill-upload: seed ${seed} (replay with KILL_SEED=${seed})`);
    const rng = seededRandom(seed);
    const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-kill-up-" });
    const srcDir = await Deno.makeTempDir({ prefix: "tapedeck-kill-src-" });
    let server: ChildServer | undefined;
    const started = Date.now();
    try {
      const clients: Client[] = [];
      for (let i = 0; i < 3; i++) {
        const sourcePath = join(srcDir, `source-${i}.mkv`);
        const source = await makeBigRecording(sourcePath, i + 1);
        clients.push({
          name: `client-${i}`,
          source,
          sourcePath,
          sourceSha: sha256(source),
          rng: seededRandom(seed * 7 + i),
          sessions: [],
          next: 0,
        });
      }
      const env = { RUN_WORKER: "false", CREATE_RATE_PER_MINUTE: "0" };

      const landings: Record<Landing, number> = {
        "mid-body, no byte on disk": 0,
        "mid-body, part on disk": 0,
        "bytes on disk, KV not committed": 0,
        "KV committed, reply not received": 0,
        "create or complete unanswered": 0,
      };
      const strategies: Record<string, number> = {};
      let kills = 0;
      let killsMidRequest = 0;
      let uncommittedSeen = 0;

      const covered = () =>
        landings["mid-body, part on disk"] +
              landings["mid-body, no byte on disk"] >
          0 &&
        landings["bytes on disk, KV not committed"] > 0 &&
        landings["KV committed, reply not received"] > 0;

      while (
        kills < MIN_KILLS ||
        (!covered() && kills < MAX_KILLS &&
          Date.now() - started < KILL_LOOP_BUDGET_MS)
      ) {
        const live = await spawnServer(dataDir, env);
        server = live;
        const http = Deno.createHttpClient({});
        // By turns; past MIN_KILLS, only what targets a phase not hit yet.
        const strategy = kills < MIN_KILLS
          ? ["random", "mid-body", "after-write", "on-commit"][kills % 4]
          : landings["KV committed, reply not received"] === 0
          ? "on-commit"
          : landings["bytes on disk, KV not committed"] === 0
          ? "after-write"
          : "mid-body";
        strategies[strategy] = (strategies[strategy] ?? 0) + 1;
        const victim = clients[Math.floor(rng() * clients.length)];
        const life: Life = {
          url: live.url,
          http,
          killing: false,
          fast: false,
          idle: new Set(
            strategy === "on-commit"
              ? clients.filter((c) => c !== victim).map((c) => c.name)
              : [],
          ),
          noNewSessions: false,
        };

        // After a restart, the counters are exactly what the KV held at the kill.
        for (const c of clients) {
          if (!c.current) continue;
          const res = await fetch(`${live.url}/check_status/${c.current.id}/`, {
            client: http,
          } as RequestInit);
          assert.equal(res.status, 200);
          const st = await res.json();
          let bytes = 0;
          for (const e of c.current.committed.values()) bytes += e.size;
          assert.equal(st.chunks_received, c.current.committed.size);
          assert.equal(st.bytes_received, bytes);
          for (const i of c.current.acked) {
            assert.ok(c.current.committed.has(i), `acked chunk ${i} kept`);
          }
          // The start-up sweep left exactly the committed bytes.
          assert.equal(
            bytesOnDisk(dataDir, c.current.id),
            bytes,
            `uncommitted bytes of ${c.current.id} were swept at the restart`,
          );
        }

        // Arm the trigger, then let the clients go.
        let bodyStarted: (v: [number, number]) => void = () => {};
        let bodySent: (v: [number, number, number]) => void = () => {};
        const startedP = new Promise<[number, number]>((r) => bodyStarted = r);
        const sentP = new Promise<[number, number, number]>((r) =>
          bodySent = r
        );
        victim.onBodyStart = (i, size) => bodyStarted([i, size]);
        victim.onBodySent = (i, size, before) => bodySent([i, size, before]);
        const runs = clients.map((c) => runClient(c, life, dataDir));
        const runsDone = Promise.all(runs);
        let runError: unknown;
        runsDone.catch((err) => runError = err);

        const timeout = delay(6000).then(() => "timeout" as const);
        if (strategy === "random") {
          await delay(100 + rng() * 1400);
        } else if (strategy === "mid-body") {
          const got = await Promise.race([startedP, timeout]);
          if (got !== "timeout") {
            const pieces = Math.ceil(got[1] / (128 * 1024));
            await delay(rng() * pieces * 14);
          }
        } else {
          const got = await Promise.race([sentP, timeout]);
          if (got !== "timeout" && victim.current) {
            const [, size, before] = got;
            const id = victim.current.id;
            // Wait until all of this request's bytes are on disk.
            await waitUntil(
              () => bytesOnDisk(dataDir, id) >= before + size,
              2000,
            );
            if (strategy === "after-write") {
              if (rng() < 0.5) await delay(rng() * 3);
            } else {
              // on-commit: kill as soon as the KV's write-ahead log changes.
              // The body is all in, so this process may block: a tight
              // synchronous loop sees the change within microseconds.
              const wal = join(dataDir, "tapedeck.kv-wal");
              const base = statOrNull(wal);
              const until = Date.now() + 2000;
              while (Date.now() < until) {
                const now = statOrNull(wal);
                if (
                  now?.size !== base?.size ||
                  now?.mtime?.getTime() !== base?.mtime?.getTime()
                ) break;
              }
              // The first write is not yet the whole commit: land a little later,
              // somewhere in the commit's frames, its fsync or the reply.
              const extra = performance.now() + rng() * 3;
              while (performance.now() < extra) { /* wait */ }
            }
          }
        }
        if (runError) throw runError;
        life.killing = true;
        const status = await server.stop("SIGKILL");
        assert.equal(status.signal, "SIGKILL");
        server = undefined;
        await runsDone;
        http.close();
        kills++;
        victim.onBodyStart = undefined;
        victim.onBodySent = undefined;

        // Inspect KV and disk while no server runs.
        const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
        let midRequest = false;
        try {
          for (const c of clients) {
            const p = c.pending;
            // An idle client's pending request is from an earlier life.
            const stale = life.idle.has(c.name);
            if (p && !stale) midRequest = true;
            if (p && !stale && p.kind !== "chunk") {
              landings["create or complete unanswered"]++;
            }
            const s = c.current;
            if (!s) continue;
            const rec = (await kv.get<Recording>(recordingKey(s.id))).value;
            assert.ok(rec, `session ${s.id} exists`);
            const entries: ChunkEntry[] = [];
            for await (
              const e of kv.list<ChunkEntry>({ prefix: chunkPrefix(s.id) })
            ) entries.push(e.value);
            assert.equal(rec.chunksReceived, entries.length);
            assert.equal(
              rec.bytesReceived,
              entries.reduce((n, e) => n + e.size, 0),
            );
            const files = chunkFiles(dataDir, s.id);
            s.committed = new Map();
            for (const e of entries) {
              assert.ok(e.index < s.pieces.length, `index ${e.index} in range`);
              assert.equal(e.size, s.pieces[e.index].length);
              // Every committed chunk's bytes, read back once where they lie.
              const where = `${e.file}@${e.offset ?? 0}`;
              if (s.checked.get(e.index) !== where) {
                assert.equal(
                  sha256(await readChunk(dataDir, s.id, e)),
                  s.shas[e.index],
                  `committed chunk ${e.index} of ${s.id} holds exactly its bytes`,
                );
                s.checked.set(e.index, where);
              }
              assert.ok(
                s.acked.has(e.index) ||
                  (p?.kind === "chunk" && p.index === e.index),
                `chunk ${e.index} of ${s.id} is committed but was never sent as a whole`,
              );
              assert.ok(
                (files.get(e.file) ?? -1) >= (e.offset ?? 0) + e.size,
                `the bytes of committed chunk ${e.index} are on disk`,
              );
              s.committed.set(e.index, e);
            }
            for (const i of s.acked) {
              assert.ok(
                s.committed.has(i),
                `chunk ${i} of ${s.id} got a 200 but is not in KV`,
              );
            }
            // What no committed chunk covers: nothing, or (part of) the one
            // chunk that was in flight, from its start.
            const loose = await uncommittedBytes(dataDir, s.id, entries);
            const inFlight = p?.kind === "chunk" && !stale
              ? s.pieces[p.index!]
              : new Uint8Array(0);
            assert.ok(
              loose.length <= inFlight.length,
              `${loose.length} uncommitted bytes in ${s.id}, in flight: ${inFlight.length}`,
            );
            assert.deepEqual(
              loose,
              inFlight.subarray(0, loose.length),
              "uncommitted bytes are the start of the chunk in flight",
            );
            uncommittedSeen += loose.length;
            if (p?.kind !== "chunk" || stale) continue;
            if (s.committed.has(p.index!)) {
              landings["KV committed, reply not received"]++;
              p.expectDuplicate = true;
              const bytes = await readChunk(
                dataDir,
                s.id,
                s.committed.get(p.index!)!,
              );
              assert.equal(sha256(bytes), s.shas[p.index!]);
            } else {
              p.expectDuplicate = false;
              landings[
                loose.length === 0
                  ? "mid-body, no byte on disk"
                  : loose.length < inFlight.length
                  ? "mid-body, part on disk"
                  : "bytes on disk, KV not committed"
              ]++;
            }
          }
        } finally {
          kv.close();
        }
        if (midRequest) killsMidRequest++;
      }

      // Last life: the worker runs; every client finishes its session.
      const lastServer = await spawnServer(dataDir, {
        CREATE_RATE_PER_MINUTE: "0",
      });
      server = lastServer;
      const url = lastServer.url;
      const http = Deno.createHttpClient({});
      const last: Life = {
        url,
        http,
        killing: false,
        fast: true,
        idle: new Set(),
        noNewSessions: true,
      };
      await Promise.all(clients.map((c) => runClient(c, last, dataDir)));
      http.close();
      const sessions = clients.flatMap((c) => c.sessions.map((s) => ({ c, s })))
        .filter(({ s }) => s.completeAcked);
      const sourceHashes = new Map<Client, string[]>();
      for (const c of clients) {
        sourceHashes.set(c, await videoPacketHashes(c.sourcePath));
      }
      let bytesAcked = 0;
      for (const { c, s } of sessions) {
        const st = await waitForStatus(
          url,
          s.id,
          ["complete", "failed"],
          120_000,
        );
        assert.equal(st.status, "complete", JSON.stringify(st));
        assert.equal(st.bytes_received, c.source.length);
        assert.equal(st.chunks_received, s.pieces.length);
        const list = await (await fetch(`${url}/video/${s.id}/`)).json();
        assert.deepEqual(list.completed_videos, [`${s.id}.mp4`, `${s.id}.mkv`]);
        const res = await fetch(`${url}/media/${s.id}/${s.id}.mkv`);
        assert.equal(res.status, 200);
        const out = join(srcDir, `${s.id}.mkv`);
        await Deno.writeFile(out, new Uint8Array(await res.arrayBuffer()));
        assert.deepEqual(
          await videoPacketHashes(out),
          sourceHashes.get(c),
          `session ${s.id}: the finished video holds the source's packets`,
        );
        await Deno.remove(out);
        for (const i of s.acked) bytesAcked += s.pieces[i].length;
      }
      const term = await server.stop("SIGTERM");
      server = undefined;
      assert.equal(term.code, 0);

      // Byte-compare every session through the real KV and storage layout.
      const kv = await Deno.openKv(join(dataDir, "tapedeck.kv"));
      let bytesFound = 0;
      try {
        for (const { c, s } of sessions) {
          const hash = createHash("sha256");
          let expectIndex = 0;
          for await (
            const e of kv.list<ChunkEntry>({ prefix: chunkPrefix(s.id) })
          ) {
            assert.equal(e.value.index, expectIndex++);
            const bytes = await readChunk(dataDir, s.id, e.value);
            assert.equal(bytes.length, e.value.size);
            hash.update(bytes);
            if (s.acked.has(e.value.index)) bytesFound += bytes.length;
          }
          assert.equal(expectIndex, s.pieces.length);
          assert.equal(
            hash.digest("hex"),
            c.sourceSha,
            `session ${s.id}: assembled SHA-256 equals the source`,
          );
        }
      } finally {
        kv.close();
      }
      const bytesLost = bytesAcked - bytesFound;
      console.log(
        `kill-upload figures: ${kills} kill -9 points (${
          JSON.stringify(strategies)
        }), ${killsMidRequest} landed while a request was unanswered; ` +
          `unanswered requests by where the kill landed: ${
            JSON.stringify(landings)
          }; ${
            (uncommittedSeen / MIB).toFixed(0)
          } MiB of uncommitted chunk bytes found after kills, all swept at restart; ` +
          `${sessions.length} recordings (${
            (bytesAcked / MIB).toFixed(0)
          } MiB acknowledged) byte-exact; bytes lost: ${bytesLost}; ${
            ((Date.now() - started) / 1000).toFixed(0)
          } s`,
      );
      assert.equal(bytesLost, 0);
      assert.ok(kills >= MIN_KILLS, `${kills} kills`);
      assert.ok(
        killsMidRequest >= MIN_KILLS / 2,
        `${killsMidRequest} mid-request`,
      );
      assert.ok(
        landings["mid-body, part on disk"] +
            landings["mid-body, no byte on disk"] >
          0,
        "a kill landed mid-body",
      );
      assert.ok(
        landings["bytes on disk, KV not committed"] > 0,
        "a kill landed between the disk write and the KV commit",
      );
      assert.ok(
        landings["KV committed, reply not received"] > 0,
        "a kill landed between the KV commit and the reply",
      );
    } finally {
      await server?.stop("SIGKILL");
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(srcDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("kill-upload: a last_chunk request retried after its reply was lost (server killed) is answered 200 duplicate, not 409", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-kill-last-" });
  let server: ChildServer | undefined;
  try {
    const first = await spawnServer(dataDir);
    server = first;
    const create = await fetch(`${first.url}/create/`, { method: "POST" });
    assert.equal(create.status, 200);
    const id = (await create.json()).video_id;
    const head = new Uint8Array(5000).fill(7);
    head.set([0x1a, 0x45, 0xdf, 0xa3]);
    const chunk0 = await fetch(`${first.url}/add_data/${id}/`, {
      method: "POST",
      headers: { "content-type": "video/webm", "x-chunk-index": "0" },
      body: head,
    });
    assert.equal(chunk0.status, 200);
    await chunk0.body?.cancel();
    // The recorder's final chunk, with last_chunk: true, as JSON.
    const last = JSON.stringify({
      blob_data: btoa("the last bytes of the recording"),
      order: 1,
      last_chunk: true,
    });
    const send = (url: string) =>
      fetch(`${url}/add_data/${id}/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: last,
      });
    const res = await send(first.url);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    // The reply never reached the client: the server died right after.
    await first.stop("SIGKILL");
    const second = await spawnServer(dataDir);
    server = second;
    const retry = await send(second.url);
    const body = await retry.json();
    console.log(
      `kill-upload figures: retried last_chunk after a lost reply: ${retry.status} ${
        JSON.stringify(body)
      }`,
    );
    const st = await (await fetch(`${second.url}/check_status/${id}/`)).json();
    assert.equal(st.chunks_received, 2, "stored once");
    assert.notEqual(st.status, "recording");
    assert.equal(retry.status, 200, "an exact retry is acknowledged");
    assert.equal(retry.headers.get("content-type"), "application/json");
    assert.equal(body.duplicate, true);
    assert.equal(body.chunks_received, 2);
  } finally {
    await server?.stop("SIGKILL");
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
