/**
 * Issue 13: every recording write goes through lib/recordings/transitions.ts,
 * which derives the indexes, the change log and the live publish. Checked
 * in the code (no other module writes a record or an index key) and in
 * behaviour: a tus upload made on one instance reaches a socket on a second
 * instance on the same KV with its title (from the tus metadata), its bytes
 * and its end, which only the change log can carry there.
 */

import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { openSocket, wsUrl } from "./browser_helpers.ts";
import {
  makeRecording,
  missingTool,
  ROOT,
  startTestServer,
  type TestServer,
  tusPatch,
} from "./helpers.ts";
import { changeOf } from "./stop_helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

/** Key builders of the record and of the indexes derived from it. */
const RECORD_KEYS = [
  "recordingKey",
  "recordingByCreatedKey",
  "recordingByStatusKey",
  "recordingByWordKey",
  "openRecordingKey",
  "finishedRecordingKey",
  "partialUploadKey",
  "changeKey",
  "changeHeadKey",
];

async function* sourceFiles(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const path = join(dir, e.name);
    if (e.isDirectory) yield* sourceFiles(path);
    else if (/\.tsx?$/.test(e.name)) yield path;
  }
}

Deno.test("transitions: no module but lib/recordings/transitions.ts writes or deletes a recording record or one of its index keys", async () => {
  const writes = new RegExp(
    `\\.(set|delete|sum|min|max)\\(\\s*(${RECORD_KEYS.join("|")})\\(`,
    "g",
  );
  const found: string[] = [];
  let files = 0;
  for (const top of ["lib", "routes", "islands", "client", "common"]) {
    for await (const path of sourceFiles(join(ROOT, top))) {
      files++;
      const rel = relative(ROOT, path);
      if (rel === "lib/recordings/transitions.ts") continue;
      const text = await Deno.readTextFile(path);
      for (const m of text.matchAll(writes)) {
        const line = text.slice(0, m.index).split("\n").length;
        found.push(`${rel}:${line}: ${m[0]}`);
      }
    }
  }
  assert.ok(files > 50, `only ${files} source files read`);
  assert.deepEqual(found, []);
  // The pattern does find such a write where there is one.
  const transitions = await Deno.readTextFile(
    join(ROOT, "lib/recordings/transitions.ts"),
  );
  assert.ok([...transitions.matchAll(writes)].length >= 2);
});

Deno.test({
  name:
    "transitions: a tus upload on instance A reaches a dashboard socket on instance B (one KV) with its title from the metadata, its bytes and its end",
  ignore: ffmpegMissing,
  async fn() {
    const servers: TestServer[] = [];
    const dir = await Deno.makeTempDir({ prefix: "tapedeck-trans-" });
    try {
      const a = await startTestServer({
        SHARED_KV: "true",
        COMPLETE_GRACE_MS: "0",
      });
      servers.push(a);
      const b = await startTestServer({
        DATA_DIR: a.dataDir,
        SHARED_KV: "true",
        RUN_WORKER: "false",
      });
      servers.push(b);
      const socket = await openSocket(wsUrl(b.url, "/ws"));
      try {
        assert.equal((await socket.next()).type, "snapshot");
        const bytes = await makeRecording(join(dir, "in.webm"), {
          seconds: 1,
        });
        const created = await fetch(`${a.url}/files/`, {
          method: "POST",
          headers: {
            "tus-resumable": "1.0.0",
            "upload-length": String(bytes.length),
            "upload-metadata": `filename ${btoa("Desk cam.webm")},filetype ${
              btoa("video/webm")
            }`,
          },
        });
        assert.equal(created.status, 201, await created.text());
        const id = created.headers.get("x-video-id")!;
        await socket.until(
          changeOf(id, (m) => m.recording.title === "Desk cam"),
          10_000,
        );
        const patch = await tusPatch(
          new URL(created.headers.get("location")!, a.url),
          bytes,
        );
        assert.equal(patch.status, 204, await patch.text());
        await socket.until(
          changeOf(id, (m) => m.recording.bytesReceived === bytes.length),
          10_000,
        );
        await socket.until(
          changeOf(id, (m) => m.recording.status === "complete"),
          60_000,
        );
      } finally {
        await socket.close();
      }
    } finally {
      for (const s of servers.reverse()) await s.close().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
