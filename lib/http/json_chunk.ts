// Over 400 lines: one streaming JSON + base64 decoder (tokenizer, field state, base64 carry) that must not buffer the body; its parts are not used apart.
/**
 * Streaming decoder for the JSON form of an `add_data` body:
 * `{"blob_data": "<base64>", "order": N, "last_chunk": true}`.
 *
 * Why: reading such a body with `JSON.parse` holds it several times over
 * (the bytes, the text, the parsed string, the decoded bytes, plus any
 * alphabet-fixing copies): one 85 MB body took the process from 68 to
 * 448 MiB (issue 12). This scanner reads the body once, in the pieces it
 * arrives in, and hands out the decoded bytes of `blob_data` as a
 * `ReadableStream` that `Storage.writeChunk(videoId, bytes, maxBytes)` can
 * consume directly. Memory is O(one input piece + one 64 KiB output buffer
 * + 1 KiB per kept field), whatever the body size.
 *
 * Why it is hand-written (npm checked on 2026-12-01, versions below):
 * - `@streamparser/json` 0.0.26: strings are accumulated whole before the
 *   STRING token is emitted; with `emitPartialTokens` it re-emits the
 *   accumulated prefix (the whole value so far), so an 85 MB string is held
 *   whole as a JS string. No fit.
 * - `clarinet` 0.12.6: accumulates `textNode` whole and, past its
 *   `MAX_BUFFER_LENGTH` (64 KiB), fails with "Max buffer length exceeded:
 *   textNode" (tried: a 200 000-char string fails); raising the limit holds
 *   the whole string. No fit.
 * - `stream-json` 3.8.0 (+ `stream-chain` 4.4.1, ~1.5 MB unpacked): does
 *   stream a string in `stringChunk` tokens (packStrings: false), so memory
 *   would be bounded. But it converts every piece to a JS string first and
 *   allocates one token object plus one string per <= 256 characters (about
 *   330 000 objects for an 85 MB value), its errors are plain `Error`s
 *   whose only distinction is the message text (which we must not
 *   classify), without byte offsets, and the base64 stage (4-character
 *   alignment across pieces, both alphabets, padding, `data:` prefix, limit
 *   checks) would still be ours to write. The scanner below is what we
 *   would wrap around it anyway, minus the dependency.
 * - `jsonparse`, `oboe`: buffer each string value whole.
 *
 * What is accepted (and checked by tests/json_chunk_test.ts against
 * `JSON.parse` + `Uint8Array.fromBase64`):
 * - exactly one JSON object, optionally after a UTF-8 BOM, with JSON
 *   whitespace around; anything after it other than whitespace is refused.
 * - `blob_data`: a JSON string, keys and values may use any JSON escape
 *   (`\/`, `\u0041`, ...). Its value, once unescaped, is base64 in the
 *   standard (`+/`) or URL (`-_`) alphabet (they may even be mixed, as the
 *   previous `.replace()` decoding allowed), padded or not, optionally after
 *   a `data:...,` prefix (up to {@link MAX_DATA_PREFIX} characters, up to the
 *   first comma). ASCII whitespace inside it (space, and `\t \n \f \r` as
 *   escapes, e.g. MIME line breaks written `\n` or `\r\n`) is skipped
 *   anywhere, exactly as `Uint8Array.fromBase64` does. A lone `=` where
 *   `==` is needed, `=` before the second character of a quantum, a dangling
 *   single character, or anything after the padding is refused (also as
 *   `fromBase64` does, "loose" last-chunk handling: unused bits of the last
 *   quantum are not checked).
 * - `order`, `last_chunk`: their JSON values are collected (last one wins,
 *   as with `JSON.parse`); strings and numbers over {@link MAX_FIELD_BYTES}
 *   and objects/arrays are reported as {@link OmittedValue}. Every other
 *   key's value is checked for syntax and dropped without being kept.
 *
 * Refused where `JSON.parse` would accept: a second `blob_data` (which copy
 * was meant is ambiguous), nesting deeper than {@link MAX_DEPTH}, a `data:`
 * prefix longer than {@link MAX_DATA_PREFIX}, a body over `maxBodyBytes`.
 *
 * The output stream closes only after the whole body was read and found
 * valid, so a consumer that stores the bytes as they come (writeChunk)
 * sees an error, not an end, whenever the body turns out to be bad, even
 * after the blob: it then keeps nothing.
 */

/** What is wrong with a JSON chunk body. */
export type JsonChunkErrorKind =
  /** Not valid JSON (including a body that ends early or has data after the object). */
  | "syntax"
  /** Valid start of JSON, but the top-level value is not an object. */
  | "not_object"
  /** The object has no `blob_data` key. */
  | "no_blob"
  /** `blob_data` is there but not a string. */
  | "blob_not_string"
  /** `blob_data` appears twice. */
  | "duplicate_blob"
  /** `blob_data` is not valid base64. */
  | "bad_base64"
  /** The decoded chunk is over `maxBytes`, or the body over `maxBodyBytes`. */
  | "too_large"
  /** The body is empty (or whitespace), or `blob_data` decodes to no bytes. */
  | "empty";

