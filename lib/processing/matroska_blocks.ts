/**
 * Tallies the blocks of a whole WebM/Matroska file without decoding
 * anything, so the work a re-encode would take is known before it starts:
 * per track the frames and the first and last timestamps, and for VP8 the
 * largest picture any keyframe announces (a keyframe may claim another size
 * than the header). Only block headers are read; a file reader seeks over
 * the frames. A file cut off in a block is read up to where it ends, but
 * anything else this walk does not expect (a damaged or odd layout, where
 * ffmpeg's demuxer might resynchronise and find more) makes it give up, so
 * the caller asks ffprobe instead.
 */

import type { ByteReader } from "./byte_reader.ts";

const ID_EBML = 0x1a45dfa3;
const ID_SEGMENT = 0x18538067;
const ID_CLUSTER = 0x1f43b675;
const ID_INFO = 0x1549a966;
const ID_TIMESTAMP_SCALE = 0x2ad7b1;
const ID_CLUSTER_TIMESTAMP = 0xe7;
const ID_BLOCK_GROUP = 0xa0;
const ID_BLOCK = 0xa1;
const ID_SIMPLE_BLOCK = 0xa3;
/** Top-level elements: one of them ends a Cluster of unknown size. */
const LEVEL_1 = new Set([
  ID_CLUSTER,
  ID_INFO,
  0x114d9b74, // SeekHead
  0x1654ae6b, // Tracks
  0x1c53bb6b, // Cues
  0x1941a469, // Attachments
  0x1043a770, // Chapters
  0x1254c367, // Tags
]);
/** Elements whose children are walked. */
const CONTAINERS = new Set([ID_SEGMENT, ID_CLUSTER, ID_INFO, ID_BLOCK_GROUP]);

/** What the blocks of one track add up to. */
export interface TrackTally {
  frames: number;
  /** Earliest and latest block timestamps in seconds. */
  firstS: number;
  lastS: number;
  /** The largest picture a VP8 keyframe of the track announces. */
  largestKeyframe?: { width: number; height: number };
}

/** The tally of a whole file, by TrackNumber. */
export type BlockTally = Map<number, TrackTally>;

/** An element header: id, where its data starts, its size (null: unknown). */
interface Header {
  id: number;
  start: number;
  size: number | null;
}

/**
 * Reads the element header at the reader's position: "end" when the bytes
 * end before it does (a recording cut off mid-element is read up to there),
 * null when it is not an element header.
 */
async function readHeader(reader: ByteReader): Promise<Header | "end" | null> {
  const bytes = await reader.peek(12);
  if (bytes.length === 0) return "end";
  const idLength = Math.clz32(bytes[0]) - 23;
  if (idLength < 1 || idLength > 4) return null;
  if (bytes.length < idLength + 1) return "end";
  let id = 0;
  for (let i = 0; i < idLength; i++) id = id * 256 + bytes[i];
  const lead = bytes[idLength];
  const sizeLength = Math.clz32(lead) - 23;
  if (sizeLength < 1 || sizeLength > 8) return null;
  if (bytes.length < idLength + sizeLength) return "end";
  let size = lead & (0xff >> sizeLength);
  let allOnes = size === (0xff >> sizeLength);
  for (let i = 1; i < sizeLength; i++) {
    const b = bytes[idLength + i];
    if (b !== 0xff) allOnes = false;
    size = size * 256 + b;
  }
  if (!allOnes && !Number.isSafeInteger(size)) return null;
  await reader.skip(idLength + sizeLength);
  return { id, start: reader.position, size: allOnes ? null : size };
}

function readUint(bytes: Uint8Array): number {
  let n = 0;
  for (const b of bytes.subarray(0, 8)) n = n * 256 + b;
  return n;
}

/** The picture size in a VP8 keyframe's header, or null (an inter frame). */
function vp8KeyframeSize(
  frame: Uint8Array,
): { width: number; height: number } | null {
  if (frame.length < 10 || (frame[0] & 1) !== 0) return null;
  if (frame[3] !== 0x9d || frame[4] !== 0x01 || frame[5] !== 0x2a) return null;
  return {
    width: (frame[6] | (frame[7] << 8)) & 0x3fff,
    height: (frame[8] | (frame[9] << 8)) & 0x3fff,
  };
}

