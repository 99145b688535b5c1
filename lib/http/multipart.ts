// Over 400 lines: one streaming state machine (boundary search across reads, part headers, held-back bytes) that is only correct as a whole.
/**
 * Streaming `multipart/form-data` parser (RFC 7578 over RFC 2046).
 *
 * `Request.formData()` holds the whole body in memory; this parser hands each
 * file part to a callback as a `ReadableStream` whose pulls drive the reads from
 * the request body, so a 64 MiB chunk can go straight to disk while memory stays
 * at about one input chunk plus the boundary length.
 *
 * How the scan works: the delimiter is `CRLF--boundary`. A valid boundary has
 * no CR, so the delimiter's only CR is its first byte. That gives two facts the
 * code relies on: (1) at most one position near the end of a chunk can start a
 * partial delimiter (the last CR), and (2) bytes held back as a possible
 * delimiter start are always a prefix of the delimiter, so they need no buffer
 * of their own: if the next chunk does not complete them, they are re-emitted
 * from the delimiter itself. Whole delimiters inside a chunk are found with
 * Boyer-Moore-Horspool.
 */

/** Thrown for a malformed multipart body; message says what is wrong (it is shown to the client as a 400). */
export class MultipartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MultipartError";
  }
}

/** One part that is streamed to `onFile` instead of being collected as text. */
export interface MultipartFilePart {
  /** Form field name (from Content-Disposition `name=`). */
  name: string;
  /** From Content-Disposition `filename=`, if any (may be `""`). */
  filename?: string;
  /** The part's Content-Type header, if any. */
  contentType?: string;
  /** The part's bytes, streamed; each pull reads from the request body. */
  body: ReadableStream<Uint8Array>;
}

/** Options of {@link parseMultipart}. */
export interface ParseMultipartOptions {
  /** Names of parts to stream to `onFile` even when they carry no filename. */
  fileFields?: string[];
  /** Largest text field in bytes (default 64 KiB); a larger one is a MultipartError. */
  maxFieldBytes?: number;
  /** Most parts in one body (default 100); one more is a MultipartError. */
  maxParts?: number;
}

const CR = 13;
const LF = 10;
const DASH = 45;
const SP = 32;
const HT = 9;
const EMPTY = new Uint8Array(0);
/** Largest header block of one part, in bytes, including its blank line. */
const MAX_HEADER_BYTES = 16 * 1024;
/** Most spaces/tabs allowed between a boundary and its CRLF. */
const MAX_PADDING = 256;
/** Epilogue bytes read (and dropped) before the rest of the input is cancelled. */
const MAX_EPILOGUE = 64 * 1024;
const DEFAULT_MAX_FIELD_BYTES = 64 * 1024;
const DEFAULT_MAX_PARTS = 100;

/** RFC 2046 boundary: 1-70 bchars, not ending in a space. */
const BOUNDARY_RE = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;

/** Extracts the boundary from a Content-Type header value like `multipart/form-data; boundary=----abc` (quoted or not). Returns null when absent or invalid (RFC 2046: 1-70 chars). Also null when the media type is not `multipart/form-data`. */
export function multipartBoundary(contentType: string | null): string | null {
  if (!contentType) return null;
  const { type, params } = parseHeaderValue(contentType);
  if (type !== "multipart/form-data") return null;
  const boundary = params.get("boundary");
  if (boundary === undefined || !BOUNDARY_RE.test(boundary)) return null;
  return boundary;
}

/**
 * Reads a multipart body. Text parts (parts without a filename) are collected into
 * `fields` (UTF-8 decoded, each at most `maxFieldBytes`, default 64 KiB; more -> MultipartError).
 * For every part that has a filename, OR whose name is in `options.fileFields`, `onFile` is called
 * with a stream of that part's bytes; the parser waits for the returned promise before going on,
 * and `onFile` must consume (or cancel) the stream. If `onFile` throws, the error propagates out
 * of parseMultipart unchanged (after cancelling the input).
 * Errors: missing closing boundary, truncated body, header block over 16 KiB, more than
 * `maxParts` (default 100) parts, a part without a Content-Disposition name -> MultipartError.
 *
 * Further details: when a field name repeats, the first value is kept (like
 * `FormData.get`). If `onFile` settles without reading its stream to the end,
 * the rest of that part is skipped. An error of the input stream itself is
 * rethrown as it is. Preamble and epilogue are ignored.
 */
