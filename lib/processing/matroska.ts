/**
 * A small EBML reader for the start of a WebM/Matroska file: the tracks
 * (codec, picture size, audio channels and rate) and the segment duration,
 * read from the header elements before the first Cluster. It replaces an
 * ffprobe run where that is all we need; anything it cannot read it leaves
 * to ffprobe (it returns null).
 */

/** One audio or video track, named the way ffprobe names things. */
export interface MatroskaTrack {
  /** TrackNumber. */
  number: number;
  type: "video" | "audio";
  /** The Matroska CodecID, e.g. "V_VP9". */
  codecId: string;
  /** ffprobe's `codec_name` for it, e.g. "vp9". */
  codecName: string;
  /** PixelWidth and PixelHeight (video). */
  width?: number;
  height?: number;
  /** Channels and SamplingFrequency (audio; Matroska's defaults 1 and 8000 Hz apply). */
  channels?: number;
  sampleRate?: number;
}

/** What the header of a Matroska file says. */
export interface MatroskaHead {
  /** The EBML DocType: "webm" or "matroska". */
  docType: string;
  /** Audio and video tracks in file order (other track types are left out). */
  tracks: MatroskaTrack[];
  /** Info Duration in seconds; absent when the file does not say (a live WebM). */
  durationS?: number;
}

const ID_EBML = 0x1a45dfa3;
const ID_DOCTYPE = 0x4282;
const ID_SEGMENT = 0x18538067;
const ID_CLUSTER = 0x1f43b675;
const ID_INFO = 0x1549a966;
const ID_TIMECODE_SCALE = 0x2ad7b1;
const ID_DURATION = 0x4489;
const ID_TRACKS = 0x1654ae6b;
const ID_TRACK_ENTRY = 0xae;
const ID_TRACK_NUMBER = 0xd7;
const ID_TRACK_TYPE = 0x83;
const ID_CODEC_ID = 0x86;
const ID_VIDEO = 0xe0;
const ID_PIXEL_WIDTH = 0xb0;
const ID_PIXEL_HEIGHT = 0xba;
const ID_AUDIO = 0xe1;
const ID_SAMPLING_FREQUENCY = 0xb5;
const ID_CHANNELS = 0x9f;

/** Matroska CodecIDs and ffprobe's names for them. */
const CODEC_NAMES: Record<string, string> = {
  V_VP8: "vp8",
  V_VP9: "vp9",
  V_AV1: "av1",
  "V_MPEG4/ISO/AVC": "h264",
  "V_MPEGH/ISO/HEVC": "hevc",
  V_THEORA: "theora",
  A_OPUS: "opus",
  A_VORBIS: "vorbis",
  A_FLAC: "flac",
  "A_MPEG/L3": "mp3",
};

/**
 * ffprobe's `codec_name` for a Matroska CodecID: `V_VP9` is "vp9",
 * `V_MPEG4/ISO/AVC` is "h264", any `A_AAC...` is "aac"; an id it does not
 * know is returned lower-cased.
 */
export function codecNameOf(codecId: string): string {
  if (codecId.startsWith("A_AAC")) return "aac";
  return CODEC_NAMES[codecId] ?? codecId.toLowerCase();
}

/** An element header: its id, where its data starts, and its size (null: unknown). */
interface ElementHeader {
  id: number;
  dataStart: number;
  size: number | null;
}

/** Reads an element header at `pos`, or null when the bytes end first or are not EBML. */
function readHeader(
  bytes: Uint8Array,
  pos: number,
  end: number,
): ElementHeader | null {
  if (pos >= end) return null;
  const first = bytes[pos];
  if (first === 0) return null;
  const idLength = Math.clz32(first) - 23;
  if (idLength > 4 || pos + idLength > end) return null;
  let id = 0;
  for (let i = 0; i < idLength; i++) id = id * 256 + bytes[pos + i];
  pos += idLength;
  if (pos >= end) return null;
  const lead = bytes[pos];
  if (lead === 0) return null;
  const sizeLength = Math.clz32(lead) - 23;
  if (pos + sizeLength > end) return null;
  let size = lead & (0xff >> sizeLength);
  let allOnes = size === (0xff >> sizeLength);
  for (let i = 1; i < sizeLength; i++) {
    const b = bytes[pos + i];
    if (b !== 0xff) allOnes = false;
    size = size * 256 + b;
  }
  return {
    id,
    dataStart: pos + sizeLength,
    size: allOnes ? null : size,
  };
}

/** The children of a fully present element, as [id, data] pairs. */
function children(
  bytes: Uint8Array,
  start: number,
  end: number,
): Array<[number, Uint8Array]> {
  const out: Array<[number, Uint8Array]> = [];
  let pos = start;
  while (pos < end) {
    const h = readHeader(bytes, pos, end);
    if (!h || h.size === null || h.dataStart + h.size > end) break;
    out.push([h.id, bytes.subarray(h.dataStart, h.dataStart + h.size)]);
    pos = h.dataStart + h.size;
  }
  return out;
}

