/**
 * Comparing two byte streams, for telling a retried chunk from a clash.
 */

/** Whether two streams yield the same bytes; both are cancelled after. */
export async function sameStreams(
  a: ReadableStream<Uint8Array>,
  b: ReadableStream<Uint8Array>,
): Promise<boolean> {
  const ra = a.getReader();
  const rb = b.getReader();
  let x: Uint8Array = new Uint8Array(0);
  let y: Uint8Array = new Uint8Array(0);
  try {
    while (true) {
      if (x.length === 0) {
        const r = await ra.read();
        if (r.done) return y.length === 0 && (await rb.read()).done;
        x = r.value;
      }
      if (y.length === 0) {
        const r = await rb.read();
        if (r.done) return false;
        y = r.value;
      }
      const n = Math.min(x.length, y.length);
      for (let i = 0; i < n; i++) if (x[i] !== y[i]) return false;
      x = x.subarray(n);
      y = y.subarray(n);
    }
  } finally {
    await ra.cancel().catch(() => {});
    await rb.cancel().catch(() => {});
  }
}