export async function parseMultipart(
  body: ReadableStream<Uint8Array>,
  boundary: string,
  onFile: (part: MultipartFilePart) => Promise<void>,
  options: ParseMultipartOptions = {},
): Promise<{ fields: Record<string, string> }> {
  // Any printable-ASCII boundary of legal length is accepted here (a bit wider
  // than RFC 2046); what the scan needs is that it has no CR or LF.
  if (!/^[\x20-\x7e]{1,70}$/.test(boundary)) {
    throw new MultipartError("Invalid multipart boundary");
  }
  const maxFieldBytes = options.maxFieldBytes ?? DEFAULT_MAX_FIELD_BYTES;
  const maxParts = options.maxParts ?? DEFAULT_MAX_PARTS;
  const fileFields = new Set(options.fileFields ?? []);
  const fields: Record<string, string> = {};
  const reader = body.getReader();
  const input = new PartScanner(reader, boundary);

  try {
    // The preamble is read like a part body and dropped; the scanner starts
    // with a virtual CRLF matched so that a body opening with `--boundary`
    // finds its first delimiter.
    input.eofMessage = "Multipart body has no opening boundary";
    await input.skipRest();

    let count = 0;
    while (!(await input.readBoundaryLineEnd())) {
      if (++count > maxParts) {
        throw new MultipartError(
          `Multipart body has more than ${maxParts} parts`,
        );
      }
      input.eofMessage = `Multipart body ended in the headers of part ${count}`;
      const head = parsePartHeaders(await input.readHeaderBlock());
      if (head.name === undefined) {
        throw new MultipartError(
          `Part ${count} has no Content-Disposition header with a name`,
        );
      }
      const name = head.name;
      input.startPart(
        `Multipart body ended inside part "${name}" before the closing boundary`,
      );
      if (head.filename !== undefined || fileFields.has(name)) {
        await streamFilePart(input, onFile, {
          name,
          filename: head.filename,
          contentType: head.contentType,
        });
      } else {
        const value = await readTextPart(input, name, maxFieldBytes);
        if (!Object.hasOwn(fields, name)) {
          // defineProperty so that a field named "__proto__" is kept as data.
          Object.defineProperty(fields, name, {
            value,
            enumerable: true,
            writable: true,
            configurable: true,
          });
        }
      }
    }
    await dropEpilogue(reader, input.buffered());
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    throw err;
  }
  return { fields };
}

/** Feeds one part to `onFile` and returns once the part has been read past its end. */
async function streamFilePart(
  input: PartScanner,
  onFile: (part: MultipartFilePart) => Promise<void>,
  meta: { name: string; filename?: string; contentType?: string },
): Promise<void> {
  let cancelled = false;
  let detached = false; // set once onFile has settled
  let failure: { error: unknown } | undefined;
  let pulling: Promise<void> | undefined;
  let controller!: ReadableStreamDefaultController<Uint8Array>;

  // Never rejects: a read failure errors the stream and is kept in `failure`.
  async function pullOnce(
    c: ReadableStreamDefaultController<Uint8Array>,
  ): Promise<void> {
    if (detached) return; // the parser owns the input again
    try {
      let data: Uint8Array;
      do {
        data = await input.readSegment();
      } while (data.length === 0 && !input.partEnded);
      if (cancelled) return;
      if (data.length > 0) c.enqueue(data);
      if (input.partEnded) c.close();
    } catch (error) {
      failure ??= { error };
      if (!cancelled) c.error(error);
    }
  }

  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    pull(c) {
      pulling = pullOnce(c);
      return pulling;
    },
    cancel() {
      cancelled = true;
    },
  }, { highWaterMark: 0 });

  const part: MultipartFilePart = { name: meta.name, body: stream };
  if (meta.filename !== undefined) part.filename = meta.filename;
  if (meta.contentType !== undefined) part.contentType = meta.contentType;

  await onFile(part);
  // onFile may settle while a pull is still reading the input. Pulls that
  // start from now on leave the input alone.
  detached = true;
  await pulling;
  if (failure) throw failure.error;
  if (!input.partEnded) {
    // onFile cancelled the stream or left it unread: skip the rest of the part.
    const skipped = await input.skipRest();
    if (!cancelled) {
      try {
        if (skipped > 0) {
          controller.error(
            new MultipartError(`Part "${meta.name}" was not read to its end`),
          );
        } else {
          controller.close();
        }
      } catch { /* the stream is already closed or errored */ }
    }
  }
}

