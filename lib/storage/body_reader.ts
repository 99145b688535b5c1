/**
 * Reading a request body into reused buffers: {@link PieceReader} takes a
 * byte stream with a BYOB reader into 256 KiB buffers kept between requests,
 * so receiving a chunk allocates nothing per read.
 */

import { RequestTimeoutError } from "../core/errors.ts";

/** Body bytes gathered per file write. */
export const PIECE_BYTES = 256 * 1024;
/** Gather buffers kept for reuse between requests. */
const spareBuffers: ArrayBuffer[] = [];
/** Always kept (4 MiB): enough for the chunks in flight at a steady load. */
const SPARE_BUFFERS_BASE = 16;
/**
 * Kept while buffers ran short in the last {@link SPARE_SHORTAGE_MS} (16
 * MiB): under a burst every body past the spares would get a new buffer,
 * whose fresh pages the kernel must fault in and zero, which costs the CPU
 * the burst needs. Once no buffer ran short for that long, extras are let go.
 */
const SPARE_BUFFERS_MAX = 64;
const SPARE_SHORTAGE_MS = 10_000;
let lastShortageAt = -Infinity;

function takeSpareBuffer(): ArrayBuffer {
  const spare = spareBuffers.pop();
  if (spare) return spare;
  lastShortageAt = Date.now();
  return new ArrayBuffer(PIECE_BYTES);
}

function returnSpareBuffer(buffer: ArrayBuffer): void {
  if (buffer.byteLength !== PIECE_BYTES) return;
  const keep = spareBuffers.length < SPARE_BUFFERS_BASE ||
    (spareBuffers.length < SPARE_BUFFERS_MAX &&
      Date.now() - lastShortageAt < SPARE_SHORTAGE_MS);
  if (keep) spareBuffers.push(buffer);
}

/**
 * Reads a request body in pieces of up to {@link PIECE_BYTES}. A byte
 * stream (a request body) is read with a BYOB reader into a buffer reused
 * from request to request, so receiving a chunk allocates nothing per read
 * (no garbage for the collector, no growth of the allocator's heap); other
 * streams are read as they come. A piece is valid until the next call.
 */
export class PieceReader {
  #byob?: ReadableStreamBYOBReader;
  #plain?: ReadableStreamDefaultReader<Uint8Array>;
  #buffer?: ArrayBuffer;
  #done = false;

  constructor(body: ReadableStream<Uint8Array>) {
    try {
      this.#byob = body.getReader({ mode: "byob" });
      this.#buffer = takeSpareBuffer();
    } catch {
      this.#plain = body.getReader();
    }
  }

  /**
   * The next piece, or null at the end; `onBytes` is called as bytes
   * arrive. A piece returns as soon as it holds more than `allowed` bytes,
   * so a body over its limit is refused without waiting for more.
   */
  async next(onBytes: () => void, allowed: number): Promise<Uint8Array | null> {
    if (this.#plain) {
      const { done, value } = await this.#plain.read();
      if (!done) onBytes();
      return done ? null : value;
    }
    let filled = 0;
    const want = Math.min(PIECE_BYTES, Math.max(0, allowed) + 1);
    while (!this.#done && filled < want) {
      const { done, value } = await this.#byob!.read(
        new Uint8Array(this.#buffer!, filled, PIECE_BYTES - filled),
      );
      if (!value) {
        // Cancelled: the buffer went with the read.
        this.#buffer = undefined;
        this.#done = true;
        throw new Error("The chunk body was cancelled while being read.");
      }
      this.#buffer = value.buffer as ArrayBuffer;
      filled += value.length;
      if (value.length > 0) onBytes();
      if (done) this.#done = true;
    }
    return filled > 0 || !this.#done
      ? new Uint8Array(this.#buffer!, 0, filled)
      : null;
  }

  cancel(): void {
    (this.#byob ?? this.#plain)!.cancel().catch(() => {});
  }

  release(): void {
    (this.#byob ?? this.#plain)!.releaseLock();
    if (this.#buffer) returnSpareBuffer(this.#buffer);
    this.#buffer = undefined;
  }
}

/** The 408 for a body that sent nothing for `idleMs`. */
export function bodyStalled(idleMs: number): RequestTimeoutError {
  return new RequestTimeoutError(
    `The chunk body stalled: nothing arrived for ${idleMs} ms (BODY_IDLE_TIMEOUT_MS); nothing was stored. Send it again.`,
  );
}

/**
 * Passes a body through, failing with a 408 when no bytes arrive for
 * `idleMs` (a client that stopped sending halfway).
 */
export function withIdleTimeout(
  body: ReadableStream<Uint8Array>,
  idleMs: number,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(bodyStalled(idleMs));
        }, idleMs);
      });
      try {
        const { done, value } = await Promise.race([reader.read(), timeout]);
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (err) {
        reader.cancel().catch(() => {});
        controller.error(err);
      } finally {
        clearTimeout(timer);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
