/**
 * Publishing a live encode's HLS files as ffmpeg makes them. ffmpeg writes
 * one fragmented MP4 into the live encode's scratch folder (`live.mp4`:
 * `ftyp` and `moov`, then a `moof` and `mdat` per keyframe, one every
 * LIVE_SEGMENT_S), which is read as it grows: the `ftyp` and `moov` become
 * the init segment, each `moof` with its `mdat` a media segment, published
 * in order, each flushed, and then the playlist that lists exactly the
 * segments published (lib/live_encode/contract.ts has the names).
 *
 * Why not ffmpeg's own HLS muxer: it cuts a fragment before it has seen
 * the next frame, so the last frame of each segment lasts as long as ffmpeg
 * guesses (one frame at the guessed rate), and with a variable frame rate
 * the first frame of the next segment moves to where the guess ended. The
 * MP4 muxer's own keyframe fragments end at the next frame's time, so every
 * frame keeps its timestamp.
 */

import { join } from "node:path";
import type { AppContext } from "../core/context.ts";
import {
  LIVE_INIT,
  LIVE_PLAYLIST,
  LIVE_SEGMENT_S,
  liveSegmentName,
} from "./contract.ts";
import {
  completeBoxes,
  fragmentSeconds,
  type VideoTrack,
  videoTrackOf,
} from "./fmp4.ts";
import { concatBytes } from "../../common/bytes.ts";

/** The fragmented MP4 ffmpeg writes in the scratch folder. */
export const LIVE_STREAM_FILE = "live.mp4";

/** One media segment of a playlist. */
export interface PlaylistSegment {
  name: string;
  durationS: number;
}

/** The playlist that lists `segments` (ended: with `#EXT-X-ENDLIST`). */
export function playlistText(
  segments: PlaylistSegment[],
  ended: boolean,
): string {
  const longest = segments.reduce((m, s) => Math.max(m, s.durationS), 0);
  const lines = [
    "#EXTM3U",
    "#EXT-X-VERSION:7",
    `#EXT-X-TARGETDURATION:${Math.max(LIVE_SEGMENT_S, Math.ceil(longest))}`,
    "#EXT-X-MEDIA-SEQUENCE:1",
    "#EXT-X-PLAYLIST-TYPE:EVENT",
    "#EXT-X-INDEPENDENT-SEGMENTS",
    `#EXT-X-MAP:URI="${LIVE_INIT}"`,
  ];
  for (const s of segments) {
    lines.push(`#EXTINF:${s.durationS.toFixed(6)},`, s.name);
  }
  if (ended) lines.push("#EXT-X-ENDLIST");
  return lines.join("\n") + "\n";
}

/** Cuts and publishes one live encode's files from its scratch folder. */
export class SegmentPublisher {
  /** The segments published, in order. */
  readonly published: PlaylistSegment[] = [];
  /** Whether the playlist published last ended (every segment is out). */
  ended = false;
  #ctx: AppContext;
  #id: string;
  #work: string;
  #readTo = 0;
  #pending: Uint8Array = new Uint8Array(0);
  #init: Uint8Array[] = [];
  #track?: VideoTrack;
  #moof?: Uint8Array;
  #busy?: Promise<number>;

  /** `work`: the folder ffmpeg writes {@link LIVE_STREAM_FILE} into. */
  constructor(ctx: AppContext, id: string, work: string) {
    this.#ctx = ctx;
    this.#id = id;
    this.#work = work;
  }

  /** Seconds the published segments hold. */
  get encodedS(): number {
    return this.published.reduce((n, s) => n + s.durationS, 0);
  }

  /**
   * Publishes what ffmpeg wrote since the last call and resolves how many
   * segments are published; calls made meanwhile share one pass. `final`
   * (ffmpeg ended): the stream must end with a whole fragment, and the
   * playlist is ended.
   */
  publishNew(final = false): Promise<number> {
    this.#busy ??= this.#publish(final).finally(() => this.#busy = undefined);
    return this.#busy;
  }

  async #publish(final: boolean): Promise<number> {
    const before = this.published.length;
    for (const box of await this.#newBoxes()) {
      if (box.type === "ftyp") this.#init = [box.bytes];
      else if (box.type === "moov") {
        this.#init.push(box.bytes);
        this.#track = videoTrackOf(box.bytes);
        await this.#write(LIVE_INIT, concatBytes(this.#init));
      } else if (box.type === "moof") this.#moof = box.bytes;
      else if (box.type === "mdat" && this.#moof) {
        const name = liveSegmentName(this.published.length + 1);
        // Flushed: the job may remux it after a crash of this machine.
        await this.#write(name, concatBytes([this.#moof, box.bytes]));
        this.published.push({
          name,
          durationS: this.#track ? fragmentSeconds(this.#moof, this.#track) : 0,
        });
        this.#moof = undefined;
      }
    }
    const ended = final && this.#pending.length === 0 && !this.#moof &&
      this.#init.length === 2;
    if (this.published.length > before || ended !== this.ended) {
      const tmp = join(this.#work, `playlist-${crypto.randomUUID()}.m3u8`);
      await Deno.writeTextFile(tmp, playlistText(this.published, ended));
      await this.#ctx.storage.publishFile(this.#id, LIVE_PLAYLIST, tmp, {
        sync: false,
      });
      this.ended = ended;
    }
    return this.published.length;
  }

  /** The complete top-level boxes ffmpeg appended since the last call. */
  async #newBoxes() {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(join(this.#work, LIVE_STREAM_FILE));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw err;
    }
    try {
      const size = (await file.stat()).size;
      if (size > this.#readTo) {
        const fresh = new Uint8Array(size - this.#readTo);
        await file.seek(this.#readTo, Deno.SeekMode.Start);
        let filled = 0;
        while (filled < fresh.length) {
          const n = await file.read(fresh.subarray(filled));
          if (n === null) break;
          filled += n;
        }
        this.#readTo += filled;
        this.#pending = concatBytes([this.#pending, fresh.subarray(0, filled)]);
      }
    } finally {
      file.close();
    }
    const { boxes, used } = completeBoxes(this.#pending);
    const rest = this.#pending.slice(used);
    const out = boxes.map((b) => ({ type: b.type, bytes: b.bytes.slice() }));
    this.#pending = rest;
    return out;
  }

  /** Publishes `bytes` as file `name` of the recording, flushed. */
  async #write(name: string, bytes: Uint8Array): Promise<void> {
    const tmp = join(this.#work, `${name}.part`);
    await Deno.writeFile(tmp, bytes);
    await this.#ctx.storage.publishFile(this.#id, name, tmp);
  }
}