/** Reads one text part as UTF-8, failing once it passes `maxBytes`. */
async function readTextPart(
  input: PartScanner,
  name: string,
  maxBytes: number,
): Promise<string> {
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  let size = 0;
  let text = "";
  while (!input.partEnded) {
    const data = await input.readSegment();
    if (data.length === 0) continue;
    size += data.length;
    if (size > maxBytes) {
      throw new MultipartError(
        `Field "${name}" is larger than ${maxBytes} bytes`,
      );
    }
    text += decoder.decode(data, { stream: true });
  }
  return text + decoder.decode();
}

/** Reads and drops what follows the closing boundary, up to a limit. */
async function dropEpilogue(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  already: number,
): Promise<void> {
  let seen = already;
  while (seen <= MAX_EPILOGUE) {
    const { done, value } = await reader.read();
    if (done) return;
    seen += value.length;
  }
  await reader.cancel().catch(() => {});
}

/**
 * The input side of the parser: pulls chunks from the body reader and splits
 * them at delimiters. Not exported; one instance per parseMultipart call.
 */
class PartScanner {
  /** Current input chunk and the read position in it. */
  #buf: Uint8Array = EMPTY;
  #pos = 0;
  /** How many delimiter bytes were matched at the end of the previous chunk. */
  #partial = 2; // the virtual CRLF before the first boundary
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #delim: Uint8Array;
  /** Horspool shift per byte value. */
  readonly #shift: Uint8Array;
  /** Reused buffer for one part's header block, led by a virtual CRLF. */
  readonly #head = new Uint8Array(MAX_HEADER_BYTES + 2);
  /** True once the current part's closing delimiter has been consumed. */
  partEnded = false;
  /** Message of the MultipartError thrown when the input ends too early. */
  eofMessage = "Multipart body ended before the closing boundary";

  constructor(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    boundary: string,
  ) {
    this.#reader = reader;
    this.#delim = new TextEncoder().encode(`\r\n--${boundary}`);
    const dlen = this.#delim.length; // at most 74, so shifts fit in a byte
    this.#shift = new Uint8Array(256).fill(dlen);
    for (let i = 0; i < dlen - 1; i++) {
      this.#shift[this.#delim[i]] = dlen - 1 - i;
    }
  }

  /** Bytes of the current chunk not yet consumed. */
  buffered(): number {
    return this.#buf.length - this.#pos;
  }

  /** Starts reading a new part body. */
  startPart(eofMessage: string): void {
    this.partEnded = false;
    this.eofMessage = eofMessage;
  }

