/// <reference lib="dom" />
/**
 * Plays a recording while it is being recorded from its live encode: the
 * HLS event playlist `live.m3u8` of H.264 fragmented-MP4 segments, through
 * hls.js wherever MSE takes H.264 (loaded only now: `import("hls.js/light")`
 * is a chunk of its own in the bundle, fetched the first time a page plays
 * HLS), else through the browser's own HLS (Safari on phones), put near
 * the live edge once it knows the playlist. hls.js comes first because a
 * browser's own HLS may start an event playlist at its beginning and
 * cannot be told how far behind to stay (Chromium 156 answers "maybe" for
 * HLS and does just that).
 */

/** Callbacks of {@link HlsLiveSource}. */
export interface HlsLiveOptions {
  /** `/media/<id>/live.m3u8`, with `?token=` when the page has one. */
  playlistUrl: string;
  /** Called once when HLS cannot go on (the caller may fall back), with why. */
  onFatal(reason: string): void;
}

/** Whether this browser plays HLS itself. */
export function hasNativeHls(video: HTMLVideoElement): boolean {
  return video.canPlayType("application/vnd.apple.mpegurl") !== "";
}

/** Whether hls.js can play here: MSE takes H.264 in MP4. */
function mseTakesH264(): boolean {
  return !!globalThis.MediaSource?.isTypeSupported?.(
    'video/mp4; codecs="avc1.42E01E"',
  );
}

/** Whether HLS can be played here at all: with MSE for hls.js, or natively. */
export function canPlayHls(video: HTMLVideoElement): boolean {
  return mseTakesH264() || hasNativeHls(video);
}

/** How far behind the live edge a browser's own HLS is put (s). */
const NATIVE_BEHIND_S = 3;

type HlsInstance = {
  destroy(): void;
  loadSource(url: string): void;
  attachMedia(video: HTMLVideoElement): void;
  on(event: string, fn: (event: string, data: unknown) => void): void;
  readonly liveSyncPosition: number | null;
};

/** A live encode played through hls.js or the browser's own HLS. */
export class HlsLiveSource {
  /** Whether media is playing or ready to (the player has something to show). */
  started = false;
  #video: HTMLVideoElement;
  #options: HlsLiveOptions;
  #hls?: HlsInstance;
  #closed = false;
  #unlisten: () => void = () => {};

  constructor(video: HTMLVideoElement, options: HlsLiveOptions) {
    this.#video = video;
    this.#options = options;
  }

  /** Starts playing the playlist (hls.js is fetched first when needed). */
  async start(): Promise<void> {
    const video = this.#video;
    const onPlaying = () => {
      this.started = true;
    };
    video.addEventListener("loadeddata", onPlaying);
    this.#unlisten = () => video.removeEventListener("loadeddata", onPlaying);
    if (!mseTakesH264()) {
      video.addEventListener("loadedmetadata", () => this.goLive(), {
        once: true,
      });
      video.src = this.#options.playlistUrl;
      video.play().catch(() => {});
      return;
    }
    let Hls;
    try {
      Hls = (await import("hls.js/light")).default;
    } catch {
      return this.#fatal("the HLS player could not be loaded");
    }
    if (this.#closed) return;
    if (!Hls.isSupported()) {
      return this.#fatal("this browser cannot play HLS");
    }
    const hls = new Hls({
      // A worker would be a blob: script, which the pages' CSP refuses.
      enableWorker: false,
      // One segment (2 s) behind the newest, caught up by playing faster
      // when farther, moved there when more than four behind.
      liveSyncDurationCount: 1,
      liveMaxLatencyDurationCount: 4,
      maxLiveSyncPlaybackRate: 1.5,
      backBufferLength: 60,
    }) as unknown as HlsInstance;
    this.#hls = hls;
    hls.on(Hls.Events.ERROR, (_event, data) => {
      const error = data as { fatal?: boolean; details?: string };
      if (error.fatal) this.#fatal(`HLS failed (${error.details ?? "error"})`);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      video.play().catch(() => {});
    });
    hls.loadSource(this.#options.playlistUrl);
    hls.attachMedia(video);
  }

  /** Moves the player to the live edge. */
  goLive(): void {
    const video = this.#video;
    const edge = this.#hls?.liveSyncPosition ??
      (video.seekable.length
        ? video.seekable.end(video.seekable.length - 1) - NATIVE_BEHIND_S
        : null);
    if (edge !== null && Number.isFinite(edge) && edge > video.currentTime) {
      video.currentTime = edge;
    }
    video.play().catch(() => {});
  }

  /** Stops playing and lets go of the player. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unlisten();
    this.#hls?.destroy();
    this.#hls = undefined;
    this.#video.removeAttribute("src");
    this.#video.load();
  }

  #fatal(reason: string): void {
    if (this.#closed) return;
    this.close();
    this.#options.onFatal(reason);
  }
}
