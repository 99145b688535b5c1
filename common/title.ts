/**
 * Titles of recordings, the same on the server and in the browser: how a
 * title is tidied, what a recording without one is called, and how titles
 * are searched (by words and their beginnings, accents and case ignored).
 */

import type { RecordingStatus } from "../lib/kv/keys.ts";
import { formatTime } from "./format.ts";

/** The longest title kept, in characters. */
export const MAX_TITLE_LENGTH = 200;
/** Title words are indexed by their beginnings up to this many characters. */
export const MAX_TERM_LENGTH = 12;
/** Only this many distinct words of a title are indexed. */
export const MAX_INDEXED_WORDS = 16;
/** Only this many words of a search are used. */
const MAX_QUERY_WORDS = 8;

/** The statuses a library view can be filtered by. */
export const STATUSES: readonly RecordingStatus[] = [
  "recording",
  "processing",
  "complete",
  "failed",
];

/** What a library view shows: a search and a status, both optional. */
export interface LibraryFilter {
  /** Words the title must contain (each as the start of a title word). */
  q?: string;
  status?: RecordingStatus;
}

/**
 * Control characters and bidirectional overrides become spaces, runs of
 * white space one space, and the ends are trimmed.
 */
export function tidyTitle(raw: string): string {
  return raw
    .replace(
      /[\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/gu,
      " ",
    )
    .replace(/\s+/g, " ")
    .trim();
}

/** A file name without its extension (`demo.take-2.webm` -> `demo.take-2`), tidied and cut to length. */
export function titleFromFilename(
  name: string | undefined,
): string | undefined {
  if (!name) return undefined;
  const base = name.replace(/\.[A-Za-z0-9]{1,10}$/, "");
  const title = tidyTitle(base || name).slice(0, MAX_TITLE_LENGTH).trim();
  return title || undefined;
}

/**
 * What a recording is called on screen: its title, else "Recording" and its
 * creation time, in the browser's own time zone once `local` (on the server,
 * which does not know it, in UTC).
 */
export function displayTitle(
  rec: { title?: string; createdAt: number },
  local: boolean,
): string {
  if (rec.title) return rec.title;
  return `Recording ${formatWhen(rec.createdAt, local)}`;
}

/** A date and time: the browser's local form once `local`, UTC before. */
export function formatWhen(ms: number, local: boolean): string {
  if (!local) return formatTime(ms);
  return new Date(ms).toLocaleString(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
}

/** Lower case without accents, for comparing words. */
function fold(text: string): string {
  return text.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase();
}

/** The words of a text, folded (letters and digits; everything else separates). */
export function titleWords(text: string): string[] {
  return fold(text).match(/[\p{L}\p{N}]+/gu) ?? [];
}

/**
 * The index terms of a title: the beginnings (1 to {@link MAX_TERM_LENGTH}
 * characters) of its first {@link MAX_INDEXED_WORDS} distinct words.
 */
export function indexTerms(title: string | undefined): Set<string> {
  const terms = new Set<string>();
  if (!title) return terms;
  const words = [...new Set(titleWords(title))].slice(0, MAX_INDEXED_WORDS);
  for (const word of words) {
    const chars = [...word];
    for (let n = 1; n <= Math.min(chars.length, MAX_TERM_LENGTH); n++) {
      terms.add(chars.slice(0, n).join(""));
    }
  }
  return terms;
}

/** The words of a search, folded (at most a few). */
export function queryWords(q: string | undefined): string[] {
  return q ? titleWords(q).slice(0, MAX_QUERY_WORDS) : [];
}

/** The index term a search is looked up by: its longest word, cut to the term length. */
export function searchTerm(words: string[]): string | undefined {
  const longest = words.reduce<string | undefined>(
    (a, w) => (!a || [...w].length > [...a].length ? w : a),
    undefined,
  );
  return longest && [...longest].slice(0, MAX_TERM_LENGTH).join("");
}

/** Whether every word of a search starts a word of `title`. */
export function matchesWords(
  title: string | undefined,
  words: string[],
): boolean {
  if (words.length === 0) return true;
  if (!title) return false;
  const have = titleWords(title);
  return words.every((w) => have.some((h) => h.startsWith(w)));
}

/** Whether a recording belongs in a library view. */
export function matchesFilter(
  rec: { title?: string; status: RecordingStatus },
  filter: LibraryFilter,
): boolean {
  if (filter.status && rec.status !== filter.status) return false;
  return matchesWords(rec.title, queryWords(filter.q));
}
