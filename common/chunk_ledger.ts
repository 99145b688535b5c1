/**
 * The chunk ledger of GET /chunks/<id>/ (docs/api.md): which chunks the
 * server holds, so a client resends only what is lacking. The server
 * builds it (lib/recordings/chunks.ts), the recorder reads it
 * (client/resume_upload.ts).
 */

/** Which chunks the server holds, as sent on the wire. */
export interface ChunkLedger {
  bytes_received: number;
  chunks_received: number;
  /** Index the next chunk without an index would get. */
  next_index: number;
  /** Held indexes as inclusive [first, last] ranges. */
  received: Array<[number, number]>;
  /** Indexes below `next_index` that are not held (at most 10,000 listed). */
  missing: number[];
}

/** Whether the ledger lists `index` as held. */
export function ledgerHolds(ledger: ChunkLedger, index: number): boolean {
  return ledger.received.some(([first, last]) =>
    index >= first && index <= last
  );
}
