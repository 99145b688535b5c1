/**
 * The MAX_OPEN_RECORDINGS limit: how many recordings may be in status
 * `recording` at once. The open recordings are counted in KV at most once a
 * second (creates arriving together wait for one count) and again whenever
 * a create would reach the cap, so a burst of creates does not read the
 * whole index each.
 */

import { type AppContext, perKv } from "../core/context.ts";
import { UnavailableError } from "../core/errors.ts";
import { openRecordingPrefix } from "../kv/keys.ts";

/** Open recordings as counted in KV at `at`, plus the creates since. */
interface OpenTally {
  count: number;
  at: number;
  /** Creates let in whose commit has not finished yet. */
  pending: number;
  /** The count in progress, which creates arriving meanwhile wait for. */
  counting?: Promise<void>;
}

/** How long a count of the open recordings is trusted while far from the cap. */
const OPEN_TALLY_MS = 1000;

const openTallyOf = perKv((): OpenTally => ({
  count: 0,
  at: -Infinity,
  pending: 0,
}));

function countOpenRecordings(ctx: AppContext, tally: OpenTally, max: number) {
  tally.counting ??= (async () => {
    let count = 0;
    for await (
      const _ of ctx.kv.list({ prefix: openRecordingPrefix() }, { limit: max })
    ) count++;
    tally.count = count;
    tally.at = Date.now();
  })().finally(() => tally.counting = undefined);
  return tally.counting;
}

/**
 * Takes one of the MAX_OPEN_RECORDINGS slots, or throws a 503; call the
 * returned function once the create has committed (`true`) or failed.
 */
export async function takeOpenSlot(
  ctx: AppContext,
): Promise<(committed: boolean) => void> {
  const max = ctx.config.maxOpenRecordings;
  const tally = openTallyOf(ctx.kv);
  if (tally.counting) await tally.counting;
  if (
    Date.now() - tally.at > OPEN_TALLY_MS ||
    tally.count + tally.pending + 1 >= max
  ) {
    await countOpenRecordings(ctx, tally, max);
  }
  if (tally.count + tally.pending >= max) {
    throw new UnavailableError(
      `The server already has ${max} recordings in progress (MAX_OPEN_RECORDINGS); complete one or retry later.`,
    );
  }
  tally.pending++;
  return (committed) => {
    tally.pending--;
    if (committed) tally.count++;
  };
}
