/**
 * Reading a byte range of a local file as a stream, pulled piece by piece.
 */

const PIECE_BYTES = 64 * 1024;

/**
 * Opens [start, end] (inclusive) of a local file as a ReadableStream that
 * reads in 64 KiB pieces only as fast as the consumer pulls, and closes the
 * file when the range is done, on error, or when the stream is cancelled.
 * The stream errors if the file turns out shorter than `end + 1` bytes.
 */
export async function openLocalRange(
  path: string,
  start: number,
  end: number,
): Promise<ReadableStream<Uint8Array>> {
  if (!Number.isSafeInteger(start) || start < 0) {
    throw new RangeError(
      `Range start must be a whole number >= 0, got ${start}.`,
    );
  }
  if (!Number.isSafeInteger(end) || end < start - 1) {
    throw new RangeError(
      `Range end must be a whole number >= start - 1, got ${end}.`,
    );
  }
  const file = await Deno.open(path, { read: true });
  try {
    if (start > 0) await file.seek(start, Deno.SeekMode.Start);
  } catch (err) {
    file.close();
    throw err;
  }

  let remaining = end - start + 1;
  let open = true;
  function release() {
    if (!open) return;
    open = false;
    file.close();
  }

  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (remaining <= 0) {
        release();
        controller.close();
        return;
      }
      const buf = new Uint8Array(Math.min(PIECE_BYTES, remaining));
      let n: number | null;
      try {
        n = await file.read(buf);
      } catch (err) {
        if (!open) return;
        release();
        controller.error(err);
        return;
      }
      if (!open) return;
      if (n === null) {
        release();
        controller.error(
          new Error(
            `${path} ended ${remaining} bytes before the end of the requested range.`,
          ),
        );
        return;
      }
      remaining -= n;
      controller.enqueue(n === buf.length ? buf : buf.subarray(0, n));
      if (remaining <= 0) {
        release();
        controller.close();
      }
    },
    cancel() {
      release();
    },
  });
}
