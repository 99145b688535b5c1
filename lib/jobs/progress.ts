/**
 * Progress of a running job, written to the recording without flooding KV:
 * at most one write in flight, the newest value written last, a new value
 * skipped unless 250 ms or 5 points passed or the stage changed, and the
 * fraction never going back within an attempt.
 */

/** One progress value to write. */
export interface ProgressValue {
  fraction: number;
  stage: string;
  /** The start of an attempt: written even if it goes back. */
  restart?: boolean;
}

/** Throttles progress reports into ordered writes. */
export class ProgressReporter {
  #write: (value: ProgressValue) => Promise<void>;
  #writing?: Promise<void>;
  #pending?: ProgressValue;
  #lastAt = 0;
  #lastFraction = -1;
  #lastStage = "";

  /** `write` stores one value; its failures are ignored (the next value follows). */
  constructor(write: (value: ProgressValue) => Promise<void>) {
    this.#write = write;
  }

  /** Starts an attempt at `stage` (progress 0), written at once. */
  start(stage: string): void {
    this.#lastAt = Date.now();
    this.#lastFraction = 0;
    this.#lastStage = stage;
    this.#pending = { fraction: 0, stage, restart: true };
    this.#flush();
  }

  /** Reports progress; written unless it comes too soon after the last one. */
  report(fraction: number, stage: string): void {
    const now = Date.now();
    if (
      now - this.#lastAt < 250 && fraction - this.#lastFraction < 0.05 &&
      stage === this.#lastStage
    ) return;
    this.#lastAt = now;
    this.#lastFraction = fraction;
    this.#lastStage = stage;
    this.#pending = { fraction, stage, restart: this.#pending?.restart };
    this.#flush();
  }

  /** Drops what is not written yet and waits for the write in flight. */
  async settle(): Promise<void> {
    this.#pending = undefined;
    await this.#writing;
  }

  #flush(): void {
    if (this.#writing || !this.#pending) return;
    const value = this.#pending;
    this.#pending = undefined;
    this.#writing = this.#write(value).catch(() => {}).finally(() => {
      this.#writing = undefined;
      this.#flush();
    });
  }
}
