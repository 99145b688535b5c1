/// <reference lib="dom" />
/**
 * What the recorder captures and how: the camera, a screen or this tab
 * (with the microphone mixed in if chosen) as one MediaStream, the
 * MediaRecorder format, and the sentences for what can go wrong. Browser
 * APIs are touched only when a function is called.
 */

/** What the recorder can record. */
export type Source = "camera" | "screen" | "tab";

/** Recorder formats in order of preference (see FACTS.md for Chromium). */
export const PREFERRED_MIME_TYPES = [
  "video/webm;codecs=h264,opus",
  "video/webm;codecs=vp9,opus",
  "video/webm;codecs=vp8,opus",
  "video/webm",
];

/** Picks the first preferred type the recorder supports, or "" for its default. */
export function pickMimeType(isSupported: (type: string) => boolean): string {
  return PREFERRED_MIME_TYPES.find((type) => isSupported(type)) ?? "";
}

/** Why this browser cannot record here, or null when it can. */
export function supportProblem(): string | null {
  if (!globalThis.isSecureContext) {
    return "Recording needs a secure page: open this site over HTTPS or on localhost.";
  }
  if (!navigator.mediaDevices || typeof MediaRecorder === "undefined") {
    return "This browser cannot record media (no MediaRecorder or media devices).";
  }
  return null;
}

/** The sentence for an error of getUserMedia or getDisplayMedia. */
export function describeMediaError(err: unknown): string {
  const e = err as DOMException;
  switch (e?.name) {
    case "NotAllowedError":
      return "Permission to record was refused. Allow it in the browser and try again.";
    case "NotFoundError":
      return "No camera, microphone or screen source was found.";
    case "NotReadableError":
      return "The device is busy or unavailable; close other apps using it and try again.";
    default:
      return `Could not start recording: ${e?.message ?? String(err)}`;
  }
}

/** A stream to record and what must be stopped with it. */
export interface CapturedStream {
  stream: MediaStream;
  /** Every track opened for it (stopped when the recording ends). */
  tracks: MediaStreamTrack[];
  /** Mixes the display's and the microphone's audio, when both exist. */
  audio?: AudioContext;
}

/** Asks for the source (and the microphone) and returns the stream to record. */
export async function openStream(
  source: Source,
  withMic: boolean,
): Promise<CapturedStream> {
  const devices = navigator.mediaDevices;
  if (source === "camera") {
    const stream = await devices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: withMic,
    });
    return { stream, tracks: stream.getTracks() };
  }
  const options = source === "tab"
    ? {
      video: { frameRate: 30 },
      audio: false,
      preferCurrentTab: true,
      selfBrowserSurface: "include",
    }
    : { video: { frameRate: 30 }, audio: true, selfBrowserSurface: "exclude" };
  const display = await devices.getDisplayMedia(
    options as DisplayMediaStreamOptions,
  );
  if (!withMic) return { stream: display, tracks: display.getTracks() };
  let mic: MediaStream;
  try {
    mic = await devices.getUserMedia({ audio: true });
  } catch (err) {
    for (const track of display.getTracks()) track.stop();
    throw err;
  }
  const tracks = [...display.getTracks(), ...mic.getTracks()];
  const voices = [...display.getAudioTracks(), ...mic.getAudioTracks()];
  if (voices.length <= 1) {
    return {
      stream: new MediaStream([...display.getVideoTracks(), ...voices]),
      tracks,
    };
  }
  const audio = new AudioContext();
  const mix = audio.createMediaStreamDestination();
  for (const voice of voices) {
    audio.createMediaStreamSource(new MediaStream([voice])).connect(mix);
  }
  return {
    stream: new MediaStream([
      ...display.getVideoTracks(),
      ...mix.stream.getAudioTracks(),
    ]),
    tracks: [...tracks, ...mix.stream.getTracks()],
    audio,
  };
}

/** What the recorder session uses of a MediaRecorder. */
export interface MediaRecorderLike extends EventTarget {
  readonly state: RecordingState;
  start(timeslice?: number): void;
  stop(): void;
  ondataavailable: ((event: BlobEvent) => void) | null;
  onstart: ((event: Event) => void) | null;
  onerror: ((event: ErrorEvent) => void) | null;
}

/** Stops a recorder; resolves once its `stop` event (after the last chunk) fired. */
export function stopRecorder(recorder: MediaRecorderLike): Promise<void> {
  if (recorder.state === "inactive") return Promise.resolve();
  return new Promise((resolve) => {
    recorder.addEventListener("stop", () => resolve(), { once: true });
    recorder.stop();
  });
}
