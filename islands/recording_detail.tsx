import { useMemo } from "preact/hooks";
import { LiveRecording } from "../client/live_recording.ts";
import {
  hasFinishedVideo,
  LivePlayback,
  wantsLive,
} from "../client/live_playback.ts";
import { RecordingActionController } from "../client/recording_actions.ts";
import { RecordingEditor } from "../client/recording_editor.ts";
import { UploadPictureFeed } from "../client/upload_picture_feed.ts";
import { useOpened } from "../client/use_opened.ts";
import { WebhookDeliveries } from "../client/webhook_deliveries.ts";
import type { RecordingView } from "../common/recording_view.ts";
import type { UploadPicture } from "../common/upload_picture.ts";
import { Counters } from "../components/recording/counters.tsx";
import { DeleteConfirm } from "../components/recording/delete_confirm.tsx";
import { FileList } from "../components/recording/file_list.tsx";
import { LivePlayer } from "../components/recording/live_player.tsx";
import { MediaFactsTable } from "../components/recording/media_facts_table.tsx";
import { Player } from "../components/recording/player.tsx";
import { SharePanel } from "../components/recording/share_panel.tsx";
import { TitleEditor } from "../components/recording/title_editor.tsx";
import { UploadTimeline } from "../components/recording/upload_timeline.tsx";
import { WebhookList } from "../components/recording/webhook_list.tsx";
import { LiveIndicator } from "../components/shared/live_indicator.tsx";
import { ProgressBar } from "../components/shared/progress_bar.tsx";
import { RecordingActions } from "../components/shared/recording_actions.tsx";

/** Props of a recording's page: the recording as the server read it. */
export interface RecordingDetailProps {
  recording: RecordingView;
  /** Server time (ms) of the read. */
  now: number;
  /** The picture of the upload as the server drew it. */
  upload: UploadPicture;
  /** The service's origin as the request named it (the page's own once hydrated). */
  origin: string;
  /** Whether EMBED_ORIGINS lets other sites frame the player. */
  embeddable: boolean;
  /** Whether PRIVATE_RECORDINGS is on. */
  private: boolean;
}

/**
 * One recording: its title (renamed in place), live counters
 * (client/live_recording.ts), progress, the player and its files, the
 * picture of its upload (kept current while recording,
 * client/upload_picture_feed.ts), the recording played live while it is
 * recorded (client/live_playback.ts) turning into the finished player
 * without a reload, share and embed, and delete after a
 * confirmation (client/recording_editor.ts). A recording still `recording`
 * can be finished with what was received, a failed one queued again.
 */
export default function RecordingDetail(props: RecordingDetailProps) {
  const live = useOpened(() => new LiveRecording(props.recording, props.now));
  const editor = useOpened(() => new RecordingEditor(props.recording.id));
  const feed = useOpened(() =>
    new UploadPictureFeed(props.upload, live.recording)
  );
  const playback = useOpened(() =>
    new LivePlayback(
      live.recording,
      typeof location === "undefined"
        ? null
        : new URL(location.href).searchParams.get("token"),
    )
  );
  const actions = useMemo(() => new RecordingActionController(), []);
  const webhooks = useOpened(() =>
    new WebhookDeliveries(props.recording.id, { recording: live.recording })
  );
  const r = live.recording.value;
  const now = live.clock.now.value;
  const ready = editor.ready.value;
  const origin = ready ? location.origin : props.origin;
  return (
    <article class="detail" data-id={r.id} data-status={r.status}>
      <div class="section-head">
        <TitleEditor
          recording={r}
          local={ready}
          ready={ready}
          editing={editor.editing.value}
          saving={editor.saving.value}
          error={editor.renameError.value}
          canEdit={!r.deleted}
          onStart={() => editor.startRename()}
          onCancel={() => editor.cancelRename()}
          onSave={(title) => editor.rename(title)}
        >
          {!r.deleted && (
            <button
              type="button"
              class="small-button"
              id="delete"
              disabled={!ready || editor.confirmingDelete.value}
              onClick={() => editor.askDelete()}
            >
              Delete…
            </button>
          )}
        </TitleEditor>
        <LiveIndicator state={live.live.value} />
      </div>
      {editor.confirmingDelete.value && !r.deleted && (
        <DeleteConfirm
          recording={r}
          local={ready}
          deleting={editor.deleting.value}
          error={editor.deleteError.value}
          onConfirm={() => editor.delete()}
          onCancel={() => editor.cancelDelete()}
        />
      )}
      <Counters recording={r} now={now} local={ready} />

      {r.deleted && (
        <p class="notice" id="deleted">
          This recording was deleted; its files are gone.
        </p>
      )}
      {r.expired && !r.deleted && (
        <p class="notice" id="expired">
          No chunk arrived for a long time, so the recording was finished
          automatically.
        </p>
      )}
      {r.status === "recording" && !r.deleted && (
        <p class="notice" id="recording-notice">
          Recording in progress: the counters above change as chunks arrive. If
          the page recording it was closed before it stopped, finish it to make
          a video of what was received.
        </p>
      )}
      {(r.status === "recording" || r.status === "failed") && !r.deleted && (
        <div class="detail-actions" id="actions">
          <RecordingActions
            rec={r}
            now={now}
            ready={live.ready.value}
            state={actions.states.value[r.id]}
            onAction={(a) =>
              actions.run(r, a, live.clock.now.value)}
          />
        </div>
      )}
      {wantsLive(r) && (
        <LivePlayer
          mode={playback.mode.value}
          behindS={playback.behindS.value}
          note={playback.note.value}
          videoRef={playback.attachLive}
          onGoLive={() => playback.goLive()}
        />
      )}
      {hasFinishedVideo(r) && !r.deleted && (
        <Player recording={r} videoRef={playback.attachFinished} />
      )}
      {r.status === "processing" && (
        <section class="processing" id="processing">
          <h2>Processing</h2>
          <ProgressBar value={r.progress} stage={r.stage} />
        </section>
      )}
      {r.status === "failed" && (
        <p class="error" role="alert" id="error">
          {r.error ?? "Processing failed."}
        </p>
      )}
      {r.status === "complete" && !r.deleted && (
        <div class="columns">
          <section>
            <h2>Files</h2>
            <FileList recording={r} />
          </section>
          <section>
            <h2>Media</h2>
            <MediaFactsTable recording={r} />
          </section>
        </div>
      )}
      {!r.deleted && (
        <section class="upload-section" aria-labelledby="upload-title">
          <h2 id="upload-title">The upload</h2>
          <UploadTimeline picture={feed.picture.value} />
        </section>
      )}
      {!r.deleted && (
        <SharePanel
          recording={r}
          origin={origin}
          local={ready}
          ready={ready}
          embeddable={props.embeddable}
          private={props.private}
          copied={editor.copied.value}
          onCopy={(text, what) => editor.copy(text, what)}
        />
      )}
      <WebhookList
        list={webhooks.list.value}
        error={webhooks.error.value}
        replays={webhooks.replays.value}
        now={now}
        ready={live.ready.value}
        onReplay={(delivery) => webhooks.replay(delivery)}
      />
    </article>
  );
}
