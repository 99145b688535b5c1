import assert from "node:assert/strict";
import {
  createSession,
  makeRecording,
  missingTool,
  probeFile,
  type ProbeSummary,
  splitBytes,
  startTestServer,
  type TestCodec,
  waitForStatus,
} from "./helpers.ts";

const ffmpegMissing = await missingTool("ffmpeg");

function base64(bytes: Uint8Array): string {
  return (bytes as unknown as { toBase64(): string }).toBase64();
}

/** Top-level MP4 box types in file order. */
function topLevelBoxes(bytes: Uint8Array): string[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const types: string[] = [];
  let offset = 0;
  while (offset + 8 <= bytes.length) {
    let size = view.getUint32(offset);
    const type = new TextDecoder().decode(
      bytes.subarray(offset + 4, offset + 8),
    );
    if (size === 1) size = Number(view.getBigUint64(offset + 8));
    if (size === 0) size = bytes.length - offset;
    types.push(type);
    offset += size;
  }
  return types;
}

/** Sends each piece with a different body form in turn: raw, JSON, multipart. */
async function uploadMixed(
  url: string,
  id: string,
  pieces: Uint8Array<ArrayBuffer>[],
) {
  for (const [i, piece] of pieces.entries()) {
    let res: Response;
    if (i % 3 === 0) {
      res = await fetch(`${url}/add_data/${id}/`, {
        method: "POST",
        body: piece,
        headers: { "content-type": "video/webm;codecs=vp9,opus" },
      });
    } else if (i % 3 === 1) {
      res = await fetch(`${url}/add_data/${id}`, {
        method: "POST",
        body: JSON.stringify({ blob_data: base64(piece) }),
        headers: { "content-type": "application/json" },
      });
    } else {
      const form = new FormData();
      form.append(
        "blob_data",
        new Blob([piece], { type: "video/webm" }),
        "blob",
      );
      res = await fetch(`${url}/add_data/${id}/`, {
        method: "POST",
        body: form,
      });
    }
    assert.equal(res.status, 200, `chunk ${i}: ${await res.clone().text()}`);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    const body = await res.json();
    assert.equal(body.message, "Chunk received");
    assert.equal(body.chunks_received, i + 1);
  }
}

async function fetchToFile(url: string, path: string): Promise<Uint8Array> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  const bytes = new Uint8Array(await res.arrayBuffer());
  await Deno.writeFile(path, bytes);
  return bytes;
}

