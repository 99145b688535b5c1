import { formatBytes, formatDuration, plural } from "../../common/format.ts";
import type {
  ArrivalEvent,
  UploadPicture,
} from "../../common/upload_picture.ts";

/** The drawing's size in SVG units (it scales to the page's width). */
const WIDTH = 720;
const HEIGHT = 200;
const LEFT = 8;
const RIGHT = WIDTH - 8;
const TOP = 36;
const BOTTOM = 160;

function rate(bytesPerS: number): string {
  return `${formatBytes(bytesPerS)}/s`;
}

function chunkName(e: ArrivalEvent): string {
  return e.index === undefined ? "a chunk" : `chunk ${e.index}`;
}

/** What one marked arrival means, in words (its tooltip and list entry). */
function describe(e: ArrivalEvent, at: (t: number) => string): string {
  switch (e.kind) {
    case "gap":
      return `No chunk for ${
        formatDuration(((e.until ?? e.at) - e.at) / 1000)
      } after ${at(e.at)}; the upload resumed at ${at(e.until ?? e.at)}${
        e.index === undefined ? "" : ` with chunk ${e.index}`
      }`;
    case "duplicate":
      return `${chunkName(e)} arrived again at ${
        at(e.at)
      } (a retry; stored once)`;
    case "late":
      return `${chunkName(e)} arrived late at ${
        at(e.at)
      }, after a later one (resent or out of order)`;
    case "skip":
      return `At ${at(e.at)} ${
        e.count === 1
          ? `chunk ${e.index} was missing`
          : `chunks ${e.index}–${
            (e.index ?? 0) + (e.count ?? 1) - 1
          } were missing`
      }`;
    case "after_stop":
      return `${chunkName(e)} arrived at ${at(e.at)}, after the stop`;
  }
}

/** The one-sentence summary of an upload (the drawing's description). */
export function summarizeUpload(p: UploadPicture): string {
  const seconds = (p.end - p.start) / 1000;
  const parts = [
    `${plural(p.chunks, "chunk")}, ${formatBytes(p.totalBytes)} over ${
      formatDuration(seconds)
    }`,
    `peak ${rate(p.peakBytesPerS)}`,
  ];
  const c = p.counts;
  if (c.gap) parts.push(plural(c.gap, "gap"));
  if (c.duplicate) parts.push(plural(c.duplicate, "duplicate chunk"));
  if (c.late) parts.push(plural(c.late, "late chunk"));
  if (p.missing) parts.push(`${plural(p.missing, "chunk")} missing`);
  if (c.after_stop) {
    parts.push(`${plural(c.after_stop, "chunk")} after the stop`);
  }
  return parts.join("; ") + ".";
}

/**
 * The picture of an upload as an SVG drawn the same on the server and in
 * the browser: bytes per second as bars over the recording's time, gaps
 * as shaded bands with where the upload resumed, duplicate, late and
 * skipped chunks as marks, the stop as a line; then the same facts as a
 * list, for readers who do not see the drawing.
 */