/**
 * Walks every Cluster of the file `reader` reads, from its first byte, and
 * tallies the blocks of each track; `vp8Tracks` are the TrackNumbers whose
 * keyframes are VP8 (their picture sizes are read). Returns null when the
 * file is laid out in a way this walk does not expect.
 */
export async function tallyMatroskaBlocks(
  reader: ByteReader,
  vp8Tracks: ReadonlySet<number> = new Set(),
): Promise<BlockTally | null> {
  const tally: BlockTally = new Map();
  /** Ends of the enclosing elements of known size, innermost last. */
  const ends: number[] = [];
  let timestampScale = 1_000_000;
  let clusterTimestamp = 0;
  let first = true;
  while (true) {
    while (ends.length && reader.position >= ends[ends.length - 1]) {
      if (reader.position > ends.pop()!) return null;
    }
    const header = await readHeader(reader);
    if (header === "end") break;
    if (header === null) return null;
    if (first && header.id !== ID_EBML) return null;
    first = false;
    const end = header.size === null ? null : header.start + header.size;
    if (end !== null && ends.length && end > ends[ends.length - 1]) return null;
    if (CONTAINERS.has(header.id)) {
      const openEnded = header.id === ID_SEGMENT || header.id === ID_CLUSTER;
      if (end === null && !openEnded) return null;
      if (end !== null) ends.push(end);
      continue;
    }
    if (header.size === null) return null;
    if (LEVEL_1.has(header.id) || header.id === ID_EBML) {
      if (!await reader.skip(header.size)) return null;
      continue;
    }
    if (
      header.id === ID_TIMESTAMP_SCALE || header.id === ID_CLUSTER_TIMESTAMP
    ) {
      const value = readUint(await reader.peek(Math.min(8, header.size)));
      if (header.id === ID_TIMESTAMP_SCALE) timestampScale = value || 1_000_000;
      else clusterTimestamp = value;
    } else if (header.id === ID_SIMPLE_BLOCK || header.id === ID_BLOCK) {
      const head = await reader.peek(Math.min(header.size, 32));
      if (head.length < Math.min(header.size, 32)) break;
      const counted = countBlock(
        head,
        header.size,
        clusterTimestamp,
        timestampScale,
        vp8Tracks,
        tally,
      );
      if (!counted) return null;
    }
    if (!await reader.skip(header.size)) {
      // Only a block cut off by the end of the recording is expected.
      if (header.id === ID_SIMPLE_BLOCK || header.id === ID_BLOCK) break;
      return null;
    }
  }
  return tally;
}

/** Adds one block to the tally; false when its header is malformed. */
function countBlock(
  head: Uint8Array,
  size: number,
  clusterTimestamp: number,
  timestampScale: number,
  vp8Tracks: ReadonlySet<number>,
  tally: BlockTally,
): boolean {
  if (head.length === 0) return false;
  const trackLength = Math.clz32(head[0]) - 23;
  if (trackLength < 1 || trackLength > 8 || head.length < trackLength + 3) {
    return false;
  }
  let track = head[0] & (0xff >> trackLength);
  for (let i = 1; i < trackLength; i++) track = track * 256 + head[i];
  const relative = (head[trackLength] << 24 >> 16) | head[trackLength + 1];
  const flags = head[trackLength + 2];
  const lacing = (flags >> 1) & 3;
  const payload = trackLength + 3;
  let frames = 1;
  if (lacing !== 0) {
    if (head.length <= payload) return false;
    frames = head[payload] + 1;
  }
  const seconds = (clusterTimestamp + relative) * timestampScale / 1e9;
  let t = tally.get(track);
  if (!t) {
    t = { frames: 0, firstS: seconds, lastS: seconds };
    tally.set(track, t);
  }
  t.frames += frames;
  t.firstS = Math.min(t.firstS, seconds);
  t.lastS = Math.max(t.lastS, seconds);
  if (lacing === 0 && vp8Tracks.has(track) && size > payload) {
    const picture = vp8KeyframeSize(head.subarray(payload));
    if (
      picture &&
      (!t.largestKeyframe ||
        picture.width * picture.height >
          t.largestKeyframe.width * t.largestKeyframe.height)
    ) {
      t.largestKeyframe = picture;
    }
  }
  return true;
}
