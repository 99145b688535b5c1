/**
 * Deno KV values as bytes, split the way Deno KV splits them: a top-level
 * Uint8Array is kept as raw bytes, a Deno.KvU64 as 8 bytes (big-endian here,
 * so PostgreSQL can do `sum`/`min`/`max` on it), anything else as V8
 * serialization. `node:v8`'s plain `Serializer` (not `v8.serialize`, whose
 * typed arrays are host objects) writes the same bytes as Deno's own
 * `core.serialize` but for the format version byte, so the 65,536-byte value
 * limit falls on exactly the same values as in Deno KV.
 */

import v8 from "node:v8";

/** How a value's bytes are to be read. */
export const ValueEncoding = { V8: 1, Bytes: 2, U64: 3 } as const;

/** A value as stored. */
export interface EncodedValue {
  encoding: number;
  bytes: Uint8Array;
}

function isU64(value: unknown): value is Deno.KvU64 {
  return typeof Deno.KvU64 === "function" && value instanceof Deno.KvU64;
}

/** Encodes a value; throws a TypeError for what cannot be cloned. */
export function encodeValue(value: unknown): EncodedValue {
  if (
    value instanceof Uint8Array &&
    Object.prototype.toString.call(value) === "[object Uint8Array]"
  ) {
    return { encoding: ValueEncoding.Bytes, bytes: value.slice() };
  }
  if (isU64(value)) {
    return { encoding: ValueEncoding.U64, bytes: u64Bytes(value.value) };
  }
  try {
    const s = new v8.Serializer();
    s.writeHeader();
    s.writeValue(value);
    const out = s.releaseBuffer();
    return {
      encoding: ValueEncoding.V8,
      bytes: new Uint8Array(out.buffer, out.byteOffset, out.byteLength),
    };
  } catch (e) {
    throw new TypeError((e as Error).message ?? String(e));
  }
}

/** Decodes what {@link encodeValue} made. */
export function decodeValue(encoding: number, bytes: Uint8Array): unknown {
  switch (encoding) {
    case ValueEncoding.V8: {
      const d = new v8.Deserializer(bytes);
      d.readHeader();
      return d.readValue();
    }
    case ValueEncoding.Bytes:
      return new Uint8Array(bytes);
    case ValueEncoding.U64:
      return new Deno.KvU64(
        new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0),
      );
    default:
      throw new TypeError(`Invalid value type ${encoding}`);
  }
}

function u64Bytes(n: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n);
  return out;
}
