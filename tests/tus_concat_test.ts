/**
 * Issue 11: the tus `concatenation` extension (as tusd has it). Partial
 * uploads are stored but are not recordings; a final upload joins them in
 * order into one recording that is processed; malformed values are 400
 * before anything is created; unclaimed partials expire; with
 * REQUIRE_UPLOAD_TOKEN a final needs every partial's token. tus-js-client's
 * `parallelUploads` works end to end, through a cut connection and with
 * upload tokens.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as tus from "tus-js-client";
import { openSocket, type TestSocket, wsUrl } from "./browser_helpers.ts";
import {
  createSession,
  expectError,
  haveFfmpeg,
  makeRecording,
  mediaBytes,
  startTestServer,
  type TestServer,
  waitForStatus,
} from "./helpers.ts";
import {
  assertSameBytes,
  checkStatus,
  fetchSource,
  HAVE_FFMPEG,
  listedIds,
  sleep,
  startPatchCuttingProxy,
} from "./stop_helpers.ts";
import { concatBytes } from "../common/bytes.ts";

const TUS = { "tus-resumable": "1.0.0" };
const OCTETS = { ...TUS, "content-type": "application/offset+octet-stream" };
const NEEDS_FFMPEG = { ignore: !HAVE_FFMPEG };

/** A 4 s VP9/Opus live WebM (made once). */
let sourceBytes: Uint8Array<ArrayBuffer> | undefined;
async function source(): Promise<Uint8Array<ArrayBuffer>> {
  if (sourceBytes) return sourceBytes;
  await haveFfmpeg(); // fails with a clear message in CI when missing
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-concat-" });
  try {
    sourceBytes = await makeRecording(`${dir}/src.webm`, { seconds: 4 });
    return sourceBytes;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Splits bytes into `n` nearly equal consecutive parts. */
function split(bytes: Uint8Array<ArrayBuffer>, n: number) {
  const size = Math.ceil(bytes.length / n);
  return Array.from(
    { length: n },
    (_, i) => bytes.slice(i * size, Math.min(bytes.length, (i + 1) * size)),
  );
}

interface Created {
  location: string;
  id: string;
  token: string;
}

/** POST /files/ expecting 201; returns Location, id and upload token. */
async function createTus(
  url: string,
  headers: Record<string, string>,
): Promise<Created> {
  const res = await fetch(`${url}/files/`, {
    method: "POST",
    headers: { ...TUS, ...headers },
  });
  const text = await res.text();
  assert.equal(
    res.status,
    201,
    `POST /files/ ${JSON.stringify(headers)}: ${res.status} ${text}`,
  );
  const location = res.headers.get("location") ?? "";
  const id = location.split("/").at(-1)!;
  assert.match(location, /\/files\/[0-9a-f-]{36}$/, `Location: ${location}`);
  return { location, id, token: res.headers.get("x-upload-token") ?? "" };
}

/** Creates a partial upload of `length` bytes. */
function createPartial(
  url: string,
  length: number,
  extra: Record<string, string> = {},
): Promise<Created> {
  return createTus(url, {
    "upload-concat": "partial",
    "upload-length": String(length),
    ...extra,
  });
}

/** PATCHes `body` at `offset`, expecting 204. */
async function patchOk(
  url: string,
  location: string,
  offset: number,
  body: Uint8Array<ArrayBuffer>,
  extra: Record<string, string> = {},
): Promise<void> {
  const res = await fetch(new URL(location, url), {
    method: "PATCH",
    headers: { ...OCTETS, "upload-offset": String(offset), ...extra },
    body,
  });
  const text = await res.text();
  assert.equal(
    res.status,
    204,
    `PATCH ${location} at ${offset}: ${res.status} ${text}`,
  );
}

async function head(url: string, location: string): Promise<Response> {
  const res = await fetch(new URL(location, url), {
    method: "HEAD",
    headers: TUS,
  });
  await res.body?.cancel();
  return res;
}

/** POST /files/ with Upload-Concat: final;<refs>. */
async function postFinal(
  url: string,
  refs: string[],
  extra: Record<string, string> = {},
): Promise<Response> {
  return await fetch(`${url}/files/`, {
    method: "POST",
    headers: { ...TUS, "upload-concat": `final;${refs.join(" ")}`, ...extra },
  });
}

/** Asserts a partial upload is no recording: not processing nor complete. */
async function assertNotProcessed(url: string, id: string, what: string) {
  const st = await checkStatus(url, id);
  if (st.code === 200) {
    assert.ok(
      !["processing", "complete"].includes(String(st.body.status)),
      `${what}: a partial upload must never be processed, but check_status says ${
        JSON.stringify(st.body)
      }`,
    );
  } else {
    assert.equal(st.code, 404, `${what}: ${JSON.stringify(st.body)}`);
  }
}

/** Recording folders in the data folder (anything created leaves one). */
async function storedEntries(dataDir: string): Promise<number> {
  let n = 0;
  for await (const _ of Deno.readDir(`${dataDir}/recordings`)) n++;
  return n;
}

function changedIds(socket: TestSocket): Set<string> {
  return new Set(
    socket.received
      .filter(({ message }) => message.type === "change")
      .map(({ message }) =>
        (message as { recording: { id: string } }).recording.id
      ),
  );
}

async function withServer(
  env: Record<string, string>,
  fn: (server: TestServer) => Promise<void>,
) {
  const server = await startTestServer(env);
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

Deno.test("tus concat: OPTIONS lists concatenation in Tus-Extension", async () => {
  await withServer({ RUN_WORKER: "false" }, async ({ url }) => {
    const res = await fetch(`${url}/files/`, { method: "OPTIONS" });
    await res.body?.cancel();
    assert.equal(res.status, 204);
    const ext = (res.headers.get("tus-extension") ?? "").split(",").map((e) =>
      e.trim()
    );
    assert.ok(
      ext.includes("concatenation"),
      `Tus-Extension: ${ext.join(",")}`,
    );
    for (const e of ["creation", "creation-defer-length", "termination"]) {
      assert.ok(ext.includes(e), e);
    }
  });
});

Deno.test("tus concat: partial uploads are stored but are no recordings: not listed, not on /ws, never processed even when full", async () => {
  await withServer({}, async ({ url }) => {
    const socket = await openSocket(wsUrl(url, "/ws"));
    try {
      assert.equal((await socket.next()).type, "snapshot");
      const parts = [mediaBytes(3000, 1), new Uint8Array(2000).fill(2)];
      const a = await createPartial(url, parts[0].length);
      const b = await createPartial(url, parts[1].length);
      const before = await listedIds(url);
      for (const p of [a, b]) {
        assert.ok(
          !before.includes(p.id),
          "a partial upload is not a recording: the /ws snapshot must not list it",
        );
      }
      // The second part does not start like a media file: it is a part.
      await patchOk(url, b.location, 0, parts[1]);
      await patchOk(url, a.location, 0, parts[0].slice(0, 1000));
      await patchOk(url, a.location, 1000, parts[0].slice(1000));
      for (const [p, bytes] of [[a, parts[0]], [b, parts[1]]] as const) {
        const h = await head(url, p.location);
        assert.equal(h.status, 200);
        assert.equal(h.headers.get("upload-concat"), "partial");
        assert.equal(h.headers.get("upload-offset"), String(bytes.length));
        assert.equal(h.headers.get("upload-length"), String(bytes.length));
      }
      await sleep(800);
      for (const p of [a, b]) {
        await assertNotProcessed(url, p.id, "a full partial upload");
      }
      const listed = await listedIds(url);
      const page = await (await fetch(`${url}/`)).text();
      const seen = changedIds(socket);
      for (const p of [a, b]) {
        assert.ok(!listed.includes(p.id), "not in the /ws snapshot");
        assert.ok(!page.includes(p.id), "not on the dashboard page /");
        assert.ok(!seen.has(p.id), "no /ws change for a partial upload");
      }
    } finally {
      await socket.close();
    }
  });
});

Deno.test({
  name:
    "tus concat: a final upload joins the partials in order into one recording that is processed, byte for byte",
  ...NEEDS_FFMPEG,
  async fn() {
    await withServer({}, async ({ url }) => {
      const bytes = await source();
      const parts = split(bytes, 3);
      const partials: Created[] = [];
      for (const p of parts) partials.push(await createPartial(url, p.length));
      // Uploaded last part first: the order is the final's, not the uploads'.
      for (const i of [2, 0, 1]) {
        const half = Math.floor(parts[i].length / 2);
        await patchOk(url, partials[i].location, 0, parts[i].slice(0, half));
        await patchOk(url, partials[i].location, half, parts[i].slice(half));
      }
      const countBefore = (await listedIds(url)).length;
      const refs = [
        new URL(partials[0].location, url).href,
        partials[1].location,
        `/files/${partials[2].id}`,
      ];
      const res = await postFinal(url, refs, {
        "upload-metadata": `filename ${btoa("cam.webm")},filetype ${
          btoa("video/webm")
        }`,
      });
      const text = await res.text();
      assert.equal(res.status, 201, `final upload: ${res.status} ${text}`);
      const location = res.headers.get("location") ?? "";
      const id = location.split("/").at(-1)!;
      assert.match(location, /\/files\/[0-9a-f-]{36}$/);
      assert.equal(res.headers.get("x-video-id"), id);
      for (const p of partials) assert.notEqual(id, p.id);

      const h = await head(url, location);
      assert.equal(h.status, 200);
      const concat = h.headers.get("upload-concat") ?? "";
      assert.match(concat, /^final;/, `Upload-Concat: ${concat}`);
      const named = concat.slice("final;".length).trim().split(/\s+/)
        .map((r) => r.split("/").at(-1));
      assert.deepEqual(named, partials.map((p) => p.id));
      assert.equal(h.headers.get("upload-offset"), String(bytes.length));
      assert.equal(h.headers.get("upload-length"), String(bytes.length));

      const st = await waitForStatus(url, id);
      assert.equal(st.status, "complete", JSON.stringify(st));
      assert.equal(st.bytes_received, bytes.length);
      assertSameBytes(await fetchSource(url, id), bytes, "the final's source");
      const files = await (await fetch(`${url}/video/${id}/`)).json();
      assert.deepEqual(files.completed_videos, [`${id}.mp4`, `${id}.webm`]);
      const listed = await listedIds(url);
      assert.ok(listed.includes(id), "the final upload is a recording");
      assert.equal(listed.length, countBefore + 1, "one recording was made");
      for (const p of partials) assert.ok(!listed.includes(p.id));
    });
  },
});

Deno.test("tus concat: unknown or malformed Upload-Concat values are 400 before anything is created", async () => {
  await withServer({ RUN_WORKER: "false" }, async ({ url, dataDir }) => {
    const full = await createPartial(url, 100);
    await patchOk(url, full.location, 0, mediaBytes(100, 3));
    const unfinished = await createPartial(url, 100);
    await patchOk(url, unfinished.location, 0, mediaBytes(50, 4));
    const plain = await createTus(url, { "upload-length": "10" });
    await patchOk(url, plain.location, 0, mediaBytes(10, 5));
    const recording = await createSession(url);

    const listedBefore = await listedIds(url);
    const storedBefore = await storedEntries(dataDir);
    const cases: Array<[string, Record<string, string>]> = [
      ["bogus", { "upload-concat": "bogus", "upload-length": "10" }],
      ["partial;x", { "upload-concat": "partial;x", "upload-length": "10" }],
      ["final; with nothing", { "upload-concat": "final;" }],
      ["final; with a space", { "upload-concat": "final; " }],
      ["final naming a non-uuid", {
        "upload-concat": "final;/files/not-a-uuid",
      }],
      ["final naming an unfinished partial", {
        "upload-concat": `final;${full.location} ${unfinished.location}`,
      }],
      ["final naming a non-partial tus upload", {
        "upload-concat": `final;${full.location} ${plain.location}`,
      }],
      ["final naming a /create/ session", {
        "upload-concat": `final;${full.location} /files/${recording}`,
      }],
    ];
    for (const [what, headers] of cases) {
      const res = await fetch(`${url}/files/`, {
        method: "POST",
        headers: { ...TUS, ...headers },
      });
      assert.equal(
        res.status,
        400,
        `${what}: expected 400, got ${res.status} ${await res.clone().text()}`,
      );
      await expectError(res, 400);
    }
    assert.deepEqual(
      await listedIds(url),
      listedBefore,
      "no recording was created",
    );
    assert.equal(
      await storedEntries(dataDir),
      storedBefore,
      "nothing was stored",
    );
    await assertNotProcessed(url, full.id, "the partial named by bad finals");
    assert.equal(
      (await head(url, unfinished.location)).headers.get("upload-offset"),
      "50",
    );
  });
});

Deno.test("tus concat: partial uploads that no final upload claims expire like idle sessions", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "tapedeck-concat-idle-" });
  try {
    let server = await startTestServer({
      DATA_DIR: dataDir,
      RUN_WORKER: "false",
    });
    let withData: Created, full: Created, empty: Created;
    try {
      withData = await createPartial(server.url, 1000);
      await patchOk(server.url, withData.location, 0, mediaBytes(400, 1));
      full = await createPartial(server.url, 300);
      await patchOk(server.url, full.location, 0, mediaBytes(300, 2));
      empty = await createPartial(server.url, 500);
    } finally {
      await server.close();
    }
    await sleep(1_200);
    // The start-up sweep expires what was idle for RECORDING_IDLE_TIMEOUT_S.
    server = await startTestServer({
      DATA_DIR: dataDir,
      RUN_WORKER: "false",
      RECORDING_IDLE_TIMEOUT_S: "1",
    });
    try {
      for (const p of [withData, full, empty]) {
        const h = await head(server.url, p.location);
        assert.ok(
          [404, 410].includes(h.status),
          `an unclaimed partial idle past RECORDING_IDLE_TIMEOUT_S must expire, HEAD got ${h.status}`,
        );
        await assertNotProcessed(server.url, p.id, "an expired partial");
      }
      const late = await postFinal(server.url, [full.location]);
      assert.ok(
        [400, 404, 410].includes(late.status),
        `a final naming an expired partial: ${late.status}`,
      );
      await late.body?.cancel();
      assert.deepEqual(await listedIds(server.url), []);
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("tus concat: with REQUIRE_UPLOAD_TOKEN a final needs the token of every partial it names, in order", async () => {
  await withServer(
    { REQUIRE_UPLOAD_TOKEN: "true", RUN_WORKER: "false" },
    async ({ url }) => {
      const partsA = [mediaBytes(600, 1), new Uint8Array(400).fill(2)];
      const a1 = await createPartial(url, partsA[0].length);
      const a2 = await createPartial(url, partsA[1].length);
      const b1 = await createPartial(url, 300);
      for (const p of [a1, a2, b1]) {
        assert.ok(p.token, "each partial's creation returns X-Upload-Token");
      }
      const denied = await fetch(new URL(a1.location, url), {
        method: "PATCH",
        headers: { ...OCTETS, "upload-offset": "0" },
        body: partsA[0],
      });
      await expectError(denied, 401);
      await patchOk(url, a1.location, 0, partsA[0], {
        "x-upload-token": a1.token,
      });
      await patchOk(url, a2.location, 0, partsA[1], {
        "x-upload-token": a2.token,
      });
      await patchOk(url, b1.location, 0, new Uint8Array(300).fill(3), {
        "x-upload-token": b1.token,
      });

      const before = await listedIds(url);
      const refused: Array<[string, string[], Record<string, string>]> = [
        ["no token", [a1.location, a2.location], {}],
        ["another client's partial", [a1.location, b1.location], {
          "x-upload-token": `${a1.token}, ${a2.token}`,
        }],
        ["tokens in the wrong order", [a1.location, a2.location], {
          "x-upload-token": `${a2.token}, ${a1.token}`,
        }],
        ["one token for two partials", [a1.location, a2.location], {
          "x-upload-token": a1.token,
        }],
      ];
      for (const [what, refs, headers] of refused) {
        const res = await postFinal(url, refs, headers);
        assert.equal(
          res.status,
          401,
          `${what}: expected 401, got ${res.status} ${await res.clone()
            .text()}`,
        );
        await expectError(res, 401);
      }
      assert.deepEqual(await listedIds(url), before, "nothing was created");

      const ok = await postFinal(url, [a1.location, a2.location], {
        "x-upload-token": `${a1.token}, ${a2.token}`,
      });
      assert.equal(ok.status, 201, await ok.text());
      const id = ok.headers.get("x-video-id") ?? "";
      assertSameBytes(
        await fetchSource(url, id),
        concatBytes(partsA),
        "the final's source",
      );
      const st = await checkStatus(url, id);
      assert.equal(st.body.status, "processing", JSON.stringify(st.body));
    },
  );
});

Deno.test("tus concat: with API_KEYS and REQUIRE_UPLOAD_TOKEN an API key stands in for the partials' tokens", async () => {
  await withServer(
    { API_KEYS: "k-test", REQUIRE_UPLOAD_TOKEN: "true", RUN_WORKER: "false" },
    async ({ url }) => {
      const key = { authorization: "Bearer k-test" };
      const parts = [mediaBytes(500, 1), new Uint8Array(500).fill(2)];
      const partials: Created[] = [];
      for (const p of parts) {
        const created = await createPartial(url, p.length, key);
        await patchOk(url, created.location, 0, p, {
          "x-upload-token": created.token,
        });
        partials.push(created);
      }
      const res = await postFinal(url, partials.map((p) => p.location), key);
      assert.equal(res.status, 201, await res.text());
      const id = res.headers.get("x-video-id") ?? "";
      assertSameBytes(
        await fetchSource(url, id),
        concatBytes(parts),
        "the final's source",
      );
    },
  );
});

/** Runs a tus-js-client upload to its end; rejects on error or after 90 s. */
function runTusUpload(
  bytes: Uint8Array,
  options: tus.UploadOptions,
): Promise<tus.Upload> {
  return new Promise<tus.Upload>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error("tus-js-client did not finish within 90 s")),
      90_000,
    );
    const upload = new tus.Upload(Buffer.from(bytes), {
      retryDelays: [100, 200, 400, 800, 1600, 3200],
      metadata: { filename: "camera.webm", filetype: "video/webm" },
      ...options,
      onSuccess() {
        clearTimeout(timer);
        resolve(upload);
      },
      onError(err) {
        clearTimeout(timer);
        reject(err);
      },
    });
    upload.start();
  });
}

