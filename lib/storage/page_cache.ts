/**
 * Keeps ingest from flooding the page cache. Chunks are written once and
 * read once (when the recording is processed), yet the kernel keeps every
 * written page cached until memory runs short. Under heavy ingest the cache
 * then grows by the ingest rate: each new page costs the writer a fresh
 * page of memory (on a microVM whose free memory is handed back to the host,
 * a host fault), and finished videos that viewers watch get evicted. So the
 * most recently written chunk bytes, up to a budget, stay cached (a
 * recording that just stopped is processed from memory); older ones are let
 * go with `posix_fadvise(POSIX_FADV_DONTNEED)` once they are flushed.
 *
 * The call needs Linux, `--allow-ffi` and glibc's `libc.so.6`; elsewhere
 * (also on Deno Deploy, where recordings go to object storage and this is
 * not used) nothing is dropped and the kernel decides alone.
 */

const POSIX_FADV_DONTNEED = 4;
const O_RDONLY = 0;

type DropPages = (path: string, offset: number, length: number) => boolean;

/** Opened once, at import (so no test sees a library resource appear). */
const dropPages: DropPages | null = openDropPages();

function openDropPages(): DropPages | null {
  if (Deno.build.os !== "linux") return null;
  try {
    // Without --allow-ffi (or where a platform leaves FFI out) nothing is
    // dropped; the query itself never prompts.
    if (typeof Deno.dlopen !== "function") return null;
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
      return null;
    }
    const libc = Deno.dlopen("libc.so.6", {
      open: { parameters: ["buffer", "i32"], result: "i32" },
      posix_fadvise: {
        parameters: ["i32", "i64", "i64", "i32"],
        result: "i32",
      },
      close: { parameters: ["i32"], result: "i32" },
    });
    const encoder = new TextEncoder();
    return (path, offset, length) => {
      const fd = libc.symbols.open(encoder.encode(`${path}\0`), O_RDONLY);
      if (fd < 0) return false;
      try {
        return libc.symbols.posix_fadvise(
          fd,
          BigInt(offset),
          BigInt(length),
          POSIX_FADV_DONTNEED,
        ) === 0;
      } finally {
        libc.symbols.close(fd);
      }
    };
  } catch {
    return null;
  }
}

/** Whether this process can let go of cached pages (Linux with FFI allowed). */
export function canDropPages(): boolean {
  return dropPages !== null;
}

interface Written {
  path: string;
  offset: number;
  length: number;
}

/**
 * The flushed chunk bytes still in the page cache, oldest first. Once they
 * pass the budget, the oldest are dropped until a quarter of it is free.
 */
export class DropBehind {
  readonly budget: number;
  #written: Written[] = [];
  #head = 0;
  #cached = 0;
  #dropped = 0;

  constructor(budgetBytes: number) {
    this.budget = budgetBytes;
  }

  /** Bytes dropped from the page cache so far. */
  get droppedBytes(): number {
    return this.#dropped;
  }

  /** Notes flushed bytes of `path`, and drops the oldest past the budget. */
  flushed(path: string, offset: number, length: number): void {
    if (!dropPages || length <= 0) return;
    this.#written.push({ path, offset, length });
    this.#cached += length;
    if (this.#cached <= this.budget) return;
    const target = Math.floor(this.budget * 0.75);
    const ranges = new Map<string, { start: number; end: number }>();
    while (this.#cached > target && this.#head < this.#written.length) {
      const w = this.#written[this.#head++];
      this.#cached -= w.length;
      const r = ranges.get(w.path);
      if (r) {
        r.start = Math.min(r.start, w.offset);
        r.end = Math.max(r.end, w.offset + w.length);
      } else {
        ranges.set(w.path, { start: w.offset, end: w.offset + w.length });
      }
    }
    if (this.#head > 1024 && this.#head * 2 > this.#written.length) {
      this.#written = this.#written.slice(this.#head);
      this.#head = 0;
    }
    for (const [path, { start, end }] of ranges) {
      if (dropPages(path, start, end - start)) this.#dropped += end - start;
    }
  }
}