async function recordUploadAndCheck(codec: TestCodec, expectMp4Video: string) {
  const server = await startTestServer();
  const tmp = await Deno.makeTempDir({ prefix: "tapedeck-flow-" });
  try {
    const sourcePath = `${tmp}/source.webm`;
    const source = await makeRecording(sourcePath, { codec, seconds: 4 });
    const sourceProbe: ProbeSummary = await probeFile(sourcePath);
    assert.ok(!(sourceProbe.durationS > 0), "the source must have no duration");

    const id = await createSession(server.url);
    assert.match(
      id,
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    let status = await (await fetch(`${server.url}/check_status/${id}/`))
      .json();
    assert.equal(status.status, "recording");

    const pieces = splitBytes(source, [20_000, 7_000, 33_000, 1_000]);
    assert.ok(pieces.length >= 8, `only ${pieces.length} chunks`);
    await uploadMixed(server.url, id, pieces);

    status = await (await fetch(`${server.url}/check_status/${id}`)).json();
    assert.equal(status.bytes_received, source.length);
    assert.equal(status.chunks_received, pieces.length);

    const videoBefore = await (await fetch(`${server.url}/video/${id}/`))
      .json();
    assert.deepEqual(videoBefore.completed_videos, []);

    const done = await fetch(`${server.url}/complete_job/${id}/`, {
      method: "POST",
    });
    assert.equal(done.status, 200);
    assert.match(done.headers.get("content-type") ?? "", /application\/json/);
    assert.equal((await done.json()).message, "Processing started");
    const right = await (await fetch(`${server.url}/check_status/${id}/`))
      .json();
    assert.ok(["processing", "complete"].includes(right.status));

    const final = await waitForStatus(server.url, id);
    assert.equal(final.status, "complete", JSON.stringify(final));
    assert.equal(final.progress, 1);

    const listing = await fetch(`${server.url}/video/${id}/`);
    assert.equal(listing.status, 200);
    const files = await listing.json();
    assert.deepEqual(files.completed_videos, [`${id}.mp4`, `${id}.webm`]);
    assert.equal(files.poster, `/media/${id}/${id}.jpg`);

    const mp4Path = `${tmp}/out.mp4`;
    const mp4 = await fetchToFile(
      `${server.url}/media/${id}/${id}.mp4`,
      mp4Path,
    );
    const boxes = topLevelBoxes(mp4);
    assert.ok(
      boxes.indexOf("moov") >= 0 &&
        boxes.indexOf("moov") < boxes.indexOf("mdat"),
      `moov must come before mdat: ${boxes.join(",")}`,
    );
    const mp4Probe = await probeFile(mp4Path);
    assert.equal(mp4Probe.video?.codec, expectMp4Video);
    assert.equal(mp4Probe.audio?.codec, "opus");
    assert.ok(
      Math.abs(mp4Probe.durationS - 4) < 0.15,
      `mp4 lasts ${mp4Probe.durationS}`,
    );
    assert.equal(mp4Probe.video?.packets, sourceProbe.video?.packets);

    const webmPath = `${tmp}/out.webm`;
    await fetchToFile(`${server.url}/media/${id}/${id}.webm`, webmPath);
    const webmProbe = await probeFile(webmPath);
    assert.match(webmProbe.formatName, /webm|matroska/);
    assert.equal(webmProbe.video?.codec, sourceProbe.video?.codec);
    assert.equal(webmProbe.audio?.codec, "opus");
    assert.ok(
      Math.abs(webmProbe.durationS - 4) < 0.15,
      `webm lasts ${webmProbe.durationS}`,
    );
    assert.equal(webmProbe.video?.packets, sourceProbe.video?.packets);
    assert.equal(webmProbe.audio?.packets, sourceProbe.audio?.packets);

    const poster = await fetch(`${server.url}/media/${id}/${id}.jpg`);
    assert.equal(poster.status, 200);
    assert.equal(poster.headers.get("content-type"), "image/jpeg");
    const jpeg = new Uint8Array(await poster.arrayBuffer());
    assert.deepEqual([...jpeg.subarray(0, 2)], [0xff, 0xd8]);

    assert.ok(Math.abs(Number(final.duration_s) - 4) < 0.15);
  } finally {
    await server.close();
    await Deno.remove(tmp, { recursive: true });
  }
}

Deno.test({
  name:
    "api: a VP9/Opus recording in mixed body forms becomes a stream-copied MP4 and a seekable WebM",
  ignore: ffmpegMissing,
  async fn() {
    await recordUploadAndCheck("vp9", "vp9");
  },
});

Deno.test({
  name:
    "api: a VP8/Opus recording gets its MP4 video re-encoded to H.264 with every frame kept",
  ignore: ffmpegMissing,
  async fn() {
    await recordUploadAndCheck("vp8", "h264");
  },
});

Deno.test({
  name: "api: an H.264 recording in WebM goes to MKV and an MP4 by stream copy",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-flow-" });
    try {
      const source = await makeRecording(`${tmp}/src.webm`, {
        codec: "h264",
        seconds: 3,
      });
      const sourceProbe = await probeFile(`${tmp}/src.webm`);
      const id = await createSession(server.url);
      await uploadMixed(server.url, id, splitBytes(source, [40_000]));
      const done = await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      });
      await done.body?.cancel();
      const final = await waitForStatus(server.url, id);
      assert.equal(final.status, "complete", JSON.stringify(final));
      const files = await (await fetch(`${server.url}/video/${id}/`)).json();
      assert.deepEqual(files.completed_videos, [`${id}.mp4`, `${id}.mkv`]);
      await fetchToFile(`${server.url}/media/${id}/${id}.mkv`, `${tmp}/o.mkv`);
      const mkv = await probeFile(`${tmp}/o.mkv`);
      assert.equal(mkv.video?.codec, "h264");
      assert.equal(mkv.video?.packets, sourceProbe.video?.packets);
      const mkvRes = await fetch(`${server.url}/media/${id}/${id}.mkv`, {
        method: "HEAD",
      });
      assert.equal(mkvRes.headers.get("content-type"), "video/x-matroska");
      await mkvRes.body?.cancel();
    } finally {
      await server.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "api: a fragmented MP4 recording (video/mp4) is accepted and processed the same way",
  ignore: ffmpegMissing,
  async fn() {
    const server = await startTestServer();
    const tmp = await Deno.makeTempDir({ prefix: "tapedeck-flow-" });
    try {
      const source = await makeRecording(`${tmp}/src.mp4`, {
        codec: "vp9-mp4",
        seconds: 3,
      });
      const sourceProbe = await probeFile(`${tmp}/src.mp4`);
      const id = await createSession(server.url);
      for (const [i, piece] of splitBytes(source, [25_000]).entries()) {
        const res = await fetch(`${server.url}/add_data/${id}/?index=${i}`, {
          method: "POST",
          body: piece,
          headers: { "content-type": "video/mp4" },
        });
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      const done = await fetch(`${server.url}/complete_job/${id}/`, {
        method: "POST",
      });
      await done.body?.cancel();
      const final = await waitForStatus(server.url, id);
      assert.equal(final.status, "complete", JSON.stringify(final));
      await fetchToFile(
        `${server.url}/media/${id}/${id}.webm`,
        `${tmp}/o.webm`,
      );
      const webm = await probeFile(`${tmp}/o.webm`);
      assert.equal(webm.video?.codec, "vp9");
      assert.equal(webm.video?.packets, sourceProbe.video?.packets);
      assert.ok(
        Math.abs(webm.durationS - 3) < 0.15,
        `webm lasts ${webm.durationS}`,
      );
    } finally {
      await server.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
