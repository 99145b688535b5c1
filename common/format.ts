/**
 * Short human-readable forms of sizes, durations and times, the same on the
 * server and in the browser.
 */

const UNITS = ["B", "KB", "MB", "GB", "TB"];

/** `1536` becomes `1.5 KB` (powers of 1024, one decimal under 10). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return "–";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 || value >= 10 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** `65.4` seconds becomes `1:05.4`; under a minute `4.2 s`. */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0) {
    return "–";
  }
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.floor(seconds);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = (seconds % 60).toFixed(1).padStart(4, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** How long ago `then` was at `now` (both ms): `just now`, `12 s ago`, `3 min ago`. */
export function formatAgo(then: number | undefined, now: number): string {
  if (then === undefined) return "–";
  const s = Math.max(0, Math.round((now - then) / 1000));
  if (s < 2) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** A date and time in ISO form without seconds' fractions, in UTC. */
export function formatTime(ms: number): string {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

/** `0.423` becomes `42%`. */
export function formatPercent(fraction: number | undefined): string {
  return `${Math.round(Math.min(1, Math.max(0, fraction ?? 0)) * 100)}%`;
}

/** The first block of a UUID, enough to tell recordings apart on screen. */
export function shortId(id: string): string {
  return id.slice(0, 8);
}

/** `3` and `chunk` become `3 chunks`; `1` and `chunk` become `1 chunk`. */
export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
