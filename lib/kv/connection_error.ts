/**
 * The error a networked KV backend raises when its database cannot be
 * reached; kept apart from the backend so that code handling it does not
 * load the PostgreSQL client.
 */

/**
 * The database could not be reached, the connection was lost during the
 * operation (the server restarted), or no answer came in time. The next
 * operation reconnects. For a commit, whether it was applied is unknown.
 */
export class KvConnectionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "KvConnectionError";
  }
}