function readUint(data: Uint8Array): number {
  let n = 0;
  for (const b of data.subarray(0, 8)) n = n * 256 + b;
  return n;
}

function readFloat(data: Uint8Array): number {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.length === 4) return view.getFloat32(0);
  if (data.length === 8) return view.getFloat64(0);
  return 0;
}

function readString(data: Uint8Array): string {
  let end = data.indexOf(0);
  if (end < 0) end = data.length;
  return new TextDecoder().decode(data.subarray(0, end));
}

function readTrack(data: Uint8Array): MatroskaTrack | null {
  let number = 0;
  let type = 0;
  let codecId = "";
  let video: Uint8Array | undefined;
  let audio: Uint8Array | undefined;
  for (const [id, value] of children(data, 0, data.length)) {
    if (id === ID_TRACK_NUMBER) number = readUint(value);
    else if (id === ID_TRACK_TYPE) type = readUint(value);
    else if (id === ID_CODEC_ID) codecId = readString(value);
    else if (id === ID_VIDEO) video = value;
    else if (id === ID_AUDIO) audio = value;
  }
  if (type === 1) {
    const track: MatroskaTrack = {
      number,
      type: "video",
      codecId,
      codecName: codecNameOf(codecId),
    };
    for (const [id, value] of video ? children(video, 0, video.length) : []) {
      if (id === ID_PIXEL_WIDTH) track.width = readUint(value);
      else if (id === ID_PIXEL_HEIGHT) track.height = readUint(value);
    }
    return track;
  }
  if (type === 2) {
    const track: MatroskaTrack = {
      number,
      type: "audio",
      codecId,
      codecName: codecNameOf(codecId),
      channels: 1,
      sampleRate: 8000,
    };
    for (const [id, value] of audio ? children(audio, 0, audio.length) : []) {
      if (id === ID_CHANNELS) track.channels = readUint(value);
      else if (id === ID_SAMPLING_FREQUENCY) {
        track.sampleRate = Math.round(readFloat(value));
      }
    }
    return track;
  }
  return null;
}

/**
 * Reads the tracks and duration from the first bytes of a WebM/Matroska
 * file (a few KiB usually hold them; pass what you have). Handles a Segment
 * or Cluster of unknown size (as MediaRecorder writes them), SeekHead and
 * Void elements, and stops at the first Cluster. Returns null when the bytes
 * are not Matroska or hold no complete Tracks element before the first
 * Cluster (or before they end); never throws.
 */
export function readMatroskaHead(bytes: Uint8Array): MatroskaHead | null {
  try {
    return parseHead(bytes);
  } catch {
    return null;
  }
}

function parseHead(bytes: Uint8Array): MatroskaHead | null {
  const end = bytes.length;
  const ebml = readHeader(bytes, 0, end);
  if (!ebml || ebml.id !== ID_EBML || ebml.size === null) return null;
  const ebmlEnd = ebml.dataStart + ebml.size;
  if (ebmlEnd > end) return null;
  let docType = "matroska";
  for (const [id, value] of children(bytes, ebml.dataStart, ebmlEnd)) {
    if (id === ID_DOCTYPE) docType = readString(value);
  }
  if (docType !== "webm" && docType !== "matroska") return null;

  // Top level: the Segment, maybe after Void elements.
  let pos = ebmlEnd;
  let segment: ElementHeader | null = null;
  while (pos < end) {
    const h = readHeader(bytes, pos, end);
    if (!h) return null;
    if (h.id === ID_SEGMENT) {
      segment = h;
      break;
    }
    if (h.size === null) return null;
    pos = h.dataStart + h.size;
  }
  if (!segment) return null;
  const segmentEnd = segment.size === null
    ? end
    : Math.min(end, segment.dataStart + segment.size);

  let tracks: MatroskaTrack[] | undefined;
  let timecodeScale = 1_000_000;
  let duration: number | undefined;
  pos = segment.dataStart;
  while (pos < segmentEnd) {
    const h = readHeader(bytes, pos, segmentEnd);
    if (!h || h.id === ID_CLUSTER || h.size === null) break;
    const dataEnd = h.dataStart + h.size;
    if (h.id === ID_INFO || h.id === ID_TRACKS) {
      if (dataEnd > segmentEnd) break; // cut off: read no further
      if (h.id === ID_INFO) {
        for (const [id, value] of children(bytes, h.dataStart, dataEnd)) {
          if (id === ID_TIMECODE_SCALE) timecodeScale = readUint(value);
          else if (id === ID_DURATION) duration = readFloat(value);
        }
      } else {
        tracks = [];
        for (const [id, value] of children(bytes, h.dataStart, dataEnd)) {
          if (id !== ID_TRACK_ENTRY) continue;
          const track = readTrack(value);
          if (track) tracks.push(track);
        }
      }
    }
    pos = dataEnd;
  }
  if (!tracks) return null;
  const head: MatroskaHead = { docType, tracks };
  if (duration !== undefined && duration > 0 && Number.isFinite(duration)) {
    head.durationS = duration * timecodeScale / 1e9;
  }
  return head;
}
