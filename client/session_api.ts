/**
 * The recorder's calls of the public API for one session, as any external
 * client would make them (docs/api.md): POST /create/, POST
 * /complete_job/<id>/, POST /retry_job/<id>/, GET /chunks/<id>/ and GET
 * /check_status/<id>/, each through {@link sendWithRetry}. Runs in
 * browsers and in Deno (fetch only).
 */

import type { ChunkLedger } from "../common/chunk_ledger.ts";
import { type RetryOptions, sendWithRetry } from "./retry.ts";

/** A session opened with POST /create/. */
export interface Session {
  videoId: string;
  /** The session's upload token, when the server issues one. */
  uploadToken?: string;
}

/** Opens a session with POST /create/ (with an API key when given). */
export async function createSession(
  baseUrl: string,
  options: RetryOptions & { apiKey?: string } = {},
): Promise<Session> {
  const { apiKey, ...retry } = options;
  const res = await sendWithRetry(
    `${baseUrl}/create/`,
    {
      method: "POST",
      headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
    },
    retry,
  );
  const body = await res.json();
  return {
    videoId: body.video_id,
    uploadToken: typeof body.upload_token === "string"
      ? body.upload_token
      : undefined,
  };
}

/** The `X-Upload-Token` header of a session, when it has a token. */
export function tokenHeaders(
  session: { uploadToken?: string },
): Record<string, string> {
  return session.uploadToken ? { "X-Upload-Token": session.uploadToken } : {};
}

/** Ends a session with POST /complete_job/<id>/ and returns the server's message. */
export async function completeSession(
  baseUrl: string,
  session: Session,
  options: RetryOptions = {},
): Promise<string> {
  const res = await sendWithRetry(
    `${baseUrl}/complete_job/${session.videoId}/`,
    { method: "POST", headers: tokenHeaders(session) },
    options,
  );
  return (await res.json()).message;
}

/**
 * Requeues a failed recording with POST /retry_job/<id>/ and returns the
 * server's message. Not retried: the caller shows the answer.
 */
export async function retryProcessing(
  baseUrl: string,
  session: Session,
  options: RetryOptions = {},
): Promise<string> {
  const res = await sendWithRetry(
    `${baseUrl}/retry_job/${session.videoId}/`,
    { method: "POST", headers: tokenHeaders(session) },
    { maxAttempts: 1, ...options },
  );
  return (await res.json()).message;
}

/** Reads the chunk ledger of a session (GET /chunks/<id>/). */
export async function fetchLedger(
  baseUrl: string,
  session: Session,
  options: RetryOptions = {},
): Promise<ChunkLedger> {
  const res = await sendWithRetry(
    `${baseUrl}/chunks/${session.videoId}/`,
    { headers: tokenHeaders(session) },
    options,
  );
  return await res.json();
}

/** Reads a session's status (GET /check_status/<id>/). */
export async function fetchStatus(
  baseUrl: string,
  session: Session,
  options: RetryOptions = {},
): Promise<{ status: string; error?: string }> {
  const res = await sendWithRetry(
    `${baseUrl}/check_status/${session.videoId}/`,
    { headers: tokenHeaders(session) },
    options,
  );
  return await res.json();
}
