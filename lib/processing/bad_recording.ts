/**
 * The error of a recording that cannot be turned into video: not media, or
 * over a processing limit. Retrying will not help, so a job that fails with
 * it should fail at once.
 */

/** A recording that cannot be turned into video; retrying will not help. */
export class BadRecordingError extends Error {
  /** Always "bad_recording": what went wrong, for code that must tell errors apart. */
  readonly kind = "bad_recording";
  constructor(message: string) {
    super(message);
    this.name = "BadRecordingError";
  }
}
