/// <reference lib="dom" />
/**
 * What the recorder session (client/recorder_session.ts) uses of the page:
 * its events, the outbox, media capture and navigation. In a browser that
 * is {@link browserEnvironment}; tests pass fakes.
 */

import {
  type CapturedStream,
  type MediaRecorderLike,
  openStream,
  type Source,
  supportProblem,
} from "./capture.ts";
import { ChunkStore, type KeptStore } from "./outbox.ts";

/** What the session uses of the page; {@link browserEnvironment} in a browser. */
export interface RecorderEnvironment {
  /** The server (the page's origin). */
  readonly baseUrl: string;
  /** Hears `online`, `offline` and `beforeunload`; gets `tapedeck:chunk`. */
  readonly window: EventTarget;
  /** Hears `visibilitychange`. */
  readonly document: EventTarget & {
    readonly visibilityState: DocumentVisibilityState;
  };
  isOnline(): boolean;
  /** Why this browser cannot record here, or null. */
  supportProblem(): string | null;
  /** Opens the outbox; rejects where chunks cannot be kept. */
  openStore(): Promise<KeptStore>;
  openStream(source: Source, withMic: boolean): Promise<CapturedStream>;
  isTypeSupported(type: string): boolean;
  /** A recorder of `stream` in `mimeType` ("" for the browser's default). */
  createRecorder(stream: MediaStream, mimeType: string): MediaRecorderLike;
  /** Opens another page (the recording's, after a stop); none: stay. */
  navigate?(url: string): void;
}

/** What {@link browserEnvironment} takes from its caller instead of the page. */
export interface BrowserEnvironmentOptions {
  /** The server; default: the page's origin. */
  baseUrl?: string;
  /** Open the recording's page after a stop (default true). */
  navigate?: boolean;
}

/** The page's own APIs, read only when used (so it can be made on the server). */
export function browserEnvironment(
  options: BrowserEnvironmentOptions = {},
): RecorderEnvironment {
  return {
    get baseUrl() {
      return options.baseUrl ?? location.origin;
    },
    get window() {
      return globalThis;
    },
    get document() {
      return document;
    },
    isOnline: () => navigator.onLine,
    supportProblem,
    openStore: () => ChunkStore.open(),
    openStream,
    isTypeSupported: (type) => MediaRecorder.isTypeSupported(type),
    createRecorder: (stream, type) =>
      new MediaRecorder(stream, type ? { mimeType: type } : undefined),
    navigate: options.navigate === false
      ? undefined
      : (url) => location.assign(url),
  };
}