/** A JSON chunk body that cannot be used; `message` is meant for the client. */
export class JsonChunkError extends Error {
  readonly kind: JsonChunkErrorKind;
  /** Byte offset in the body where the problem was seen, when there is one. */
  readonly offset?: number;
  constructor(kind: JsonChunkErrorKind, message: string, offset?: number) {
    super(message);
    this.name = "JsonChunkError";
    this.kind = kind;
    this.offset = offset;
  }
  /** The HTTP status this maps to: 413 for `too_large`, else 400. */
  get status(): number {
    return this.kind === "too_large" ? 413 : 400;
  }
}

/**
 * A value of `order` or `last_chunk` that was not kept: an object or array
 * (skipped as it arrived), or a string or number over {@link MAX_FIELD_BYTES}.
 * Its `String()` is `[object]`, `[array]`, `[long string]`, `[long number]`,
 * so index parsing reports it as a bad value rather than ignoring it.
 */
export class OmittedValue {
  readonly type: "object" | "array" | "string" | "number";
  constructor(type: OmittedValue["type"]) {
    this.type = type;
  }
  toString(): string {
    return this.type === "string" || this.type === "number"
      ? `[long ${this.type}]`
      : `[${this.type}]`;
  }
}

/** The scalar fields found next to `blob_data`, once the body was read whole. */
export interface JsonChunkFields {
  /** The `order` value (absent when the key is absent). */
  order?: unknown;
  /** The `last_chunk` value (absent when the key is absent). */
  last_chunk?: unknown;
  /** How many bytes `blob_data` decoded to. */
  size: number;
  /** How many body bytes were read. */
  bodyBytes: number;
}

/** Options of {@link decodeJsonChunk}. */
export interface DecodeJsonChunkOptions {
  /** Most decoded bytes (the chunk limit); one more is a `too_large` error. */
  maxBytes: number;
  /**
   * Most body bytes read; one more is a `too_large` error. Default: the
   * base64 size of `maxBytes` plus 64 KiB (room for the other fields and
   * some whitespace), as the route's Content-Length check allows.
   */
  maxBodyBytes?: number;
}

/** What {@link decodeJsonChunk} returns. */
export interface JsonChunkDecode {
  /**
   * The decoded bytes of `blob_data`, pulled from the body as they are read
   * (a byte stream: a BYOB reader gets them copied into its own buffer).
   * Errors with a {@link JsonChunkError} when the body is bad, closes only
   * once the whole body was read and found valid. Read it to the end (or
   * cancel it): it is what drives the reads of the body.
   */
  bytes: ReadableStream<Uint8Array>;
  /**
   * The other fields; resolves once `bytes` has closed, rejects with the
   * error `bytes` failed with (already marked handled: awaiting it is
   * optional).
   */
  fields: Promise<JsonChunkFields>;
}

/** Most nested objects/arrays (the top-level object counts as 1). */
export const MAX_DEPTH = 256;
/** Most bytes kept of a key or of an `order`/`last_chunk` value. */
export const MAX_FIELD_BYTES = 1024;
/** Most characters of a `data:...,` prefix before the base64. */
export const MAX_DATA_PREFIX = 1024;
/** Decoded bytes handed out per read at most. */
const OUT_BYTES = 64 * 1024;
/** Body bytes read at a time (into one reused buffer). */
const IN_BYTES = 64 * 1024;

// ------------------------------------------------------------ byte classes

/** Base64 sextets of both alphabets; the codes past 63 are special bytes. */
const B64 = new Uint8Array(256).fill(0xff);
const C_SPACE = 64;
const C_PAD = 65;
const C_QUOTE = 66;
const C_BACKSLASH = 67;
const C_CONTROL = 68;
const C_INVALID = 0xff;
{
  const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  for (let i = 0; i < abc.length; i++) B64[abc.charCodeAt(i)] = i;
  B64[0x2b] = 62; // +
  B64[0x2d] = 62; // -
  B64[0x2f] = 63; // /
  B64[0x5f] = 63; // _
  for (let i = 0; i < 0x20; i++) B64[i] = C_CONTROL;
  B64[0x20] = C_SPACE;
  B64[0x3d] = C_PAD;
  B64[0x22] = C_QUOTE;
  B64[0x5c] = C_BACKSLASH;
}

/** The plain bytes of a JSON string (not `"`, `\`, nor a control). */
const PLAIN = new Uint8Array(256).fill(1);
for (let i = 0; i < 0x20; i++) PLAIN[i] = 0;
PLAIN[0x22] = 0;
PLAIN[0x5c] = 0;

function isJsonSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

/** ASCII whitespace as `Uint8Array.fromBase64` skips it. */
function isB64Space(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0x0c;
}

function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x41 && b <= 0x46) return b - 0x41 + 10;
  if (b >= 0x61 && b <= 0x66) return b - 0x61 + 10;
  return -1;
}

