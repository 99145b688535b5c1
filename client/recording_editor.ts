/// <reference lib="dom" />
/**
 * The library buttons of a recording's page: rename (inline), delete (after
 * a confirmation), copy the share link and the embed code. Requests go to
 * `/api/recordings/<id>` from the page's own origin, so the login cookie
 * comes along, with the upload token this browser kept for the recording
 * (or the page's own `?token=`) when there is one.
 */

import { type Signal, signal } from "@preact/signals";
import { keptUploadToken } from "./kept_uploads.ts";

/** What the editor needs from the page (replaced in tests). */
export interface EditorEnvironment {
  fetch: typeof fetch;
  /** The upload token to send, if this browser knows one. */
  token(): Promise<string | undefined>;
  /** Goes to another page (after a delete). */
  navigate(url: string): void;
  /** Puts text on the clipboard; throws when it cannot. */
  copy(text: string): Promise<void>;
}

function browserEnvironment(id: string): EditorEnvironment {
  return {
    fetch: (input, init) => fetch(input, init),
    async token() {
      return new URL(location.href).searchParams.get("token") ??
        await keptUploadToken(id);
    },
    navigate: (url) => location.assign(url),
    copy: (text) => navigator.clipboard.writeText(text),
  };
}

/** The server's sentence from an error reply, or a fallback. */
async function errorOf(res: Response, fallback: string): Promise<string> {
  try {
    const body = await res.json();
    if (typeof body?.error === "string") return body.error;
  } catch {
    // not JSON
  }
  return `${fallback} (HTTP ${res.status}).`;
}

/** A recording's rename, delete and copy buttons (see the module notes). */
export class RecordingEditor {
  /** Set once the page runs in a browser (the buttons work). */
  readonly ready = signal(false);
  readonly editing = signal(false);
  readonly saving = signal(false);
  readonly renameError: Signal<string | null> = signal(null);
  readonly confirmingDelete = signal(false);
  readonly deleting = signal(false);
  readonly deleteError: Signal<string | null> = signal(null);
  /** What was copied last ("link", "embed") or why copying failed. */
  readonly copied: Signal<{ what: string; ok: boolean } | null> = signal(null);
  #id: string;
  #env: EditorEnvironment | undefined;

  constructor(id: string, env?: EditorEnvironment) {
    this.#id = id;
    this.#env = env;
  }

  get #environment(): EditorEnvironment {
    return this.#env ??= browserEnvironment(this.#id);
  }

  /** Marks the buttons usable; returns the function that stops (nothing to stop). */
  open(): () => void {
    this.ready.value = true;
    return () => {};
  }

  async #request(method: string, body?: unknown): Promise<Response> {
    const env = this.#environment;
    const headers: Record<string, string> = {};
    const token = await env.token();
    if (token) headers["X-Upload-Token"] = token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return await env.fetch(`/api/recordings/${this.#id}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  }

  startRename(): void {
    this.renameError.value = null;
    this.editing.value = true;
  }

  cancelRename(): void {
    this.editing.value = false;
    this.renameError.value = null;
  }

  /** Saves a new title ("" for none); true when the server took it. */
  async rename(title: string): Promise<boolean> {
    this.saving.value = true;
    this.renameError.value = null;
    try {
      const res = await this.#request("PATCH", { title });
      if (!res.ok) {
        this.renameError.value = await errorOf(res, "The title was not saved");
        return false;
      }
      await res.body?.cancel();
      this.editing.value = false;
      return true;
    } catch (err) {
      this.renameError.value = `The title was not saved: ${
        (err as Error).message
      }`;
      return false;
    } finally {
      this.saving.value = false;
    }
  }

  askDelete(): void {
    this.deleteError.value = null;
    this.confirmingDelete.value = true;
  }

  cancelDelete(): void {
    this.confirmingDelete.value = false;
    this.deleteError.value = null;
  }

  /** Deletes the recording, then goes to the recordings list. */
  async delete(): Promise<void> {
    this.deleting.value = true;
    this.deleteError.value = null;
    try {
      const res = await this.#request("DELETE");
      if (!res.ok) {
        this.deleteError.value = await errorOf(
          res,
          "The recording was not deleted",
        );
        return;
      }
      await res.body?.cancel();
      this.confirmingDelete.value = false;
      this.#environment.navigate("/");
    } catch (err) {
      this.deleteError.value = `The recording was not deleted: ${
        (err as Error).message
      }`;
    } finally {
      this.deleting.value = false;
    }
  }

  /** Copies `text` to the clipboard; `what` names it in the confirmation. */
  async copy(text: string, what: string): Promise<void> {
    try {
      await this.#environment.copy(text);
      this.copied.value = { what, ok: true };
    } catch {
      this.copied.value = { what, ok: false };
    }
  }
}
