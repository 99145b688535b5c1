/**
 * Reading a recording front to back with cheap skips, over a local file
 * range (a skip is a seek, so large frames are never read) or over a stream
 * (a skip reads and drops).
 */

const PIECE_BYTES = 64 * 1024;
/** The first read after a seek: enough for the next element headers. */
const AFTER_SEEK_BYTES = 4 * 1024;

/** Sequential reads and skips over some bytes. */
export class ByteReader {
  #buffer = new Uint8Array(0);
  #position = 0;
  #next: () => Promise<Uint8Array | null>;
  #jump: (n: number) => Promise<number>;
  #close: () => void | Promise<void>;

  /**
   * `next` gives the next piece (null at the end); `jump` passes over `n`
   * bytes past the buffered ones and says how many there were.
   */
  constructor(
    next: () => Promise<Uint8Array | null>,
    jump: (n: number) => Promise<number>,
    close: () => void | Promise<void>,
  ) {
    this.#next = next;
    this.#jump = jump;
    this.#close = close;
  }

  /** Bytes read or skipped so far. */
  get position(): number {
    return this.#position;
  }

  /** Up to `n` bytes from here without moving on (fewer only at the end). */
  async peek(n: number): Promise<Uint8Array> {
    if (this.#buffer.length < n) {
      const pieces: Uint8Array[] = [this.#buffer];
      let length = this.#buffer.length;
      while (length < n) {
        const piece = await this.#next();
        if (!piece) break;
        pieces.push(piece);
        length += piece.length;
      }
      if (pieces.length > 1) {
        const joined = new Uint8Array(length);
        let at = 0;
        for (const piece of pieces) {
          joined.set(piece, at);
          at += piece.length;
        }
        this.#buffer = joined;
      }
    }
    return this.#buffer.subarray(0, Math.min(n, this.#buffer.length));
  }

  /** Moves `n` bytes on; false when the bytes end first. */
  async skip(n: number): Promise<boolean> {
    if (n <= this.#buffer.length) {
      this.#buffer = this.#buffer.subarray(n);
      this.#position += n;
      return true;
    }
    const rest = n - this.#buffer.length;
    this.#position += this.#buffer.length;
    this.#buffer = new Uint8Array(0);
    const passed = await this.#jump(rest);
    this.#position += passed;
    return passed === rest;
  }

  /** Lets go of the file or stream (again: nothing). */
  async close(): Promise<void> {
    const close = this.#close;
    this.#close = () => {};
    await close();
  }
}

/** Reads bytes [0, end) of a local file; skips seek. */
export async function fileReader(
  path: string,
  end: number,
): Promise<ByteReader> {
  const file = await Deno.open(path, { read: true });
  let at = 0;
  let sought = false;
  return new ByteReader(
    async () => {
      if (at >= end) return null;
      const piece = sought ? AFTER_SEEK_BYTES : PIECE_BYTES;
      sought = false;
      const buf = new Uint8Array(Math.min(piece, end - at));
      const n = await file.read(buf);
      if (n === null) return null;
      at += n;
      return buf.subarray(0, n);
    },
    async (n) => {
      const passed = Math.min(n, end - at);
      at += passed;
      await file.seek(at, Deno.SeekMode.Start);
      sought = true;
      return passed;
    },
    () => file.close(),
  );
}

/** Reads a stream; skips read and drop. */
export function streamReader(stream: ReadableStream<Uint8Array>): ByteReader {
  const reader = stream.getReader();
  let carry: Uint8Array | null = null;
  const next = async () => {
    if (carry) {
      const piece = carry;
      carry = null;
      return piece;
    }
    const { done, value } = await reader.read();
    return done ? null : value;
  };
  return new ByteReader(
    next,
    async (n) => {
      let passed = 0;
      while (passed < n) {
        const piece = await next();
        if (!piece) break;
        const take = Math.min(piece.length, n - passed);
        passed += take;
        if (take < piece.length) carry = piece.subarray(take);
      }
      return passed;
    },
    () => reader.cancel().catch(() => {}),
  );
}
