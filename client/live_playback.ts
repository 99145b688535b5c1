/// <reference lib="dom" />
/**
 * Watching a recording while it is being recorded, on its page, and the
 * hand-over to the finished player when it is done, without a reload.
 *
 * Which way it plays, decided from the recording as the live socket
 * brings it (the same on every instance: all of it comes from KV and
 * storage):
 * 1. **HLS** (`Live (HLS)`), when the recording has a live encode that
 *    lists segments (common/live_encode.ts) and the browser plays HLS
 *    (its own, or hls.js over MSE);
 * 2. **MSE from the upload** (`Live (from the upload)`), otherwise, for a
 *    WebM whose codecs a WebM SourceBuffer takes (client/mse_live.ts); a
 *    live encode that appears before any media was shown takes over;
 * 3. neither: the page says why (an MP4 recording without a live encode,
 *    a browser without MSE).
 * HLS that fails falls back to MSE. Once the recording lists a finished
 * video (the WebM may come before the MP4), the page shows the finished
 * player; it continues where the live player was when that was playing.
 */

import { effect, type Signal, signal } from "@preact/signals";
import { liveEncodeStarting, livePlaylistOf } from "../common/live_encode.ts";
import {
  mediaUrl,
  type RecordingView,
  videoType,
} from "../common/recording_view.ts";
import { canPlayHls, HlsLiveSource } from "./hls_live.ts";
import { MseLiveSource } from "./mse_live.ts";

/** How the page plays the recording live. */
export type LiveMode = "off" | "waiting" | "hls" | "mse" | "unsupported";

/** How often the distance to the live edge is measured (ms). */
const MEASURE_MS = 250;
/**
 * How long the page waits for a running live encode's first segment
 * before it plays from the upload instead (ms).
 */
const HLS_WAIT_MS = 6_000;

/** Whether the recording has a finished video the page can play. */
export function hasFinishedVideo(r: RecordingView): boolean {
  return r.files.some((name) => videoType(name) !== "application/octet-stream");
}

/** Whether the page should play the recording live now. */
export function wantsLive(r: RecordingView): boolean {
  return !r.deleted && !hasFinishedVideo(r) &&
    (r.status === "recording" || r.status === "processing");
}

/** Where a player was, to continue there in the next one. */
interface Handoff {
  time: number;
  playing: boolean;
  muted: boolean;
}

type Engine =
  | { kind: "hls"; source: HlsLiveSource }
  | { kind: "mse"; source: MseLiveSource };

/** The live player of a recording's page (see the module notes). */
export class LivePlayback {
  readonly mode = signal<LiveMode>("off");
  /** Seconds between the play position and the newest media, while live. */
  readonly behindS = signal<number | null>(null);
  /** Why the recording cannot be played live here. */
  readonly note = signal<string | null>(null);
  #recording: Signal<RecordingView>;
  #video: HTMLVideoElement | null = null;
  #finished: HTMLVideoElement | null = null;
  #engine?: Engine;
  #hlsFailed = false;
  #mseFailed = false;
  #opened = false;
  #handoff: Handoff | null = null;
  #hlsWaitSince?: number;
  /** The end of the playable media, and when (performance.now()) it last grew. */
  #edge = { s: 0, at: 0 };
  #token: string | null;

  /** `token`: the page's `?token=` (private recordings), added to media URLs. */
  constructor(recording: Signal<RecordingView>, token: string | null = null) {
    this.#recording = recording;
    this.#token = token;
  }

