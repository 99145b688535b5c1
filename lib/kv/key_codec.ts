/**
 * Deno KV keys as bytes, in the FoundationDB tuple layout that Deno KV uses
 * (denokv `proto/codec.rs`): comparing the bytes (memcmp, shorter first, as
 * PostgreSQL does for `bytea`) orders keys exactly as Deno KV does.
 *
 * | part       | bytes                                                     |
 * | ---------- | --------------------------------------------------------- |
 * | Uint8Array | 0x01, bytes with 0x00 written 0x00 0xff, 0x00             |
 * | string     | 0x02, UTF-8 escaped the same way, 0x00                    |
 * | bigint     | 0x14 for 0; 0x14±n then n big-endian bytes (n <= 8, ones' complement when negative); 0x1d/0x0b, length, bytes beyond |
 * | number     | 0x21, IEEE 754 big-endian, all bits flipped when the sign bit is set, else the sign bit flipped (NaN canonical) |
 * | false/true | 0x26 / 0x27                                               |
 *
 * So Uint8Array < string < bigint < number < boolean, and -0 < 0 are two keys.
 */

const BYTES = 0x01;
const STRING = 0x02;
const NEG_INT_START = 0x0b;
const INT_ZERO = 0x14;
const POS_INT_END = 0x1d;
const DOUBLE = 0x21;
const FALSE = 0x26;
const TRUE = 0x27;

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

class Writer {
  buf = new Uint8Array(64);
  len = 0;
  reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  push(b: number): void {
    this.reserve(1);
    this.buf[this.len++] = b;
  }
  escaped(bytes: Uint8Array): void {
    this.reserve(bytes.length * 2 + 1);
    for (const b of bytes) {
      this.buf[this.len++] = b;
      if (b === 0) this.buf[this.len++] = 0xff;
    }
    this.buf[this.len++] = 0;
  }
}

function partType(): TypeError {
  return new TypeError(
    "expected string, number, bigint, ArrayBufferView, boolean",
  );
}

function writeBigint(w: Writer, n: bigint): void {
  if (n === 0n) return w.push(INT_ZERO);
  const neg = n < 0n;
  let abs = neg ? -n : n;
  const bytes: number[] = [];
  while (abs > 0n) {
    bytes.unshift(Number(abs & 0xffn));
    abs >>= 8n;
  }
  const len = bytes.length;
  if (len > 255) {
    throw new TypeError("bigint key part too large (more than 255 bytes)");
  }
  if (neg) {
    if (len <= 8) w.push(INT_ZERO - len);
    else w.push(NEG_INT_START), w.push(len ^ 0xff);
    for (const b of bytes) w.push(b ^ 0xff);
  } else {
    if (len <= 8) w.push(INT_ZERO + len);
    else w.push(POS_INT_END), w.push(len);
    for (const b of bytes) w.push(b);
  }
}

function writeNumber(w: Writer, x: number): void {
  f64[0] = x;
  // big-endian bits of the double
  const be = littleEndian ? f64Bytes.slice().reverse() : f64Bytes.slice();
  if (Number.isNaN(x)) {
    const negative = (be[0] & 0x80) !== 0;
    be.set([negative ? 0xff : 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]);
  }
  w.push(DOUBLE);
  w.reserve(8);
  if (be[0] & 0x80) {
    for (const b of be) w.buf[w.len++] = b ^ 0xff;
  } else {
    be[0] ^= 0x80;
    for (const b of be) w.buf[w.len++] = b;
  }
}

/** Encodes a key; throws Deno KV's TypeError for a part of another type. */
export function encodeKey(key: Deno.KvKey): Uint8Array {
  if (!Array.isArray(key)) throw new TypeError("key must be an array");
  const w = new Writer();
  for (const part of key) {
    if (typeof part === "string") {
      w.push(STRING);
      w.escaped(utf8.encode(part));
    } else if (typeof part === "number") {
      writeNumber(w, part);
    } else if (typeof part === "bigint") {
      writeBigint(w, part);
    } else if (typeof part === "boolean") {
      w.push(part ? TRUE : FALSE);
    } else if (ArrayBuffer.isView(part)) {
      w.push(BYTES);
      w.escaped(
        new Uint8Array(part.buffer, part.byteOffset, part.byteLength),
      );
    } else {
      throw partType();
    }
  }
  return w.buf.slice(0, w.len);
}

function readEscaped(bytes: Uint8Array, pos: number): [Uint8Array, number] {
  const out: number[] = [];
  while (pos < bytes.length) {
    const b = bytes[pos++];
    if (b === 0) {
      if (bytes[pos] === 0xff) {
        out.push(0);
        pos++;
        continue;
      }
      return [new Uint8Array(out), pos];
    }
    out.push(b);
  }
  throw new TypeError("invalid key bytes: unterminated string");
}

/** Decodes bytes made by {@link encodeKey} back into a key. */
export function decodeKey(bytes: Uint8Array): Deno.KvKey {
  const key: Deno.KvKeyPart[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const tag = bytes[pos++];
    if (tag === BYTES || tag === STRING) {
      const [raw, next] = readEscaped(bytes, pos);
      pos = next;
      key.push(tag === STRING ? utf8Strict.decode(raw) : raw);
    } else if (tag >= NEG_INT_START && tag <= POS_INT_END) {
      let len: number;
      const neg = tag < INT_ZERO;
      if (tag === POS_INT_END) len = bytes[pos++];
      else if (tag === NEG_INT_START) len = bytes[pos++] ^ 0xff;
      else len = Math.abs(tag - INT_ZERO);
      let n = 0n;
      for (let i = 0; i < len; i++) {
        n = (n << 8n) | BigInt(neg ? bytes[pos++] ^ 0xff : bytes[pos++]);
      }
      key.push(neg ? -n : n);
    } else if (tag === DOUBLE) {
      const be = new Uint8Array(bytes.subarray(pos, pos + 8));
      pos += 8;
      if (be[0] & 0x80) be[0] ^= 0x80;
      else for (let i = 0; i < 8; i++) be[i] ^= 0xff;
      f64Bytes.set(littleEndian ? be.reverse() : be);
      key.push(f64[0]);
    } else if (tag === FALSE) {
      key.push(false);
    } else if (tag === TRUE) {
      key.push(true);
    } else {
      throw new TypeError(`invalid key bytes: tag ${tag}`);
    }
  }
  return key;
}

/** Compares two byte strings as Deno KV and PostgreSQL `bytea` do. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

/** Whether `bytes` starts with `prefix`. */
export function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    if (bytes[i] !== prefix[i]) return false;
  }
  return true;
}