  /** Makes sure there is an unread byte; false at the end of the input. */
  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#buf.length) {
      const { done, value } = await this.#reader.read();
      if (done) return false;
      this.#buf = value;
      this.#pos = 0;
    }
    return true;
  }

  async #byte(): Promise<number> {
    if (this.#pos >= this.#buf.length && !(await this.#fill())) {
      throw new MultipartError(this.eofMessage);
    }
    return this.#buf[this.#pos++];
  }

  /**
   * Next piece of the current part body: a view into the input chunk (or a
   * short copy of held-back bytes). May be empty. Sets `partEnded` once the
   * delimiter that ends the part has been consumed.
   */
  async readSegment(): Promise<Uint8Array> {
    const delim = this.#delim;
    const dlen = delim.length;
    for (;;) {
      if (this.#pos >= this.#buf.length && !(await this.#fill())) {
        throw new MultipartError(this.eofMessage);
      }
      const buf = this.#buf;
      const pos = this.#pos;
      const end = buf.length;

      const held = this.#partial;
      if (held > 0) {
        // Continue a delimiter that began at the end of an earlier chunk.
        const n = Math.min(dlen - held, end - pos);
        let k = 0;
        while (k < n && buf[pos + k] === delim[held + k]) k++;
        if (k < n) {
          // Not a delimiter: the held-back bytes were data. They are a prefix
          // of the delimiter, whose only CR is its first byte, so no other
          // delimiter can start inside them.
          this.#partial = 0;
          return delim.slice(0, held);
        }
        this.#pos = pos + n;
        if (held + n < dlen) {
          this.#partial = held + n;
          continue;
        }
        this.#partial = 0;
        this.partEnded = true;
        return EMPTY;
      }

      // Whole delimiter inside this chunk (Horspool; compares run from the
      // delimiter's CR forward, so the scan stays linear).
      const last = dlen - 1;
      const lastByte = delim[last];
      const shift = this.#shift;
      const stop = end - dlen;
      let i = pos;
      while (i <= stop) {
        const c = buf[i + last];
        if (c === lastByte) {
          let k = 0;
          while (k < last && buf[i + k] === delim[k]) k++;
          if (k === last) {
            this.#pos = i + dlen;
            this.partEnded = true;
            return buf.subarray(pos, i);
          }
        }
        i += shift[c];
      }

      // A delimiter cut off by the end of the chunk can only start at the last
      // CR among the final dlen-1 bytes.
      let t = end - 1;
      const low = Math.max(pos, end - last);
      while (t >= low && buf[t] !== CR) t--;
      if (t >= low) {
        let k = 1;
        while (t + k < end && buf[t + k] === delim[k]) k++;
        if (t + k === end) {
          this.#pos = end;
          this.#partial = end - t;
          return buf.subarray(pos, t);
        }
      }
      this.#pos = end;
      return buf.subarray(pos);
    }
  }

  /** Reads to the end of the current part, dropping the bytes; returns their count. */
  async skipRest(): Promise<number> {
    let n = 0;
    while (!this.partEnded) n += (await this.readSegment()).length;
    return n;
  }

  /**
   * Reads what follows a delimiter: `--` (the closing boundary; returns true)
   * or optional spaces/tabs then CRLF (another part follows; returns false).
   */
  async readBoundaryLineEnd(): Promise<boolean> {
    this.eofMessage = "Multipart body ended before the closing boundary";
    let c = await this.#byte();
    if (c === DASH) {
      if ((await this.#byte()) === DASH) return true;
      throw new MultipartError("Malformed multipart boundary line");
    }
    for (let pad = 0; c === SP || c === HT; pad++) {
      if (pad >= MAX_PADDING) {
        throw new MultipartError("Malformed multipart boundary line");
      }
      c = await this.#byte();
    }
    if (c === CR && (await this.#byte()) === LF) return false;
    throw new MultipartError("Malformed multipart boundary line");
  }

  /** Reads a part's header block up to and including its blank line; returns the header lines. */
  async readHeaderBlock(): Promise<Uint8Array> {
    const head = this.#head;
    head[0] = CR; // the CRLF that ended the boundary line, so that an
    head[1] = LF; // empty header block is simply CRLF CRLF
    let len = 2;
    for (;;) {
      if (len === head.length) {
        throw new MultipartError(
          `Part header block is larger than ${MAX_HEADER_BYTES} bytes`,
        );
      }
      if (this.#pos >= this.#buf.length && !(await this.#fill())) {
        throw new MultipartError(this.eofMessage);
      }
      const take = Math.min(this.#buf.length - this.#pos, head.length - len);
      head.set(this.#buf.subarray(this.#pos, this.#pos + take), len);
      const before = len;
      len += take;
      const at = findBlankLine(head, Math.max(0, before - 3), len);
      if (at !== -1) {
        this.#pos += at + 4 - before;
        return head.subarray(2, at);
      }
      this.#pos += take;
    }
  }
}

/** Index of the first CRLF CRLF in `buf[from, end)`, or -1. */
function findBlankLine(buf: Uint8Array, from: number, end: number): number {
  for (let i = from; i + 3 < end; i++) {
    if (
      buf[i] === CR && buf[i + 1] === LF && buf[i + 2] === CR &&
      buf[i + 3] === LF
    ) return i;
  }
  return -1;
}

/** Name, filename and Content-Type of one part, from its header block. */
function parsePartHeaders(
  raw: Uint8Array,
): { name?: string; filename?: string; contentType?: string } {
  const lines = new TextDecoder().decode(raw).split("\r\n");
  const headers = new Map<string, string>();
  let prev: string | undefined;
  for (const line of lines) {
    if (line === "") continue;
    if ((line[0] === " " || line[0] === "\t") && prev !== undefined) {
      // Obsolete line folding: continues the previous header.
      headers.set(prev, `${headers.get(prev)} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) {
      throw new MultipartError(
        `Malformed part header line: ${line.slice(0, 100)}`,
      );
    }
    prev = line.slice(0, colon).trim().toLowerCase();
    if (!headers.has(prev)) headers.set(prev, line.slice(colon + 1).trim());
  }

  const result: { name?: string; filename?: string; contentType?: string } = {};
  const disposition = headers.get("content-disposition");
  if (disposition !== undefined) {
    const { params } = parseHeaderValue(disposition);
    const name = params.get("name");
    if (name !== undefined) result.name = decodeFormDataName(name);
    const filename = params.get("filename");
    if (filename !== undefined) result.filename = decodeFormDataName(filename);
  }
  const contentType = headers.get("content-type");
  if (contentType !== undefined) result.contentType = contentType;
  return result;
}

/**
 * Splits a header value like `type; a=1; b="x;y"` into its lowercased first
 * token and its parameters (names lowercased, first occurrence wins). Quoted
 * values end at the next `"`: browsers and Deno escape `"` as `%22` and do not
 * backslash-escape (WHATWG HTML/Fetch), so a `\` is kept as it is.
 */
function parseHeaderValue(
  value: string,
): { type: string; params: Map<string, string> } {
  const params = new Map<string, string>();
  let i = value.indexOf(";");
  const type = (i === -1 ? value : value.slice(0, i)).trim().toLowerCase();
  if (i === -1) return { type, params };
  const len = value.length;
  while (i < len) {
    i++; // past ";"
    const eq = value.indexOf("=", i);
    const semi = value.indexOf(";", i);
    if (eq === -1 || (semi !== -1 && semi < eq)) {
      // A parameter without a value: skip it.
      i = semi === -1 ? len : semi;
      continue;
    }
    const key = value.slice(i, eq).trim().toLowerCase();
    let j = eq + 1;
    while (j < len && (value[j] === " " || value[j] === "\t")) j++;
    let v: string;
    if (value[j] === '"') {
      const close = value.indexOf('"', j + 1);
      v = close === -1 ? value.slice(j + 1) : value.slice(j + 1, close);
      const next = close === -1 ? -1 : value.indexOf(";", close + 1);
      i = next === -1 ? len : next;
    } else {
      const next = value.indexOf(";", j);
      v = value.slice(j, next === -1 ? len : next).trim();
      i = next === -1 ? len : next;
    }
    if (key !== "" && !params.has(key)) params.set(key, v);
  }
  return { type, params };
}

/** Undoes the WHATWG form-data escaping of names and filenames (%0A, %0D, %22). */
function decodeFormDataName(s: string): string {
  if (!s.includes("%")) return s;
  return s.replace(
    /%0A|%0D|%22/g,
    (m) => m === "%0A" ? "\n" : m === "%0D" ? "\r" : '"',
  );
}
