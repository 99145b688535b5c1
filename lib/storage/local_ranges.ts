/**
 * Reading many byte ranges of local files as one stream, at a cost that
 * follows the bytes read rather than the number of ranges: a file is opened
 * once for every run of ranges in it, small ranges are copied out of one
 * 64 KiB read of the file around them (tiny chunks stored out of order cost
 * no read each), and the output comes in 64 KiB pieces.
 */

const PIECE_BYTES = 64 * 1024;
const WINDOW_BYTES = 64 * 1024;
/** Ranges up to this size are served from the window. */
const SMALL_RANGE = 4 * 1024;

/** Bytes [offset, offset + size) of the local file at `path`. */
export interface LocalRange {
  path: string;
  offset: number;
  size: number;
}

/** An open file with the window of it last read. */
class RangeFile {
  readonly path: string;
  #file: Deno.FsFile;
  #position = 0;
  #window = new Uint8Array(0);
  #windowStart = 0;
  #reads = 0;

  constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  static async open(path: string): Promise<RangeFile> {
    return new RangeFile(path, await Deno.open(path, { read: true }));
  }

  /**
   * Reads bytes at `at` into `into`; returns how many (0 at the end). A
   * `small` read after the first one of the file is served from the window.
   */
  async readAt(at: number, into: Uint8Array, small: boolean): Promise<number> {
    const windowEnd = this.#windowStart + this.#window.length;
    if (
      small && this.#reads++ > 0 &&
      (at < this.#windowStart || at + into.length > windowEnd)
    ) {
      await this.#fillWindow(Math.max(0, at - WINDOW_BYTES / 2));
    }
    if (
      at >= this.#windowStart &&
      at + into.length <= this.#windowStart + this.#window.length
    ) {
      const from = at - this.#windowStart;
      into.set(this.#window.subarray(from, from + into.length));
      return into.length;
    }
    if (this.#position !== at) await this.#file.seek(at, Deno.SeekMode.Start);
    const n = await this.#file.read(into) ?? 0;
    this.#position = at + n;
    return n;
  }

  async #fillWindow(start: number): Promise<void> {
    if (this.#position !== start) {
      await this.#file.seek(start, Deno.SeekMode.Start);
    }
    const window = new Uint8Array(WINDOW_BYTES);
    const filled = await this.#file.read(window) ?? 0;
    this.#position = start + filled;
    this.#window = window.subarray(0, filled);
    this.#windowStart = start;
  }

  close(): void {
    this.#file.close();
  }
}

/**
 * The given ranges' bytes one after another, read only as fast as the
 * consumer pulls. The file in use is closed when the stream ends, errors or
 * is cancelled; the stream errors if a file is shorter than its range.
 */
export function openLocalRanges(
  ranges: LocalRange[],
): ReadableStream<Uint8Array> {
  let left = ranges.reduce((n, r) => n + r.size, 0);
  let i = 0;
  let done = 0;
  let file: RangeFile | undefined;
  const release = () => {
    file?.close();
    file = undefined;
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const out = new Uint8Array(Math.min(PIECE_BYTES, left));
      let filled = 0;
      try {
        while (filled < out.length) {
          const range = ranges[i];
          if (done === range.size) {
            i++;
            done = 0;
            continue;
          }
          if (file?.path !== range.path) {
            release();
            file = await RangeFile.open(range.path);
          }
          const room = Math.min(out.length - filled, range.size - done);
          const n = await file.readAt(
            range.offset + done,
            out.subarray(filled, filled + room),
            range.size <= SMALL_RANGE,
          );
          if (n === 0) {
            throw new Error(
              `${range.path} ended ${
                range.size - done
              } bytes before the end of a stored chunk.`,
            );
          }
          filled += n;
          done += n;
        }
      } catch (err) {
        release();
        controller.error(err);
        return;
      }
      left -= filled;
      if (filled > 0) controller.enqueue(out);
      if (left === 0) {
        release();
        controller.close();
      }
    },
    cancel() {
      release();
    },
  });
}
