import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";
import { displayTitle, MAX_TITLE_LENGTH } from "../../common/title.ts";
import type { RecordingView } from "../../common/recording_view.ts";

/** Props of {@link TitleEditor}. */
export interface TitleEditorProps {
  recording: RecordingView;
  /** Whether times are shown in the browser's zone (after hydration). */
  local: boolean;
  /** False until the island is hydrated (the button needs it). */
  ready: boolean;
  editing: boolean;
  saving: boolean;
  error: string | null;
  canEdit: boolean;
  onStart(): void;
  onCancel(): void;
  onSave(title: string): void;
  /** More buttons shown beside Rename. */
  children?: ComponentChildren;
}

/**
 * The recording's title as its heading, with a Rename button that turns
 * it into a text field in place (Enter saves, Escape cancels; focus goes
 * back to the button).
 */
export function TitleEditor(props: TitleEditorProps) {
  const r = props.recording;
  const input = useRef<HTMLInputElement>(null);
  const button = useRef<HTMLButtonElement>(null);
  const wasEditing = useRef(false);
  useEffect(() => {
    if (props.editing) input.current?.focus();
    else if (wasEditing.current) button.current?.focus();
    wasEditing.current = props.editing;
  }, [props.editing]);
  const title = displayTitle(r, props.local);
  if (props.editing) {
    return (
      <form
        class="title-form"
        id="title-form"
        onSubmit={(e) => {
          e.preventDefault();
          props.onSave(input.current?.value ?? "");
        }}
        onKeyDown={(e) => {
          if (e.key === "Escape") props.onCancel();
        }}
      >
        <label for="title-input">Title</label>
        <input
          id="title-input"
          name="title"
          ref={input}
          defaultValue={r.title ?? ""}
          placeholder={displayTitle({ createdAt: r.createdAt }, props.local)}
          maxLength={MAX_TITLE_LENGTH}
          autoComplete="off"
        />
        <button type="submit" class="primary" disabled={props.saving}>
          {props.saving ? "Saving…" : "Save"}
        </button>
        <button type="button" onClick={props.onCancel}>Cancel</button>
        {props.error && (
          <p class="action-error" role="alert" id="title-error">
            {props.error}
          </p>
        )}
      </form>
    );
  }
  return (
    <div class="title-head">
      <h1 id="title" data-untitled={r.title ? undefined : "true"}>{title}</h1>
      <p class="muted small">
        <code class="mono" id="recording-id">{r.id}</code>
      </p>
      {props.canEdit && (
        <button
          type="button"
          class="small-button"
          id="rename"
          ref={button}
          disabled={!props.ready}
          onClick={props.onStart}
        >
          Rename
        </button>
      )}
      {props.children}
    </div>
  );
}
