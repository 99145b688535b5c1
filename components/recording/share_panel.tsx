import type { RecordingView } from "../../common/recording_view.ts";
import { displayTitle } from "../../common/title.ts";

/** Props of {@link SharePanel}. */
export interface SharePanelProps {
  recording: RecordingView;
  /** The service's origin (the page's own once hydrated). */
  origin: string;
  local: boolean;
  ready: boolean;
  /** Whether EMBED_ORIGINS lets other sites frame the player. */
  embeddable: boolean;
  /** Whether recordings are private (links need a key or the token). */
  private: boolean;
  copied: { what: string; ok: boolean } | null;
  onCopy(text: string, what: string): void;
}

/** The `<iframe>` that embeds a recording's player. */
export function embedCode(
  origin: string,
  rec: { id: string; title?: string; createdAt: number },
  local: boolean,
): string {
  const title = displayTitle(rec, local).replace(
    /[&"<>]/g,
    (c) => ({ "&": "&amp;", '"': "&quot;", "<": "&lt;", ">": "&gt;" })[c]!,
  );
  return `<iframe src="${origin}/embed/${rec.id}" title="${title}" width="640" height="360" allow="fullscreen" allowfullscreen></iframe>`;
}

/**
 * The share link with a Copy button, and the embed code with its own
 * (what an embed needs, when EMBED_ORIGINS or privacy stand in the way, is
 * said next to it).
 */
export function SharePanel(props: SharePanelProps) {
  const r = props.recording;
  const link = `${props.origin}/videos/${r.id}`;
  const code = embedCode(props.origin, r, props.local);
  const status = (what: string) =>
    props.copied?.what === what
      ? props.copied.ok
        ? "Copied."
        : "Could not copy: select the text and copy it."
      : "";
  return (
    <section class="share" id="share" aria-labelledby="share-title">
      <h2 id="share-title">Share</h2>
      <div class="copy-row">
        <label for="share-link">Link to this page</label>
        <input id="share-link" readOnly value={link} />
        <button
          type="button"
          id="copy-link"
          disabled={!props.ready}
          onClick={() => props.onCopy(link, "link")}
        >
          Copy link
        </button>
        <span class="copy-status small" role="status" id="copy-link-status">
          {status("link")}
        </span>
      </div>
      <div class="copy-row">
        <label for="embed-code">Embed code</label>
        <textarea id="embed-code" readOnly rows={3} value={code} />
        <button
          type="button"
          id="copy-embed"
          disabled={!props.ready}
          onClick={() => props.onCopy(code, "embed")}
        >
          Copy embed code
        </button>
        <span class="copy-status small" role="status" id="copy-embed-status">
          {status("embed")}
        </span>
      </div>
      {!props.embeddable && (
        <p class="muted small" id="embed-off">
          Other sites cannot show the player yet: list them in EMBED_ORIGINS.
        </p>
      )}
      {props.private && (
        <p class="muted small" id="share-private">
          Recordings are private: the link needs an API key login, and the embed
          needs <code>?token=</code>{" "}
          with the recording's upload token, which also allows changing and
          deleting it.
        </p>
      )}
    </section>
  );
}
