/**
 * Just enough of the ISO base media file format to cut a fragmented MP4
 * stream (ffmpeg's `-movflags frag_keyframe+empty_moov+default_base_moof`)
 * into HLS segments: its top-level boxes, the video track's id and
 * timescale from the `moov`, and how long a `moof` fragment's video lasts
 * (the sum of its samples' durations, from `trun`, `tfhd` or `trex`).
 */

/** A top-level box: its four-letter type and its bytes, header included. */
export interface Box {
  type: string;
  bytes: Uint8Array;
}

/**
 * Splits the complete top-level boxes off the front of `buf`; returns them
 * and how many bytes they took (the rest is an incomplete box).
 */
export function completeBoxes(buf: Uint8Array): { boxes: Box[]; used: number } {
  const boxes: Box[] = [];
  let at = 0;
  while (buf.length - at >= 8) {
    const view = new DataView(buf.buffer, buf.byteOffset + at);
    let size = view.getUint32(0);
    const type = String.fromCharCode(...buf.subarray(at + 4, at + 8));
    if (size === 1) {
      if (buf.length - at < 16) break;
      size = Number(view.getBigUint64(8));
    }
    if (size < 8) throw new Error(`a ${type} box of ${size} bytes`);
    if (buf.length - at < size) break;
    boxes.push({ type, bytes: buf.subarray(at, at + size) });
    at += size;
  }
  return { boxes, used: at };
}

/** The children of a container box's payload (`from`: where they start). */
function children(box: Uint8Array, from = 8): Box[] {
  return completeBoxes(box.subarray(from)).boxes;
}

function child(
  box: Uint8Array,
  type: string,
  from = 8,
): Uint8Array | undefined {
  return children(box, from).find((b) => b.type === type)?.bytes;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** What a `moov` says about the video track. */
export interface VideoTrack {
  id: number;
  timescale: number;
  /** `trex` default sample duration (0 when none). */
  defaultDuration: number;
}

/** The first video track of a `moov` box, or undefined. */
export function videoTrackOf(moov: Uint8Array): VideoTrack | undefined {
  for (const trak of children(moov).filter((b) => b.type === "trak")) {
    const tkhd = child(trak.bytes, "tkhd");
    const mdia = child(trak.bytes, "mdia");
    if (!tkhd || !mdia) continue;
    const hdlr = child(mdia, "hdlr");
    const mdhd = child(mdia, "mdhd");
    if (!hdlr || !mdhd) continue;
    if (String.fromCharCode(...hdlr.subarray(16, 20)) !== "vide") continue;
    const tv = view(tkhd);
    const id = tv.getUint8(8) === 1 ? tv.getUint32(28) : tv.getUint32(20);
    const mv = view(mdhd);
    const timescale = mv.getUint8(8) === 1
      ? mv.getUint32(28)
      : mv.getUint32(20);
    let defaultDuration = 0;
    const mvex = child(moov, "mvex");
    for (const trex of mvex ? children(mvex) : []) {
      if (trex.type !== "trex") continue;
      const rv = view(trex.bytes);
      if (rv.getUint32(12) === id) defaultDuration = rv.getUint32(20);
    }
    return { id, timescale, defaultDuration };
  }
  return undefined;
}

/** How many seconds of video a `moof` fragment holds (0 without the track). */
export function fragmentSeconds(moof: Uint8Array, track: VideoTrack): number {
  let ticks = 0;
  for (const traf of children(moof).filter((b) => b.type === "traf")) {
    const tfhd = child(traf.bytes, "tfhd");
    if (!tfhd) continue;
    const hv = view(tfhd);
    if (hv.getUint32(12) !== track.id) continue;
    const hflags = hv.getUint32(8) & 0xffffff;
    let p = 16;
    if (hflags & 0x01) p += 8;
    if (hflags & 0x02) p += 4;
    const fallback = hflags & 0x08 ? hv.getUint32(p) : track.defaultDuration;
    for (const trun of children(traf.bytes).filter((b) => b.type === "trun")) {
      const rv = view(trun.bytes);
      const flags = rv.getUint32(8) & 0xffffff;
      const count = rv.getUint32(12);
      let q = 16;
      if (flags & 0x01) q += 4;
      if (flags & 0x04) q += 4;
      const per = [0x100, 0x200, 0x400, 0x800].filter((f) => flags & f).length *
        4;
      for (let i = 0; i < count; i++) {
        ticks += flags & 0x100 ? rv.getUint32(q + i * per) : fallback;
      }
    }
  }
  return ticks / track.timescale;
}
