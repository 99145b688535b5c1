/**
 * Whole-recording helpers for the processing phases: upload a file through
 * the API as a browser would (one chunk in flight), complete it, and wait
 * for the status to change.
 */

import type { UploadClient } from "./upload_clients.ts";

/** Uploads the file at `path` in `chunkBytes` chunks; returns its handle. */
export async function uploadFile(
  client: UploadClient,
  path: string,
  chunkBytes = 512 * 1024,
  onChunk?: (sent: number) => void,
): Promise<{ handle: string; bytes: number }> {
  const handle = await client.create();
  const file = await Deno.open(path);
  let offset = 0;
  try {
    for (let index = 0;; index++) {
      const buf = new Uint8Array(chunkBytes);
      let filled = 0;
      while (filled < chunkBytes) {
        const n = await file.read(buf.subarray(filled));
        if (n === null) break;
        filled += n;
      }
      if (filled === 0) break;
      await client.send(handle, index, buf.subarray(0, filled), offset);
      offset += filled;
      onChunk?.(offset);
      if (filled < chunkBytes) break;
    }
  } finally {
    file.close();
  }
  return { handle, bytes: offset };
}

/** A status as `check_status` reports it. */
export interface StatusBody {
  status: string;
  duration_s?: number;
  error?: string;
  [key: string]: unknown;
}

/** When polling first saw each processing stage (`stage` of check_status). */
export interface StageSeen {
  stage: string;
  /** performance.now() of the first poll that showed it. */
  at: number;
}

/**
 * Polls `check_status` every `everyMs` until the status is `complete` or
 * `failed`; resolves with the body, when it was first seen, and the stages
 * seen on the way (the last one is the status itself).
 */
export async function waitForDone(
  baseUrl: string,
  id: string,
  timeoutMs: number,
  everyMs = 10,
): Promise<{ body: StatusBody; seenAt: number; stages: StageSeen[] }> {
  const deadline = performance.now() + timeoutMs;
  const stages: StageSeen[] = [];
  while (performance.now() < deadline) {
    const res = await fetch(`${baseUrl}/check_status/${id}/`);
    const body = await res.json() as StatusBody;
    const stage = String(body.stage ?? body.status);
    if (stages.at(-1)?.stage !== stage) {
      stages.push({ stage, at: performance.now() });
    }
    if (body.status === "complete" || body.status === "failed") {
      return { body, seenAt: performance.now(), stages };
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`recording ${id} was not done after ${timeoutMs} ms`);
}

/** The finished files of a recording (`GET /video/<id>/`). */
export async function finishedFiles(
  baseUrl: string,
  id: string,
): Promise<string[]> {
  const res = await fetch(`${baseUrl}/video/${id}/`);
  return (await res.json()).completed_videos ?? [];
}
