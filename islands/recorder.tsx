/// <reference lib="dom" />
import { useRef } from "preact/hooks";
import { RecorderSession } from "../client/recorder_session.ts";
import { useOpened } from "../client/use_opened.ts";
import { PendingUploadList } from "../components/recorder/pending_upload_list.tsx";
import { RecorderStatus } from "../components/recorder/recorder_status.tsx";
import { SourceForm } from "../components/recorder/source_form.tsx";

/** Props of the recorder. */
export interface RecorderProps {
  /** MediaRecorder timeslice: one chunk per this many ms. */
  timesliceMs: number;
}

/**
 * Records the camera, a screen or this tab and uploads it while recording,
 * keeping every chunk in the browser until the server has it, and resumes
 * what a closed page left unfinished (client/recorder_session.ts).
 */
export default function Recorder({ timesliceMs }: RecorderProps) {
  const preview = useRef<HTMLVideoElement>(null);
  const session = useOpened(() =>
    new RecorderSession({ timesliceMs, preview: () => preview.current })
  );
  return (
    <section
      class="recorder"
      data-phase={session.phase.value}
      data-ready={String(session.ready.value)}
    >
      <h1>Record</h1>
      {session.problem.value && (
        <p class="error" role="alert">{session.problem.value}</p>
      )}
      <PendingUploadList
        items={session.pending.value}
        online={session.online.value}
        onAction={(id, action) => session.pendingAction(id, action)}
      />
      <SourceForm session={session} />
      <RecorderStatus session={session} />
      <video class="preview" ref={preview} muted autoplay playsInline />
    </section>
  );
}