export function UploadTimeline({ picture: p }: { picture: UploadPicture }) {
  const span = Math.max(1, p.end - p.start);
  const x = (t: number) =>
    Math.round((LEFT + (RIGHT - LEFT) * (t - p.start) / span) * 10) / 10;
  const at = (t: number) => formatDuration(Math.max(0, t - p.start) / 1000);
  const peak = Math.max(1, p.peakBytesPerS);
  const plotH = BOTTOM - TOP;
  const summary = summarizeUpload(p);
  const gaps = p.events.filter((e) => e.kind === "gap");
  const marks = p.events.filter((e) => e.kind !== "gap");
  const markY: Record<ArrivalEvent["kind"], number> = {
    duplicate: TOP - 10,
    late: TOP - 10,
    after_stop: TOP - 10,
    skip: BOTTOM + 12,
    gap: TOP,
  };
  return (
    <figure class="upload" id="upload" data-live={String(p.live)}>
      <svg
        class="upload-svg"
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-labelledby="upload-svg-title upload-svg-desc"
        preserveAspectRatio="none"
      >
        <title id="upload-svg-title">Chunk arrivals over time</title>
        <desc id="upload-svg-desc">{summary}</desc>
        <rect
          class="plot"
          x={LEFT}
          y={TOP}
          width={RIGHT - LEFT}
          height={plotH}
        />
        {gaps.map((g, i) => {
          const x0 = x(g.at);
          const x1 = Math.max(x0 + 2, x(g.until ?? g.at));
          return (
            <g key={`gap${i}`} data-kind="gap">
              <rect
                class="gap"
                x={x0}
                y={TOP}
                width={x1 - x0}
                height={plotH}
              >
                <title>{describe(g, at)}</title>
              </rect>
              {x1 - x0 > 60 && (
                <text class="gap-label" x={(x0 + x1) / 2} y={TOP + 14}>
                  {`gap ${formatDuration(((g.until ?? g.at) - g.at) / 1000)}`}
                </text>
              )}
              <line
                class="resume"
                data-kind="resume"
                x1={x1}
                x2={x1}
                y1={TOP}
                y2={BOTTOM}
              />
              <text class="resume-label" x={x1 + 3} y={BOTTOM - 4}>
                resumed
              </text>
            </g>
          );
        })}
        {p.bytes.map((b, i) => {
          if (b <= 0) return null;
          const x0 = x(p.start + i * p.bucketMs);
          const x1 = x(p.start + (i + 1) * p.bucketMs);
          const h = Math.max(1, plotH * (b * 1000 / p.bucketMs) / peak);
          return (
            <rect
              key={`b${i}`}
              class="bar"
              data-kind="bytes"
              x={x0}
              y={Math.round((BOTTOM - h) * 10) / 10}
              width={Math.max(1, x1 - x0 - 0.5)}
              height={Math.round(h * 10) / 10}
            />
          );
        })}
        {p.stoppedAt !== undefined && p.stoppedAt >= p.start && (
          <g data-kind="stop">
            <line
              class="stop"
              x1={x(p.stoppedAt)}
              x2={x(p.stoppedAt)}
              y1={TOP - 6}
              y2={BOTTOM}
            />
            <text class="stop-label" x={x(p.stoppedAt) - 3} y={TOP - 2}>
              stop
            </text>
          </g>
        )}
        {marks.map((m, i) => {
          const cx = x(m.at);
          const cy = markY[m.kind];
          return (
            <g key={`m${i}`} class={`mark mark-${m.kind}`} data-kind={m.kind}>
              <title>{describe(m, at)}</title>
              {m.kind === "duplicate"
                ? <circle cx={cx} cy={cy} r={5} />
                : m.kind === "skip"
                ? (
                  <path
                    d={`M${cx - 5} ${cy - 5}L${cx + 5} ${cy + 5}M${cx + 5} ${
                      cy - 5
                    }L${cx - 5} ${cy + 5}`}
                  />
                )
                : (
                  <path
                    d={`M${cx} ${cy + 6}L${cx - 6} ${cy - 5}L${cx + 6} ${
                      cy - 5
                    }Z`}
                  />
                )}
            </g>
          );
        })}
        <line class="axis" x1={LEFT} x2={RIGHT} y1={BOTTOM} y2={BOTTOM} />
        <text class="axis-label" x={LEFT} y={HEIGHT - 8}>0 s</text>
        <text class="axis-label end" x={RIGHT} y={HEIGHT - 8}>
          {formatDuration(span / 1000)}
          {p.live ? " (recording)" : ""}
        </text>
        <text class="axis-label" x={LEFT} y={12}>
          {`peak ${rate(p.peakBytesPerS)}`}
        </text>
      </svg>
      <figcaption>
        <p class="upload-summary" id="upload-summary">{summary}</p>
        {p.rebuilt && (
          <p class="muted small">
            Drawn from the stored chunks: this upload predates the arrival log,
            so retries were not recorded.
          </p>
        )}
        {p.events.length > 0 && (
          <ul class="upload-events" id="upload-events">
            {p.events.map((e, i) => (
              <li key={i} data-kind={e.kind}>{describe(e, at)}</li>
            ))}
          </ul>
        )}
        <ul class="upload-legend" aria-hidden="true">
          <li class="legend-bar">bytes per second</li>
          <li class="legend-gap">gap, then resumed</li>
          <li class="legend-duplicate">duplicate</li>
          <li class="legend-late">late</li>
          <li class="legend-skip">missing</li>
        </ul>
      </figcaption>
    </figure>
  );
}
