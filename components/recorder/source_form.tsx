import type { Source } from "../../client/capture.ts";
import type { RecorderSession } from "../../client/recorder_session.ts";

const SOURCES: { value: Source; label: string; hint: string }[] = [
  { value: "camera", label: "Camera", hint: "your webcam" },
  { value: "screen", label: "Screen or window", hint: "pick what to share" },
  { value: "tab", label: "This tab", hint: "records this page" },
];

/** The recorder's choice of source and microphone, with Start and Stop. */
export function SourceForm({ session }: { session: RecorderSession }) {
  const { ready, problem, source, mic, phase } = session;
  const disabled = !ready.value || session.busy || !!problem.value;
  return (
    <form
      class="recorder-form"
      onSubmit={(event) => {
        event.preventDefault();
        session.start();
      }}
    >
      <fieldset disabled={disabled}>
        <legend>Source</legend>
        {SOURCES.map((s) => (
          <label key={s.value} class="choice">
            <input
              type="radio"
              name="source"
              id={`source-${s.value}`}
              value={s.value}
              checked={source.value === s.value}
              onChange={() => {
                source.value = s.value;
              }}
            />
            <span>{s.label}</span>
            <small class="muted">{s.hint}</small>
          </label>
        ))}
        <label class="choice">
          <input
            type="checkbox"
            name="mic"
            id="mic"
            checked={mic.value}
            onChange={(event) => {
              mic.value = event.currentTarget.checked;
            }}
          />
          <span>Microphone</span>
        </label>
      </fieldset>
      <div class="actions">
        <button
          type="submit"
          id="start"
          class="primary"
          disabled={disabled}
        >
          Start recording
        </button>
        <button
          type="button"
          id="stop"
          class="danger"
          disabled={phase.value !== "recording"}
          onClick={() => session.stop()}
        >
          Stop
        </button>
      </div>
    </form>
  );
}