function describe(c: number): string {
  if (c >= 0x21 && c <= 0x7e) return JSON.stringify(String.fromCharCode(c));
  if (c === 0x20) return "a space";
  return `character 0x${c.toString(16).padStart(2, "0")}`;
}

// ------------------------------------------------------------ states

// Where the scanner is in the JSON grammar.
const ST_START = 0; // before the top-level value
const ST_BOM = 1; // inside a leading UTF-8 BOM
const ST_KEY_OR_END = 2; // after `{`
const ST_KEY = 3; // after `,` in an object
const ST_COLON = 4; // after a key
const ST_VALUE = 5; // after `:` or `,` in an array
const ST_VALUE_OR_END = 6; // after `[`
const ST_AFTER = 7; // after a value inside a container
const ST_DONE = 8; // after the top-level object
const ST_STRING = 9;
const ST_NUMBER = 10;
const ST_LITERAL = 11;

// Inside a string.
const S_PLAIN = 0;
const S_ESCAPE = 1; // after `\`
const S_HEX = 2; // inside `\uXXXX`

// What a string is.
const R_SKIP = 0; // dropped (other keys' values, nested keys)
const R_KEY = 1; // a top-level key: kept to compare
const R_FIELD = 2; // the value of order / last_chunk: kept
const R_BLOB = 3; // the value of blob_data: decoded

// Which top-level key the current value belongs to.
const K_OTHER = 0;
const K_BLOB = 1;
const K_ORDER = 2;
const K_LAST = 3;

// Inside blob_data.
const BM_PREFIX = 0; // first characters: maybe `data:`
const BM_SKIP_PREFIX = 1; // inside `data:...` up to the comma
const BM_DATA = 2; // base64 characters
const BM_PAD = 3; // after a first `=` that needs a second
const BM_END = 4; // after the padding: only whitespace may follow

// Inside a number (JSON grammar).
const N_MINUS = 0;
const N_ZERO = 1;
const N_INT = 2;
const N_DOT = 3;
const N_FRAC = 4;
const N_EXP = 5;
const N_EXP_SIGN = 6;
const N_EXP_DIGITS = 7;

const OBJ = 1;
const ARR = 2;

const DATA_PREFIX = "data:";
const utf8 = new TextDecoder();
const SEND_JSON = 'send {"blob_data": "<base64>"}';

/**
 * The incremental scanner behind {@link decodeJsonChunk}: give it the body
 * piece by piece ({@link setInput}), call {@link write} until it has
 * consumed the piece ({@link needsInput}), then {@link finish}. Each call
 * decodes into the caller's `out` buffer and returns how many bytes it put
 * there. Throws {@link JsonChunkError}.
 */
export class JsonChunkScanner {
  readonly maxBytes: number;
  readonly maxBodyBytes: number;

  #input: Uint8Array = new Uint8Array(0);
  #i = 0;
  /** Body offset of `#input[0]`. */
  #base = 0;
  #out: Uint8Array = new Uint8Array(0);
  #o = 0;

  #st = ST_START;
  #seenAnything = false;
  #bomAt = 0;
  #stack = new Uint8Array(MAX_DEPTH + 1);
  #depth = 0;

  // strings
  #strSt = S_PLAIN;
  #role = R_SKIP;
  #isKey = false;
  #hexCount = 0;
  #hexValue = 0;
  #keep = new Uint8Array(MAX_FIELD_BYTES);
  #keepLen = 0;
  #keepOver = false;

  // numbers and literals
  #numSt = N_INT;
  #literal = "";
  #literalAt = 0;

  // top-level object
  #key = K_OTHER;
  #blobSeen = false;
  #fields: Record<string, unknown> = {};

  // base64
  #bm = BM_PREFIX;
  #prefix = "";
  #prefixLen = 0;
  #acc = 0;
  #k = 0;
  #size = 0;

  constructor(options: DecodeJsonChunkOptions) {
    this.maxBytes = options.maxBytes;
    this.maxBodyBytes = options.maxBodyBytes ??
      Math.ceil(options.maxBytes / 3) * 4 + 64 * 1024;
  }

  /** Whether the current piece is used up. */
  get needsInput(): boolean {
    return this.#i >= this.#input.length;
  }

  /** Body bytes given so far. */
  get bodyBytes(): number {
    return this.#base + this.#input.length;
  }

  /** Gives the next piece of the body (call once the previous one is used up). */
  setInput(piece: Uint8Array): void {
    this.#base += this.#input.length;
    this.#input = piece;
    this.#i = 0;
    if (this.#base + piece.length > this.maxBodyBytes) {
      throw new JsonChunkError(
        "too_large",
        `The JSON body is over the limit of ${this.maxBodyBytes} bytes for a chunk of at most ${this.maxBytes} bytes (MAX_CHUNK_BYTES); send smaller chunks.`,
        this.maxBodyBytes,
      );
    }
  }

