/// <reference lib="dom" />
/**
 * Plays a recording while it is being recorded straight from its stored
 * chunks, through Media Source Extensions: the bytes of
 * `/media/<id>/source` from the first one on (the WebM header and the
 * first keyframe are there; a tab capture has no other keyframe) go into
 * one `video/webm; codecs=...` SourceBuffer, and each time the recording
 * grows, `Range: bytes=<what we have>-` fetches the rest. Only the bytes
 * the server calls settled (`X-Settled-Length`: up to the first missing
 * chunk) are appended, so nothing appended ever changes. The player is
 * kept a few seconds behind the end of what is buffered.
 */

import { readMatroskaHead } from "../lib/processing/matroska.ts";
import { concatBytes } from "../common/bytes.ts";

/** How far behind the buffered end the player is put (s). */
export const LIVE_DELAY_S = 1.5;
/** How much farther behind than that it may drift before it is moved (s). */
const MAX_DRIFT_S = 2.5;
/** Media kept behind the play position; older buffered media is removed (s). */
const KEEP_BEHIND_S = 60;
/** Bytes gathered before one append. */
const APPEND_BYTES = 512 * 1024;

/** MSE codec strings of the Matroska codecs a WebM SourceBuffer may take. */
const MSE_CODECS: Record<string, string> = {
  vp8: "vp8",
  vp9: "vp9",
  av1: "av01.0.08M.08",
  opus: "opus",
  vorbis: "vorbis",
};

/** Callbacks of {@link MseLiveSource}. */
export interface MseLiveOptions {
  /** `/media/<id>/source`, with `?token=` when the page has one. */
  sourceUrl: string;
  /** Called once when the stream cannot be played this way, with why. */
  onUnsupported(reason: string): void;
  fetch?: typeof fetch;
}

/**
 * The SourceBuffer type for a WebM whose header is `head`, or a reason
 * why none fits.
 */
export function mseTypeOf(
  head: Uint8Array,
): { type: string } | { reason: string } {
  const parsed = readMatroskaHead(head);
  if (!parsed) return { reason: "the recording's header cannot be read" };
  const codecs: string[] = [];
  for (const track of parsed.tracks) {
    const codec = MSE_CODECS[track.codecName];
    if (!codec) {
      return {
        reason:
          `its ${track.codecName} ${track.type} cannot be played from the upload`,
      };
    }
    codecs.push(codec);
  }
  if (codecs.length === 0) return { reason: "the recording has no tracks" };
  return { type: `video/webm; codecs="${codecs.join(",")}"` };
}

/** A live WebM recording played through one SourceBuffer (see the module notes). */
export class MseLiveSource {
  /** Bytes of the source taken so far. */
  offset = 0;
  /** Whether any media was appended (the player has something to show). */
  started = false;
  /** The held length the server named last. */
  #total = 0;
  #video: HTMLVideoElement;
  #options: MseLiveOptions;
  #fetch: typeof fetch;
  #head: Uint8Array[] = [];
  #mediaSource?: MediaSource;
  #buffer?: SourceBuffer;
  #url?: string;
  #busy = false;
  #again = false;
  #finishing = false;
  #closed = false;
  #positioned = false;
  #abort = new AbortController();

  constructor(video: HTMLVideoElement, options: MseLiveOptions) {
    this.#video = video;
    this.#options = options;
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
  }