async function assertProcessedExactly(
  url: string,
  upload: tus.Upload,
  bytes: Uint8Array,
) {
  const id = (upload.url ?? "").split("/").at(-1)!;
  const st = await waitForStatus(url, id);
  assert.equal(st.status, "complete", JSON.stringify(st));
  assertSameBytes(await fetchSource(url, id), bytes, "the uploaded source");
  const listed = await listedIds(url);
  assert.deepEqual(listed, [id], "one recording, none for the parts");
}

Deno.test({
  name:
    "tus concat: tus-js-client with parallelUploads: 3 uploads byte-exact and the recording is processed",
  ...NEEDS_FFMPEG,
  async fn() {
    await withServer({}, async ({ url }) => {
      const bytes = await source();
      const concats: string[] = [];
      const upload = await runTusUpload(bytes, {
        endpoint: `${url}/files/`,
        parallelUploads: 3,
        chunkSize: 64 * 1024,
        onBeforeRequest(req) {
          const c = req.getHeader("Upload-Concat");
          if (req.getMethod() === "POST" && c) concats.push(c);
        },
      });
      assert.equal(concats.filter((c) => c === "partial").length, 3);
      assert.equal(concats.filter((c) => c.startsWith("final;")).length, 1);
      await assertProcessedExactly(url, upload, bytes);
    });
  },
});

