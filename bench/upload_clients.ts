/**
 * How the load generator talks to each server: the recording API
 * (tapedeck and the bare server) or the tus protocol (the peer, with
 * `Upload-Defer-Length: 1` and one PATCH per chunk).
 */

/** A failed request: an HTTP status, or 0 for a network error. */
export class UploadError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "UploadError";
    this.status = status;
  }
}

/** One uploading protocol. */
export interface UploadClient {
  /** Opens an upload (a recording session) and returns its handle. */
  create(): Promise<string>;
  /** Sends chunk `index`, which starts at byte `offset` of the recording. */
  send(
    handle: string,
    index: number,
    bytes: Uint8Array<ArrayBuffer>,
    offset: number,
  ): Promise<void>;
  /** Ends the upload of `totalBytes` bytes. */
  complete(handle: string, totalBytes: number): Promise<void>;
}

async function expectOk(res: Response, what: string): Promise<string> {
  const text = await res.text();
  if (!res.ok) {
    throw new UploadError(res.status, `${what}: ${res.status} ${text}`);
  }
  return text;
}

async function request(
  url: string,
  init: RequestInit,
  what: string,
): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    throw new UploadError(0, `${what}: ${(err as Error).message}`);
  }
}

/**
 * The recording API: POST /create/, /add_data/<id>/, /complete_job/<id>/.
 * With `lastChunkHint`, complete_job says which chunk was the last
 * (`?last_chunk=N`), so the server needs no grace for late chunks.
 */
export function apiClient(
  baseUrl: string,
  options: { lastChunkHint?: boolean } = {},
): UploadClient {
  const lastIndex = new Map<string, number>();
  return {
    async create() {
      const res = await request(
        `${baseUrl}/create/`,
        { method: "POST" },
        "create",
      );
      return JSON.parse(await expectOk(res, "create")).video_id;
    },
    async send(id, index, bytes) {
      lastIndex.set(id, Math.max(lastIndex.get(id) ?? -1, index));
      const res = await request(`${baseUrl}/add_data/${id}/`, {
        method: "POST",
        body: bytes,
        headers: {
          "content-type": "video/webm",
          "x-chunk-index": String(index),
        },
      }, "add_data");
      await expectOk(res, "add_data");
    },
    async complete(id) {
      const hint = options.lastChunkHint && lastIndex.has(id)
        ? `?last_chunk=${lastIndex.get(id)}`
        : "";
      lastIndex.delete(id);
      const res = await request(
        `${baseUrl}/complete_job/${id}/${hint}`,
        { method: "POST" },
        "complete_job",
      );
      await expectOk(res, "complete_job");
    },
  };
}

/** The tus 1.0 protocol: creation with deferred length, a PATCH per chunk. */
export function tusClient(baseUrl: string): UploadClient {
  const tus = { "tus-resumable": "1.0.0" };
  return {
    async create() {
      const res = await request(`${baseUrl}/files`, {
        method: "POST",
        headers: { ...tus, "upload-defer-length": "1" },
      }, "tus create");
      await expectOk(res, "tus create");
      const location = res.headers.get("location");
      if (!location) throw new UploadError(res.status, "tus: no Location");
      return new URL(location, baseUrl).href;
    },
    async send(location, _index, bytes, offset) {
      const res = await request(location, {
        method: "PATCH",
        body: bytes,
        headers: {
          ...tus,
          "upload-offset": String(offset),
          "content-type": "application/offset+octet-stream",
        },
      }, "tus patch");
      await expectOk(res, "tus patch");
    },
    async complete(location, totalBytes) {
      const res = await request(location, {
        method: "PATCH",
        body: new Uint8Array(0),
        headers: {
          ...tus,
          "upload-offset": String(totalBytes),
          "upload-length": String(totalBytes),
          "content-type": "application/offset+octet-stream",
        },
      }, "tus final patch");
      await expectOk(res, "tus final patch");
    },
  };
}
