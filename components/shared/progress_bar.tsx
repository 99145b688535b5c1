import { formatPercent } from "../../common/format.ts";

/** A processing progress bar with its percentage (and stage, if known). */
export function ProgressBar(
  { value, stage }: { value: number | undefined; stage?: string },
) {
  const percent = formatPercent(value);
  return (
    <div class="progress">
      <progress max={1} value={value ?? 0} aria-label={`Processing ${percent}`}>
        {percent}
      </progress>
      <span class="progress-text">
        {stage ? `${percent} · ${stage}` : percent}
      </span>
    </div>
  );
}
