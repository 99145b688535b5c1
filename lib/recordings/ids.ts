/**
 * Recording ids: lower-case hyphenated UUID v4 (docs/api.md: a malformed id is
 * a 404 like an unknown one), and the reads that turn an id into its record.
 */

import type { AppContext } from "../core/context.ts";
import { NotFoundError } from "../core/errors.ts";
import { type Recording, recordingKey } from "../kv/keys.ts";

const UUID_V4 =
  /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Whether `id` is a lower-case hyphenated version 4 UUID. */
export function isVideoId(id: string): boolean {
  return UUID_V4.test(id);
}

/** The 404 for an id that names no recording. */
export function unknownRecording(id: string): NotFoundError {
  const shown = id.length > 64 ? `${id.slice(0, 64)}...` : id;
  return new NotFoundError(
    `No recording has the id "${shown}"; create one with POST /create/ first.`,
  );
}

/** Throws a 404 unless `id` is a well-formed id (unknown and malformed look alike). */
export function assertVideoId(id: string): void {
  if (!isVideoId(id)) throw unknownRecording(id);
}

/** Reads a recording with its versionstamp, or throws a 404. */
export async function getRecordingEntry(
  ctx: AppContext,
  id: string,
): Promise<Deno.KvEntry<Recording>> {
  assertVideoId(id);
  const entry = await ctx.kv.get<Recording>(recordingKey(id));
  if (entry.versionstamp === null) throw unknownRecording(id);
  return entry as Deno.KvEntry<Recording>;
}

/** Reads a recording, or throws a 404. */
export async function getRecording(
  ctx: AppContext,
  id: string,
): Promise<Recording> {
  return (await getRecordingEntry(ctx, id)).value;
}