  /**
   * Scans the current piece until it is used up or `out` has fewer than 3
   * bytes of room; returns how many decoded bytes were put in `out`.
   */
  write(out: Uint8Array): number {
    if (out.length < 3) throw new RangeError("out must hold at least 3 bytes");
    this.#out = out;
    this.#o = 0;
    const input = this.#input;
    const n = input.length;
    const limit = out.length - 3;
    let i = this.#i;
    while (i < n && this.#o <= limit) {
      if (this.#st === ST_STRING && this.#strSt === S_PLAIN) {
        if (this.#role === R_BLOB && this.#bm === BM_DATA) {
          i = this.#decodeRun(input, i, n, out, limit);
        } else if (this.#role === R_SKIP) {
          while (i < n && PLAIN[input[i]]) i++;
        }
        if (i >= n || this.#o > limit) break;
      }
      this.#i = i;
      if (this.#step(input[i])) i++;
    }
    this.#i = i;
    if (this.#size > this.maxBytes) {
      throw new JsonChunkError(
        "too_large",
        `The chunk is larger than the limit of ${this.maxBytes} bytes (MAX_CHUNK_BYTES); send smaller chunks.`,
      );
    }
    return this.#o;
  }

  /**
   * Ends the body (after the last piece was used up): checks it was one
   * complete object with a `blob_data` that decoded to at least one byte,
   * and returns the other fields. Every decoded byte was already written:
   * the last group of 4 is decoded when the string closes.
   */
  finish(): JsonChunkFields {
    this.#i = this.#input.length;
    const at = this.bodyBytes;
    if (this.#st !== ST_DONE) {
      if (!this.#seenAnything) {
        throw new JsonChunkError(
          "empty",
          "The chunk is empty; send the recording's bytes in the request body.",
          at,
        );
      }
      throw new JsonChunkError(
        "syntax",
        `The body is not valid JSON: it ends early at byte ${at} (${this.#where()}); ${SEND_JSON} in full.`,
        at,
      );
    }
    if (!this.#blobSeen) {
      throw new JsonChunkError(
        "no_blob",
        'The JSON body has no "blob_data" string; put the base64 of the chunk there.',
      );
    }
    if (this.#size === 0) {
      throw new JsonChunkError(
        "empty",
        'The chunk is empty: "blob_data" decodes to no bytes; put the base64 of the chunk there.',
      );
    }
    return { ...this.#fields, size: this.#size, bodyBytes: at };
  }

  #where(): string {
    if (this.#st === ST_STRING) {
      return this.#role === R_BLOB
        ? 'inside the "blob_data" string'
        : this.#isKey
        ? "inside a key"
        : "inside a string";
    }
    return this.#depth > 0
      ? "before the closing }"
      : "before the object started";
  }

  #syntax(detail: string, at = this.#base + this.#i): JsonChunkError {
    return new JsonChunkError(
      "syntax",
      `The body is not valid JSON at byte ${at}: ${detail}; ${SEND_JSON}.`,
      at,
    );
  }

  #badBase64(detail: string): JsonChunkError {
    const at = this.#base + this.#i;
    return new JsonChunkError(
      "bad_base64",
      `"blob_data" is not valid base64 at byte ${at}: ${detail}; send the chunk's bytes base64-encoded.`,
      at,
    );
  }

