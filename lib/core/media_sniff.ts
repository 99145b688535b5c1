/**
 * Recognising a recording by its first bytes: a WebM/Matroska file starts
 * with the EBML magic, an MP4 has an `ftyp` box at byte 4.
 */

const EBML = [0x1a, 0x45, 0xdf, 0xa3];
const FTYP = [0x66, 0x74, 0x79, 0x70];

/** The container that `head` starts like, or null when it is neither. */
export function mediaKind(head: Uint8Array): "webm" | "mp4" | null {
  if (head.length >= 4 && EBML.every((b, i) => head[i] === b)) return "webm";
  if (head.length >= 8 && FTYP.every((b, i) => head[i + 4] === b)) {
    return "mp4";
  }
  return null;
}

/** Whether a start too short to judge (under 8 bytes) could still become one. */
export function couldBeMediaStart(prefix: Uint8Array): boolean {
  return prefix.every((b, i) => i >= 4 || b === EBML[i]) ||
    prefix.every((b, i) => i < 4 || b === FTYP[i - 4]);
}