  /** The recording may hold more bytes: fetch and append them (calls coalesce). */
  poll(): void {
    if (this.#closed) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    this.#busy = true;
    (async () => {
      try {
        do {
          this.#again = false;
          await this.#fetchMore();
        } while (this.#again && !this.#closed);
        this.#endIfDone();
      } catch (err) {
        if (!this.#closed) console.warn("live playback:", err);
      } finally {
        this.#busy = false;
      }
    })();
  }

  /**
   * The recording takes no more chunks: the stream is ended once every
   * held byte is in (now, or after the fetch under way or the next).
   */
  finish(): void {
    this.#finishing = true;
    if (!this.#busy) this.#endIfDone();
  }

  /** Puts the player back a few seconds behind the end of what is buffered. */
  goLive(): void {
    this.#chase(true);
  }

  /** Stops fetching and lets go of the player. */
  close(): void {
    this.#closed = true;
    this.#abort.abort();
    if (this.#url) {
      this.#video.removeAttribute("src");
      this.#video.load();
      URL.revokeObjectURL(this.#url);
    }
  }

  async #fetchMore(): Promise<void> {
    const res = await this.#fetch(this.#options.sourceUrl, {
      headers: { Range: `bytes=${this.offset}-` },
      cache: "no-store",
      credentials: "same-origin",
      signal: this.#abort.signal,
    });
    const range = res.headers.get("content-range") ?? "";
    const total = Number(range.slice(range.lastIndexOf("/") + 1));
    if (Number.isFinite(total) && total >= 0) this.#total = total;
    if (res.status === 416) return void await res.body?.cancel();
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      throw new Error(`the source answered ${res.status}`);
    }
    const start = res.status === 206
      ? Number(/bytes (\d+)-/.exec(range)?.[1])
      : 0;
    if (res.status === 200) {
      this.#total = Number(res.headers.get("content-length"));
    }
    const settledHeader = res.headers.get("x-settled-length");
    const settled = settledHeader === null
      ? this.#total
      : Number(settledHeader);
    if (start !== this.offset || !(settled > this.offset)) {
      return void await res.body.cancel();
    }
    let want = settled - this.offset;
    const reader = res.body.getReader();
    let pieces: Uint8Array[] = [];
    let gathered = 0;
    try {
      while (want > 0) {
        const { done, value } = await reader.read();
        if (done) break;
        const piece = value.length > want ? value.subarray(0, want) : value;
        want -= piece.length;
        pieces.push(piece);
        gathered += piece.length;
        if (gathered >= APPEND_BYTES || want === 0) {
          await this.#take(concatBytes(pieces));
          pieces = [];
          gathered = 0;
        }
      }
      if (gathered > 0) await this.#take(concatBytes(pieces));
    } finally {
      await reader.cancel().catch(() => {});
    }
  }

  /** Takes the next bytes of the source: held until the header is readable, then appended. */
  async #take(bytes: Uint8Array): Promise<void> {
    if (this.#closed) return;
    this.offset += bytes.length;
    if (!this.#buffer) {
      this.#head.push(bytes);
      const head = concatBytes(this.#head);
      if (!readMatroskaHead(head)) return;
      this.#head = [];
      const kind = mseTypeOf(head);
      if ("reason" in kind) return this.#unsupported(kind.reason);
      if (!globalThis.MediaSource?.isTypeSupported(kind.type)) {
        return this.#unsupported(`this browser cannot play ${kind.type} live`);
      }
      await this.#open(kind.type);
      bytes = head;
    }
    await this.#append(bytes);
    this.started = true;
    this.#chase(false);
    this.#trim();
  }

  #unsupported(reason: string): void {
    this.#closed = true;
    this.#abort.abort();
    this.#options.onUnsupported(reason);
  }

  async #open(type: string): Promise<void> {
    const mediaSource = new MediaSource();
    this.#mediaSource = mediaSource;
    this.#url = URL.createObjectURL(mediaSource);
    const opened = new Promise((resolve) =>
      mediaSource.addEventListener("sourceopen", resolve, { once: true })
    );
    this.#video.src = this.#url;
    await opened;
    this.#buffer = mediaSource.addSourceBuffer(type);
  }

  async #append(bytes: Uint8Array): Promise<void> {
    const buffer = this.#buffer!;
    for (let attempt = 0;; attempt++) {
      try {
        await this.#whenIdle(() => buffer.appendBuffer(bytes as BufferSource));
        return;
      } catch (err) {
        // Full: drop what lies well behind the play position, then retry.
        if (
          attempt > 0 || (err as DOMException)?.name !== "QuotaExceededError"
        ) throw err;
        await this.#whenIdle(() =>
          buffer.remove(0, Math.max(1, this.#video.currentTime - 5))
        );
      }
    }
  }

  /** Runs a SourceBuffer operation and waits for its `updateend`. */
  async #whenIdle(operation: () => void): Promise<void> {
    const buffer = this.#buffer!;
    const done = new Promise<void>((resolve, reject) => {
      const ok = () => {
        buffer.removeEventListener("error", bad);
        resolve();
      };
      const bad = () => {
        buffer.removeEventListener("updateend", ok);
        reject(new Error("the browser could not take the recording's bytes"));
      };
      buffer.addEventListener("updateend", ok, { once: true });
      buffer.addEventListener("error", bad, { once: true });
    });
    operation();
    await done;
  }

  /**
   * Keeps the player {@link LIVE_DELAY_S} behind the buffered end: put
   * there (and started) once there is media, moved there when it drifted
   * farther, unless the viewer paused it.
   */
  #chase(force: boolean): void {
    const video = this.#video;
    const ranges = video.buffered;
    if (ranges.length === 0) return;
    const last = ranges.length - 1;
    const end = ranges.end(last);
    const target = Math.max(ranges.start(last), end - LIVE_DELAY_S);
    if (force || !this.#positioned) {
      this.#positioned = true;
      video.currentTime = target;
      video.play().catch(() => {});
      return;
    }
    if (video.paused) return;
    if (target - video.currentTime > MAX_DRIFT_S || video.currentTime > end) {
      video.currentTime = target;
    }
  }

  /** Frees media well behind the play position. */
  #trim(): void {
    const buffer = this.#buffer;
    const ranges = this.#video.buffered;
    if (!buffer || buffer.updating || ranges.length === 0) return;
    const keepFrom = this.#video.currentTime - KEEP_BEHIND_S;
    if (ranges.start(0) < keepFrom - KEEP_BEHIND_S) {
      this.#whenIdle(() => buffer.remove(0, keepFrom)).catch(() => {});
    }
  }

  /** Ends the stream when the recording is over and every held byte is in. */
  #endIfDone(): void {
    const ms = this.#mediaSource;
    if (
      !this.#finishing || !ms || ms.readyState !== "open" ||
      this.offset < this.#total || this.#buffer?.updating
    ) return;
    try {
      ms.endOfStream();
    } catch {
      // a later append re-opens it anyway
    }
  }
}