  /**
   * The hot loop: decodes plain base64 bytes of `blob_data` from `i` on,
   * four at a time while they come as whole quanta, and stops before the
   * first byte that is not a base64 character (or when `out` is full).
   */
  #decodeRun(
    input: Uint8Array,
    i: number,
    n: number,
    out: Uint8Array,
    limit: number,
  ): number {
    let o = this.#o;
    let acc = this.#acc;
    let k = this.#k;
    const start = o;
    for (;;) {
      if (k === 0) {
        while (i + 4 <= n && o <= limit) {
          const a = B64[input[i]];
          const b = B64[input[i + 1]];
          const c = B64[input[i + 2]];
          const d = B64[input[i + 3]];
          if ((a | b | c | d) > 63) break;
          out[o] = (a << 2) | (b >> 4);
          out[o + 1] = ((b & 15) << 4) | (c >> 2);
          out[o + 2] = ((c & 3) << 6) | d;
          o += 3;
          i += 4;
        }
      }
      if (i >= n || o > limit) break;
      const c = B64[input[i]];
      if (c > 63) break;
      acc = (acc << 6) | c;
      i++;
      if (++k === 4) {
        out[o] = acc >> 16;
        out[o + 1] = (acc >> 8) & 255;
        out[o + 2] = acc & 255;
        o += 3;
        acc = 0;
        k = 0;
      }
    }
    this.#size += o - start;
    this.#o = o;
    this.#acc = acc;
    this.#k = k;
    return i;
  }

  /** One byte in the generic state machine; false: look at it again. */
  #step(b: number): boolean {
    switch (this.#st) {
      case ST_STRING:
        this.#stringByte(b);
        return true;
      case ST_NUMBER:
        return this.#numberByte(b);
      case ST_LITERAL:
        if (b !== this.#literal.charCodeAt(this.#literalAt)) {
          throw this.#syntax(
            `expected ${JSON.stringify(this.#literal)}, found ${describe(b)}`,
          );
        }
        if (++this.#literalAt === this.#literal.length) {
          const value = this.#literal === "true"
            ? true
            : this.#literal === "false"
            ? false
            : null;
          this.#valueDone(value, true);
        }
        return true;
    }
    if (isJsonSpace(b)) return true;
    this.#seenAnything = true;
    switch (this.#st) {
      case ST_START:
        if (b === 0xef && this.#base + this.#i === 0) {
          this.#st = ST_BOM;
          this.#bomAt = 1;
          this.#seenAnything = false;
          return true;
        }
        if (b === 0x7b) {
          this.#push(OBJ);
          this.#st = ST_KEY_OR_END;
          return true;
        }
        if (
          b === 0x5b || b === 0x22 || b === 0x2d || (b >= 0x30 && b <= 0x39) ||
          b === 0x74 || b === 0x66 || b === 0x6e
        ) {
          throw new JsonChunkError(
            "not_object",
            `The JSON body must be an object like {"blob_data": "<base64>"}; it starts with ${
              describe(b)
            }.`,
            this.#base + this.#i,
          );
        }
        throw this.#syntax(`expected "{", found ${describe(b)}`);
      case ST_BOM: {
        const want = this.#bomAt === 1 ? 0xbb : 0xbf;
        if (b !== want) {
          throw this.#syntax(`expected "{", found ${describe(b)}`);
        }
        if (++this.#bomAt === 3) this.#st = ST_START;
        this.#seenAnything = false;
        return true;
      }
      case ST_KEY_OR_END:
        if (b === 0x7d) {
          this.#close(OBJ);
          return true;
        }
      // falls through
      case ST_KEY:
        if (b !== 0x22) {
          throw this.#syntax(
            `expected a key in double quotes${
              this.#st === ST_KEY_OR_END ? ' or "}"' : ""
            }, found ${describe(b)}`,
          );
        }
        this.#beginString(this.#depth === 1 ? R_KEY : R_SKIP, true);
        return true;
      case ST_COLON:
        if (b !== 0x3a) {
          throw this.#syntax(`expected ":" after a key, found ${describe(b)}`);
        }
        this.#st = ST_VALUE;
        return true;
      case ST_VALUE_OR_END:
        if (b === 0x5d) {
          this.#close(ARR);
          return true;
        }
      // falls through
      case ST_VALUE:
        this.#beginValue(b);
        return true;
      case ST_AFTER:
        if (b === 0x2c) {
          this.#st = this.#stack[this.#depth] === OBJ ? ST_KEY : ST_VALUE;
          return true;
        }
        if (b === 0x7d) {
          this.#close(OBJ);
          return true;
        }
        if (b === 0x5d) {
          this.#close(ARR);
          return true;
        }
        throw this.#syntax(
          `expected "," or "${
            this.#stack[this.#depth] === OBJ ? "}" : "]"
          }" after a value, found ${describe(b)}`,
        );
      case ST_DONE:
        throw this.#syntax(
          `unexpected ${describe(b)} after the end of the JSON object`,
        );
    }
    throw new Error(`json_chunk: unknown state ${this.#st}`);
  }

  #push(type: number): void {
    if (this.#depth >= MAX_DEPTH) {
      throw this.#syntax(`objects and arrays nest deeper than ${MAX_DEPTH}`);
    }
    this.#stack[++this.#depth] = type;
  }

  #close(type: number): void {
    if (this.#stack[this.#depth] !== type) {
      throw this.#syntax(
        `found "${type === OBJ ? "}" : "]"}" where "${
          this.#stack[this.#depth] === OBJ ? "}" : "]"
        }" should close`,
      );
    }
    this.#depth--;
    this.#st = this.#depth === 0 ? ST_DONE : ST_AFTER;
  }

  /** The top-level field the value about to start belongs to. */
  #field(): number {
    return this.#depth === 1 ? this.#key : K_OTHER;
  }

  #setField(key: number, value: unknown): void {
    this.#fields[key === K_ORDER ? "order" : "last_chunk"] = value;
  }

  #beginValue(b: number): void {
    const field = this.#field();
    if (field === K_BLOB) {
      if (b !== 0x22) {
        const what = b === 0x7b
          ? "an object"
          : b === 0x5b
          ? "an array"
          : b === 0x2d || (b >= 0x30 && b <= 0x39)
          ? "a number"
          : b === 0x74 || b === 0x66
          ? "a boolean"
          : b === 0x6e
          ? "null"
          : describe(b);
        throw new JsonChunkError(
          "blob_not_string",
          `"blob_data" must be a string holding the chunk's bytes in base64, found ${what} at byte ${
            this.#base + this.#i
          }.`,
          this.#base + this.#i,
        );
      }
      this.#beginString(R_BLOB, false);
      return;
    }
    const kept = field === K_ORDER || field === K_LAST;
    if (b === 0x22) {
      this.#beginString(kept ? R_FIELD : R_SKIP, false);
    } else if (b === 0x7b || b === 0x5b) {
      if (kept) {
        this.#setField(
          field,
          new OmittedValue(b === 0x7b ? "object" : "array"),
        );
      }
      this.#push(b === 0x7b ? OBJ : ARR);
      this.#st = b === 0x7b ? ST_KEY_OR_END : ST_VALUE_OR_END;
    } else if (b === 0x2d || (b >= 0x30 && b <= 0x39)) {
      this.#st = ST_NUMBER;
      this.#numSt = b === 0x2d ? N_MINUS : b === 0x30 ? N_ZERO : N_INT;
      this.#keepLen = 0;
      this.#keepOver = false;
      if (kept) this.#keepByte(b);
    } else if (b === 0x74 || b === 0x66 || b === 0x6e) {
      this.#st = ST_LITERAL;
      this.#literal = b === 0x74 ? "true" : b === 0x66 ? "false" : "null";
      this.#literalAt = 1;
    } else {
      throw this.#syntax(`expected a value, found ${describe(b)}`);
    }
  }

  /** A scalar value is complete: keep it if it is a field, move on. */
  #valueDone(value: unknown, isValue: boolean): void {
    if (isValue) {
      const field = this.#field();
      if (field === K_ORDER || field === K_LAST) this.#setField(field, value);
    }
    this.#st = ST_AFTER;
  }

  #keepByte(b: number): void {
    if (this.#keepLen < MAX_FIELD_BYTES) this.#keep[this.#keepLen++] = b;
    else this.#keepOver = true;
  }

  // ---------------------------------------------------------- strings

  #beginString(role: number, isKey: boolean): void {
    this.#st = ST_STRING;
    this.#strSt = S_PLAIN;
    this.#role = role;
    this.#isKey = isKey;
    this.#keepLen = 0;
    this.#keepOver = false;
    if (role === R_BLOB) {
      this.#blobSeen = true;
      this.#bm = BM_PREFIX;
      this.#prefix = "";
      this.#prefixLen = 0;
      this.#acc = 0;
      this.#k = 0;
    }
  }

  #stringByte(b: number): void {
    const role = this.#role;
    if (role === R_KEY || role === R_FIELD) {
      if (this.#strSt !== S_PLAIN || b !== 0x22) this.#keepByte(b);
    }
    switch (this.#strSt) {
      case S_PLAIN:
        if (b === 0x22) {
          this.#endString();
          return;
        }
        if (b === 0x5c) {
          this.#strSt = S_ESCAPE;
          return;
        }
        if (b < 0x20) {
          throw this.#syntax(
            `${
              describe(b)
            } inside a string must be written as an escape (e.g. "\\n")`,
          );
        }
        if (role === R_BLOB) this.#blobUnit(b, false);
        return;
      case S_ESCAPE: {
        let unit = -1;
        switch (b) {
          case 0x22: // "
          case 0x5c: // \
          case 0x2f: // /
            unit = b;
            break;
          case 0x62: // b
            unit = 0x08;
            break;
          case 0x66: // f
            unit = 0x0c;
            break;
          case 0x6e: // n
            unit = 0x0a;
            break;
          case 0x72: // r
            unit = 0x0d;
            break;
          case 0x74: // t
            unit = 0x09;
            break;
          case 0x75: // u
            this.#strSt = S_HEX;
            this.#hexCount = 0;
            this.#hexValue = 0;
            return;
          default:
            throw this.#syntax(
              `"\\" followed by ${describe(b)} is not a JSON escape`,
            );
        }
        this.#strSt = S_PLAIN;
        if (role === R_BLOB) this.#blobUnit(unit, true);
        return;
      }
      case S_HEX: {
        const h = hexValue(b);
        if (h < 0) {
          throw this.#syntax(
            `"\\u" must be followed by 4 hex digits, found ${describe(b)}`,
          );
        }
        this.#hexValue = this.#hexValue * 16 + h;
        if (++this.#hexCount === 4) {
          this.#strSt = S_PLAIN;
          if (role === R_BLOB) this.#blobUnit(this.#hexValue, true);
        }
        return;
      }
    }
  }

  #kept(): string {
    // Checked above: valid escapes, no raw controls; JSON.parse does the
    // unescaping exactly as it would for the whole body.
    return JSON.parse(
      `"${utf8.decode(this.#keep.subarray(0, this.#keepLen))}"`,
    );
  }

  #endString(): void {
    switch (this.#role) {
      case R_KEY: {
        let key = K_OTHER;
        if (!this.#keepOver) {
          const name = this.#kept();
          key = name === "blob_data"
            ? K_BLOB
            : name === "order"
            ? K_ORDER
            : name === "last_chunk"
            ? K_LAST
            : K_OTHER;
        }
        if (key === K_BLOB && this.#blobSeen) {
          throw new JsonChunkError(
            "duplicate_blob",
            `The JSON body has "blob_data" twice (again at byte ${
              this.#base + this.#i
            }); send the chunk once.`,
            this.#base + this.#i,
          );
        }
        this.#key = key;
        this.#st = ST_COLON;
        return;
      }
      case R_FIELD:
        this.#valueDone(
          this.#keepOver ? new OmittedValue("string") : this.#kept(),
          true,
        );
        return;
      case R_BLOB:
        this.#endBlob();
        this.#valueDone(undefined, false);
        return;
      default:
        if (this.#isKey) this.#st = ST_COLON;
        else this.#valueDone(undefined, false);
    }
  }

  // ---------------------------------------------------------- numbers

  #numberByte(b: number): boolean {
    const digit = b >= 0x30 && b <= 0x39;
    let next = -1;
    switch (this.#numSt) {
      case N_MINUS:
        if (digit) next = b === 0x30 ? N_ZERO : N_INT;
        else {throw this.#syntax(
            `expected a digit after "-", found ${describe(b)}`,
          );}
        break;
      case N_ZERO:
      case N_INT:
        if (digit && this.#numSt === N_INT) next = N_INT;
        else if (b === 0x2e) next = N_DOT;
        else if (b === 0x65 || b === 0x45) next = N_EXP;
        break;
      case N_DOT:
        if (digit) next = N_FRAC;
        else {throw this.#syntax(
            `expected a digit after ".", found ${describe(b)}`,
          );}
        break;
      case N_FRAC:
        if (digit) next = N_FRAC;
        else if (b === 0x65 || b === 0x45) next = N_EXP;
        break;
      case N_EXP:
        if (digit) next = N_EXP_DIGITS;
        else if (b === 0x2b || b === 0x2d) next = N_EXP_SIGN;
        else {throw this.#syntax(
            `expected a digit in the exponent, found ${describe(b)}`,
          );}
        break;
      case N_EXP_SIGN:
        if (digit) next = N_EXP_DIGITS;
        else {throw this.#syntax(
            `expected a digit in the exponent, found ${describe(b)}`,
          );}
        break;
      case N_EXP_DIGITS:
        if (digit) next = N_EXP_DIGITS;
        break;
    }
    if (next >= 0) {
      this.#numSt = next;
      const field = this.#field();
      if (field === K_ORDER || field === K_LAST) this.#keepByte(b);
      return true;
    }
    // The number ended before this byte (a terminal state: the others threw).
    const field = this.#field();
    const kept = field === K_ORDER || field === K_LAST;
    this.#valueDone(
      !kept
        ? undefined
        : this.#keepOver
        ? new OmittedValue("number")
        : Number(utf8.decode(this.#keep.subarray(0, this.#keepLen))),
      kept,
    );
    return false;
  }

  // ---------------------------------------------------------- base64

  /** Emits the bytes of a partial quantum (2 or 3 characters). */
  #flushPartial(): void {
    const out = this.#out;
    if (this.#k === 2) {
      out[this.#o++] = this.#acc >> 4;
      this.#size += 1;
    } else if (this.#k === 3) {
      out[this.#o++] = this.#acc >> 10;
      out[this.#o++] = (this.#acc >> 2) & 255;
      this.#size += 2;
    }
    this.#acc = 0;
    this.#k = 0;
  }

  /**
   * One character (UTF-16 code unit; for raw bytes of a multi-byte UTF-8
   * character each byte, all >= 0x80) of the blob string, unescaped.
   */
  #blobUnit(c: number, escaped: boolean): void {
    switch (this.#bm) {
      case BM_PREFIX: {
        this.#prefix += String.fromCharCode(c);
        if (this.#prefix === DATA_PREFIX) {
          this.#bm = BM_SKIP_PREFIX;
          return;
        }
        if (!DATA_PREFIX.startsWith(this.#prefix)) {
          const replay = this.#prefix;
          this.#bm = BM_DATA;
          this.#prefix = "";
          for (let j = 0; j < replay.length; j++) {
            this.#blobUnit(replay.charCodeAt(j), escaped);
          }
        }
        return;
      }
      case BM_SKIP_PREFIX:
        if (c === 0x2c) this.#bm = BM_DATA;
        else if (++this.#prefixLen > MAX_DATA_PREFIX) {
          throw this.#badBase64(
            `a "data:" prefix must end with "," within ${MAX_DATA_PREFIX} characters (e.g. "data:video/webm;base64,")`,
          );
        }
        return;
      case BM_DATA: {
        const t = c < 0x80 ? B64[c] : C_INVALID;
        if (t < 64) {
          this.#acc = (this.#acc << 6) | t;
          if (++this.#k === 4) {
            const out = this.#out;
            const acc = this.#acc;
            out[this.#o] = acc >> 16;
            out[this.#o + 1] = (acc >> 8) & 255;
            out[this.#o + 2] = acc & 255;
            this.#o += 3;
            this.#size += 3;
            this.#acc = 0;
            this.#k = 0;
          }
          return;
        }
        if (isB64Space(c)) return;
        if (c === 0x3d) {
          if (this.#k < 2) {
            throw this.#badBase64(
              `"=" can only pad the 3rd or 4th character of a group of 4`,
            );
          }
          this.#bm = this.#k === 2 ? BM_PAD : BM_END;
          this.#flushPartial();
          return;
        }
        throw this.#badBase64(
          `${describe(c)}${
            escaped ? " (escaped)" : ""
          } is not a base64 character`,
        );
      }
      case BM_PAD:
        if (isB64Space(c)) return;
        if (c === 0x3d) {
          this.#bm = BM_END;
          return;
        }
        throw this.#badBase64(`expected a second "=", found ${describe(c)}`);
      case BM_END:
        if (isB64Space(c)) return;
        throw this.#badBase64(
          `${describe(c)} after the "=" padding, which must end the data`,
        );
    }
  }

  #endBlob(): void {
    if (this.#bm === BM_PREFIX) {
      const replay = this.#prefix;
      this.#bm = BM_DATA;
      for (let j = 0; j < replay.length; j++) {
        this.#blobUnit(replay.charCodeAt(j), false);
      }
    }
    switch (this.#bm) {
      case BM_SKIP_PREFIX:
        throw this.#badBase64(
          'a "data:" prefix must end with "," before the base64',
        );
      case BM_PAD:
        throw this.#badBase64(
          'the data ends after one "=" where "==" is needed',
        );
      case BM_DATA:
        if (this.#k === 1) {
          throw this.#badBase64(
            "the data ends with a single character of a group of 4 (a character is missing or extra)",
          );
        }
        this.#flushPartial();
    }
  }
}

