import { useEffect, useRef } from "preact/hooks";
import { formatBytes, plural } from "../../common/format.ts";
import type { RecordingView } from "../../common/recording_view.ts";
import { displayTitle } from "../../common/title.ts";

/** Props of {@link DeleteConfirm}. */
export interface DeleteConfirmProps {
  recording: RecordingView;
  local: boolean;
  deleting: boolean;
  error: string | null;
  onConfirm(): void;
  onCancel(): void;
}

/** What deleting a recording removes, in one sentence. */
export function whatDeleteRemoves(r: RecordingView): string {
  const names = [...r.files, ...(r.poster ? [r.poster] : [])];
  const sizes = r.media?.sizes ?? {};
  const fileBytes = names.reduce((sum, n) => sum + (sizes[n] ?? 0), 0);
  const parts: string[] = [];
  if (names.length > 0) {
    parts.push(
      `its ${plural(names.length, "finished file")} (${names.join(", ")}${
        fileBytes ? `, ${formatBytes(fileBytes)}` : ""
      })`,
    );
  }
  parts.push(
    `the ${plural(r.chunksReceived, "uploaded chunk")} (${
      formatBytes(r.bytesReceived)
    })`,
  );
  if (r.status === "processing") parts.push("its processing job");
  parts.push("its record");
  return `This removes ${
    parts.join(", ")
  }. Its page, share link and embeds stop working. This cannot be undone.`;
}

/**
 * The confirmation before a delete: says what is removed; focus starts on
 * Cancel and Escape cancels.
 */
export function DeleteConfirm(props: DeleteConfirmProps) {
  const cancel = useRef<HTMLButtonElement>(null);
  useEffect(() => cancel.current?.focus(), []);
  return (
    <div
      class="confirm-delete"
      id="confirm-delete"
      role="alertdialog"
      aria-labelledby="confirm-delete-title"
      aria-describedby="confirm-delete-text"
      onKeyDown={(e) => {
        if (e.key === "Escape") props.onCancel();
      }}
    >
      <h2 id="confirm-delete-title">
        Delete “{displayTitle(props.recording, props.local)}”?
      </h2>
      <p id="confirm-delete-text">{whatDeleteRemoves(props.recording)}</p>
      <div class="row-actions">
        <button
          type="button"
          class="danger"
          id="confirm-delete-button"
          disabled={props.deleting}
          onClick={props.onConfirm}
        >
          {props.deleting ? "Deleting…" : "Delete for good"}
        </button>
        <button
          type="button"
          ref={cancel}
          id="cancel-delete"
          onClick={props.onCancel}
        >
          Cancel
        </button>
      </div>
      {props.error && (
        <p class="action-error" role="alert" id="delete-error">
          {props.error}
        </p>
      )}
    </div>
  );
}
