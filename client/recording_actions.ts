/// <reference lib="dom" />
/**
 * The Finish and Retry processing buttons of the dashboard and of a
 * recording's page: POST /complete_job/<id>/ ("finish") or /retry_job/<id>/
 * ("retry") with the upload token this browser kept, and where each
 * recording's buttons stand. The live feed then shows the new status.
 */

import { type Signal, signal } from "@preact/signals";
import { keptUploadToken } from "./kept_uploads.ts";
import { UploadRejectedError } from "./retry.ts";
import { completeSession, retryProcessing } from "./session_api.ts";

/** A recording with a chunk newer than this asks before being finished. */
const ACTIVE_RECORDING_MS = 20_000;

/** Where a recording's Finish or Retry button stands. */
export interface ActionState {
  pending?: "finish" | "retry";
  /** Waiting for the user to confirm finishing a recording that is still receiving chunks. */
  confirm?: boolean;
  error?: string;
  message?: string;
}

/** What a recording's action buttons can ask for. */
export type RecordingActionName =
  | "finish"
  | "confirm-finish"
  | "cancel"
  | "retry";

/**
 * What the dashboard and a recording's page do for their buttons: POST
 * /complete_job/<id>/ ("finish") or /retry_job/<id>/ ("retry") from the
 * page's origin, with the upload token if this browser kept one. Returns
 * the server's message; throws with a sentence to show.
 */
export async function recordingAction(
  action: "finish" | "retry",
  videoId: string,
): Promise<string> {
  const session = { videoId, uploadToken: await keptUploadToken(videoId) };
  try {
    return action === "finish"
      ? await completeSession(location.origin, session, { maxAttempts: 3 })
      : await retryProcessing(location.origin, session);
  } catch (err) {
    if (err instanceof UploadRejectedError && err.status === 401) {
      throw new Error(
        `${err.message} Only the browser that recorded it knows its upload token.`,
      );
    }
    throw err;
  }
}

/**
 * The buttons' state of every recording on a page: {@link run} does what a
 * button asks ({@link recordingAction} by default).
 */
export class RecordingActionController {
  /** Each recording's button state, by id. */
  readonly states: Signal<Record<string, ActionState>> = signal({});
  #act: typeof recordingAction;

  constructor(act: typeof recordingAction = recordingAction) {
    this.#act = act;
  }

  /**
   * Does what a button asks at `now` (the server's time): finishing a
   * recording whose last chunk is recent asks for confirmation first.
   */
  async run(
    rec: { id: string; lastChunkAt?: number },
    action: RecordingActionName,
    now: number,
  ): Promise<void> {
    if (action === "cancel") return this.#set(rec.id, {});
    if (
      action === "finish" && rec.lastChunkAt !== undefined &&
      now - rec.lastChunkAt < ACTIVE_RECORDING_MS
    ) {
      return this.#set(rec.id, { confirm: true });
    }
    const kind = action === "retry" ? "retry" : "finish";
    this.#set(rec.id, { pending: kind });
    try {
      const message = await this.#act(kind, rec.id);
      this.#set(rec.id, { message });
    } catch (err) {
      this.#set(rec.id, { error: (err as Error).message ?? String(err) });
    }
  }

  #set(id: string, state: ActionState): void {
    this.states.value = { ...this.states.value, [id]: state };
  }
}