Deno.test({
  name:
    "tus concat: tus-js-client parallelUploads through a cut connection: the cut part resumes and the result is byte-exact",
  ...NEEDS_FFMPEG,
  async fn() {
    await withServer({}, async ({ url }) => {
      const bytes = await source();
      const proxy = startPatchCuttingProxy(new URL(url), {
        patchNumber: 4,
        afterBodyBytes: 12_000,
      });
      try {
        const upload = await runTusUpload(bytes, {
          endpoint: `${proxy.url}/files/`,
          parallelUploads: 3,
          chunkSize: 32 * 1024,
        });
        assert.equal(proxy.cuts(), 1, "one PATCH was cut mid-body");
        const cut = proxy.patches.find((p) => p.cut)!;
        const resumed = proxy.patches.slice(proxy.patches.indexOf(cut) + 1)
          .filter((p) => p.path === cut.path && p.offset === cut.offset);
        assert.ok(
          resumed.length >= 1,
          `the cut part was resumed from its offset ${cut.offset}: ${
            JSON.stringify(proxy.patches)
          }`,
        );
        await assertProcessedExactly(url, upload, bytes);
      } finally {
        await proxy.close();
      }
    });
  },
});

Deno.test({
  name:
    "tus concat: tus-js-client parallelUploads with REQUIRE_UPLOAD_TOKEN, passing each part's X-Upload-Token and joining them for the final",
  ...NEEDS_FFMPEG,
  async fn() {
    await withServer({ REQUIRE_UPLOAD_TOKEN: "true" }, async ({ url }) => {
      const bytes = await source();
      const tokens = new Map<string, string>();
      const idOf = (u: string) => new URL(u, url).pathname.split("/").at(-1)!;
      const upload = await runTusUpload(bytes, {
        endpoint: `${url}/files/`,
        parallelUploads: 3,
        chunkSize: 64 * 1024,
        onAfterResponse(req, res) {
          const token = res.getHeader("X-Upload-Token");
          const location = res.getHeader("Location");
          if (req.getMethod() === "POST" && token && location) {
            tokens.set(idOf(location), token);
          }
        },
        onBeforeRequest(req) {
          const concat = req.getHeader("Upload-Concat") ?? "";
          if (req.getMethod() === "POST" && concat.startsWith("final;")) {
            const ids = concat.slice(6).trim().split(/\s+/).map(idOf);
            req.setHeader(
              "X-Upload-Token",
              ids.map((id) => tokens.get(id) ?? "").join(", "),
            );
          } else if (req.getMethod() !== "POST") {
            const token = tokens.get(idOf(req.getURL()));
            if (token) req.setHeader("X-Upload-Token", token);
          }
        },
      });
      assert.ok(tokens.size >= 3, "each part's creation returned a token");
      await assertProcessedExactly(url, upload, bytes);
    });
  },
});
