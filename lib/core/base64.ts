/**
 * Base64 through the runtime's own `Uint8Array.toBase64`/`fromBase64`
 * (TC39, in V8), typed here once because TypeScript's lib does not declare
 * them yet.
 */

/** Options of {@link toBase64} and {@link fromBase64}. */
export interface Base64Options {
  alphabet?: "base64" | "base64url";
  omitPadding?: boolean;
  lastChunkHandling?: "loose" | "strict" | "stop-before-partial";
}

/** Base64 text of `bytes`. */
export function toBase64(bytes: Uint8Array, options?: Base64Options): string {
  return (bytes as unknown as { toBase64(o?: Base64Options): string })
    .toBase64(options);
}

/** The bytes of base64 `text`; throws a SyntaxError when it is not base64. */
export function fromBase64(
  text: string,
  options?: Base64Options,
): Uint8Array<ArrayBuffer> {
  return (Uint8Array as unknown as {
    fromBase64(s: string, o?: Base64Options): Uint8Array<ArrayBuffer>;
  }).fromBase64(text, options);
}