  /** The ref of the live `<video>` (stable, so Preact keeps it). */
  readonly attachLive = (video: HTMLVideoElement | null): void => {
    if (video === this.#video) return;
    if (!video) this.#stop();
    this.#video = video;
    if (video) this.#update();
  };

  /**
   * The ref of the finished player's `<video>`: it continues where the
   * previous player was, when that one was playing.
   */
  readonly attachFinished = (video: HTMLVideoElement | null): void => {
    if (video === this.#finished) return;
    const previous = this.#finished;
    if (previous) {
      const state = this.#stateOf(previous);
      this.#handoff = state.playing ? state : null;
    }
    this.#finished = video;
    if (!video) return;
    const handoff = this.#handoff;
    this.#handoff = null;
    if (!handoff?.playing) return;
    const resume = () => {
      video.currentTime = Math.min(
        handoff.time,
        Math.max(0, video.duration - 0.25),
      );
      video.muted = handoff.muted;
      video.play().catch(() => {});
    };
    if (video.readyState >= 1) resume();
    else video.addEventListener("loadedmetadata", resume, { once: true });
  };

  /** Moves the live player back to a few seconds behind the newest media. */
  goLive(): void {
    this.#engine?.source.goLive();
  }

  /** Follows the recording; returns the function that stops. */
  open(): () => void {
    this.#opened = true;
    const dispose = effect(() => {
      const r = this.#recording.value;
      this.#update();
      const engine = this.#engine;
      if (engine?.kind === "mse") {
        // Fetches only when more is held than it has.
        if (r.bytesReceived > engine.source.offset) engine.source.poll();
        if (r.status !== "recording") engine.source.finish();
      }
    });
    const measure = setInterval(() => this.#measure(), MEASURE_MS);
    // Now and then too: a fetch that failed is tried again, a wait for a
    // live encode ends.
    const poll = setInterval(() => {
      const engine = this.#engine;
      if (!engine) this.#update();
      else if (
        engine.kind === "mse" &&
        this.#recording.value.bytesReceived > engine.source.offset
      ) engine.source.poll();
    }, 2_000);
    return () => {
      this.#opened = false;
      dispose();
      clearInterval(measure);
      clearInterval(poll);
      this.#stop();
    };
  }

  /** Starts, switches or stops the live engine for the recording as it is now. */
  #update(): void {
    const r = this.#recording.value;
    if (!this.#opened || !wantsLive(r)) {
      if (this.#engine) this.#stop();
      this.mode.value = "off";
      this.note.value = null;
      return;
    }
    const video = this.#video;
    if (!video) return;
    const engine = this.#engine;
    if (engine?.kind === "hls") return;
    const hls = !this.#hlsFailed && canPlayHls(video);
    const playlist = hls ? livePlaylistOf(r) : undefined;
    if (playlist && !engine?.source.started) {
      this.#stop();
      this.#startHls(video, r, playlist);
      return;
    }
    if (engine || this.#mseFailed) return;
    if (hls && liveEncodeStarting(r)) {
      // Its first segment comes within seconds; wait for it a while.
      this.#hlsWaitSince ??= performance.now();
      if (performance.now() - this.#hlsWaitSince < HLS_WAIT_MS) {
        this.mode.value = "waiting";
        this.note.value = "Waiting for the live encode's first segment…";
        return;
      }
    }
    const reason = mseReason(r);
    if (reason) {
      this.mode.value = r.bytesReceived > 0 ? "unsupported" : "waiting";
      this.note.value = reason;
      return;
    }
    this.#startMse(video, r);
  }

  #startHls(video: HTMLVideoElement, r: RecordingView, playlist: string) {
    const source = new HlsLiveSource(video, {
      playlistUrl: this.#url(r.id, playlist),
      onFatal: (reason) => {
        if (this.#engine?.source !== source) return;
        console.warn("live playback:", reason);
        this.#hlsFailed = true;
        this.#engine = undefined;
        this.#update();
      },
    });
    this.#engine = { kind: "hls", source };
    this.mode.value = "hls";
    this.note.value = null;
    source.start();
  }

  #startMse(video: HTMLVideoElement, r: RecordingView) {
    const source = new MseLiveSource(video, {
      sourceUrl: this.#url(r.id, "source"),
      onUnsupported: (reason) => {
        if (this.#engine?.source !== source) return;
        this.#mseFailed = true;
        this.#engine = undefined;
        this.mode.value = "unsupported";
        this.note.value = `Live playback is not possible here: ${reason}.`;
      },
    });
    this.#engine = { kind: "mse", source };
    this.mode.value = "mse";
    this.note.value = null;
    if (r.bytesReceived > 0) source.poll();
    if (r.status !== "recording") source.finish();
  }

  #stop(): void {
    const engine = this.#engine;
    this.#engine = undefined;
    if (this.#video && engine?.source.started) {
      const state = this.#stateOf(this.#video);
      this.#handoff = state.playing ? state : null;
    }
    engine?.source.close();
    this.behindS.value = null;
    this.#edge = { s: 0, at: 0 };
  }

  #stateOf(video: HTMLVideoElement): Handoff {
    return {
      time: video.currentTime,
      playing: !video.paused && !video.ended,
      muted: video.muted,
    };
  }

  /** Measures how far behind the newest media the player is. */
  #measure(): void {
    const video = this.#video;
    if (!this.#engine || !video || !this.#engine.source.started) {
      if (this.behindS.value !== null) this.behindS.value = null;
      return;
    }
    const edge = mediaEnd(video);
    const now = performance.now();
    if (edge > this.#edge.s + 0.01) this.#edge = { s: edge, at: now };
    // While the recording runs, the newest media ages until more comes.
    const aging = this.#recording.value.status === "recording"
      ? (now - this.#edge.at) / 1000
      : 0;
    const behind = Math.max(0, this.#edge.s + aging - video.currentTime);
    this.behindS.value = Math.round(behind * 10) / 10;
  }

  #url(id: string, name: string): string {
    return mediaUrl(id, name) +
      (this.#token ? `?token=${encodeURIComponent(this.#token)}` : "");
  }
}

/** Why a recording cannot be played from the upload, or null when it may be. */
function mseReason(r: RecordingView): string | null {
  if (r.bytesReceived === 0) return "Waiting for the first chunk…";
  if (!globalThis.MediaSource) {
    return "Live playback is not possible here: this browser has no Media Source Extensions.";
  }
  const type = r.mimeType?.split(";")[0].trim().toLowerCase();
  if (type && type !== "video/webm" && type !== "audio/webm") {
    return `Live playback is not possible for a ${type} recording without a live encode.`;
  }
  return null;
}

/**
 * The end of what the player holds: its last buffered range (not the
 * seekable end, which a header's duration can put at the recording's end).
 */
function mediaEnd(video: HTMLVideoElement): number {
  const ranges = video.buffered;
  if (ranges.length === 0) return 0;
  const end = ranges.end(ranges.length - 1);
  return Number.isFinite(end) ? end : 0;
}
