/**
 * Who may use the library API (`/api/recordings`), composed from
 * lib/http/access.ts: listing is the dashboard's right, reading one is the
 * right to view it, deleting is {@link authorizeDelete}'s, and renaming
 * needs what changing a recording needs.
 */

import type { AppContext } from "../core/context.ts";
import { UnauthorizedError } from "../core/errors.ts";
import { getRecording } from "../recordings/ids.ts";
import { tokenMatches } from "../recordings/upload_token.ts";
import {
  apiKeysEnabled,
  hasApiKey,
  requestUploadToken,
  requireApiKey,
} from "./access.ts";

/**
 * Listing: an API key when API_KEYS is set (as for the dashboard); with
 * PRIVATE_RECORDINGS on, always an API key (the list shows every
 * recording's title).
 */
export function authorizeList(ctx: AppContext, req: Request): void {
  requireApiKey(ctx.config, req);
  if (ctx.config.privateRecordings && !hasApiKey(ctx.config, req)) {
    throw new UnauthorizedError(
      "Recordings are private (PRIVATE_RECORDINGS): listing them needs an API key.",
    );
  }
}

/**
 * Renaming: an API key (or login session) or the recording's upload token.
 * When none of API_KEYS, REQUIRE_UPLOAD_TOKEN and PRIVATE_RECORDINGS is
 * set, the id is the capability, as it is for `complete_job`. A 404 for an
 * unknown id comes first.
 */
export async function authorizeRename(
  ctx: AppContext,
  id: string,
  req: Request,
): Promise<void> {
  const rec = await getRecording(ctx, id);
  if (hasApiKey(ctx.config, req)) return;
  if (tokenMatches(requestUploadToken(req), rec.tokenHash)) return;
  const config = ctx.config;
  if (
    !apiKeysEnabled(config) && !config.requireUploadToken &&
    !config.privateRecordings
  ) return;
  throw new UnauthorizedError(
    `Renaming recording ${id} needs an API key or its upload token (in an 'X-Upload-Token' header).`,
  );
}