/**
 * Decodes a JSON chunk body as it is read: see the module header. The body
 * is read only as `bytes` is read, one piece at a time.
 */
export function decodeJsonChunk(
  body: ReadableStream<Uint8Array>,
  options: DecodeJsonChunkOptions,
): JsonChunkDecode {
  const scanner = new JsonChunkScanner(options);
  const out = new Uint8Array(OUT_BYTES);
  let outStart = 0;
  let outEnd = 0;
  let reader:
    | ReadableStreamDefaultReader<Uint8Array>
    | ReadableStreamBYOBReader
    | undefined;
  // A request body is a byte stream: it is read into one buffer reused
  // from piece to piece (the scanner is done with a piece before the next
  // read), so reading the body allocates nothing per piece.
  let inBuffer: ArrayBuffer | undefined;
  const read = async (): Promise<ReadableStreamReadResult<Uint8Array>> => {
    if (!inBuffer) return await (reader as ReadableStreamDefaultReader).read();
    const result = await (reader as ReadableStreamBYOBReader).read(
      new Uint8Array(inBuffer, 0, IN_BYTES),
    );
    if (result.value) inBuffer = result.value.buffer as ArrayBuffer;
    if (!result.done && result.value) {
      return { done: false, value: result.value };
    }
    return { done: true, value: undefined };
  };
  let ended = false;
  let settled = false;
  let resolveFields!: (f: JsonChunkFields) => void;
  let rejectFields!: (err: unknown) => void;
  const fields = new Promise<JsonChunkFields>((resolve, reject) => {
    resolveFields = resolve;
    rejectFields = reject;
  });
  // Marked handled: a caller that fails on `bytes` need not await it.
  fields.catch(() => {});
  const fail = (err: unknown) => {
    if (settled) return;
    settled = true;
    rejectFields(err);
    reader?.cancel(err).catch(() => {});
  };

  const bytes: ReadableStream<Uint8Array> = new ReadableStream({
    type: "bytes",
    start() {
      try {
        reader = body.getReader({ mode: "byob" });
        inBuffer = new ArrayBuffer(IN_BYTES);
      } catch {
        reader = body.getReader();
      }
    },
    async pull(controller: ReadableByteStreamController) {
      try {
        for (;;) {
          if (outStart < outEnd) {
            const request = controller.byobRequest;
            const view = request?.view;
            if (request && view) {
              const target = new Uint8Array(
                view.buffer,
                view.byteOffset,
                view.byteLength,
              );
              const n = Math.min(target.length, outEnd - outStart);
              target.set(out.subarray(outStart, outStart + n));
              outStart += n;
              request.respond(n);
            } else {
              controller.enqueue(out.slice(outStart, outEnd));
              outStart = outEnd;
            }
            return;
          }
          if (!scanner.needsInput) {
            outStart = 0;
            outEnd = scanner.write(out);
            continue;
          }
          if (ended) {
            const result = scanner.finish();
            settled = true;
            resolveFields(result);
            controller.close();
            controller.byobRequest?.respond(0);
            return;
          }
          const { done, value } = await read();
          if (done) ended = true;
          else scanner.setInput(value);
        }
      } catch (err) {
        fail(err);
        controller.error(err);
      }
    },
    cancel(reason) {
      fail(
        reason ?? new Error("The JSON chunk stream was cancelled."),
      );
    },
  });
  return { bytes, fields };
}
