/**
 * How far a long step of the coffer CLI is, for a person watching: on a terminal one bar line
 * that redraws itself, otherwise a plain line every 10% (logs, CI). It goes to stderr only:
 * scripts parse stdout.
 */
import { formatBytes } from "../common/sizes";

export interface Progress {
  /** The step is `percent` (0-100) done. */
  update(percent: number): void;
  /** The step ended, done or not: the bar's line is finished, so what follows starts a new one. */
  end(): void;
}

export interface ProgressOutput {
  write(text: string): unknown;
  /** A terminal: draw a bar; otherwise plain lines. */
  isTTY?: boolean;
}

/** Shows nothing (--quiet). */
export const NO_PROGRESS: Progress = { update: () => undefined, end: () => undefined };

const BAR_WIDTH = 20;
/** Redraws at most this often (ms): a bar that flickers is unreadable and costs the terminal. */
const REDRAW_INTERVAL = 100;
/** A rate from less time than this (ms) is noise. */
const RATE_AFTER = 500;

/**
 * Progress of a step over `totalBytes` named by `label` ("restore vda"): a bar with percent,
 * bytes and rate on a terminal; else "restore vda: 40% (412 MiB of 1.0 GiB)" at each 10%.
 */
export function showProgress(
  output: ProgressOutput,
  label: string,
  totalBytes: number,
  now: () => number = Date.now,
): Progress {
  const startedAt = now();
  const clamp = (percent: number) => Math.min(100, Math.max(0, percent));
  const bytesAt = (percent: number) => (totalBytes * percent) / 100;
  if (!output.isTTY) {
    let shownStep = 0;
    return {
      update(percent) {
        const step = Math.floor(clamp(percent) / 10) * 10;
        if (step <= shownStep) return;
        shownStep = step;
        output.write(`${label}: ${step}% (${formatBytes(bytesAt(step))} of ${formatBytes(totalBytes)})\n`);
      },
      end: () => undefined,
    };
  }
  let drawnAt: number | undefined;
  let drawnPercent = -1;
  return {
    update(percent) {
      const shown = Math.floor(clamp(percent));
      const at = now();
      if (shown === drawnPercent) return;
      if (drawnAt !== undefined && at - drawnAt < REDRAW_INTERVAL && shown < 100) return;
      drawnAt = at;
      drawnPercent = shown;
      const filled = Math.round((BAR_WIDTH * shown) / 100);
      const bar = "#".repeat(filled) + "-".repeat(BAR_WIDTH - filled);
      const elapsed = at - startedAt;
      const rate = elapsed >= RATE_AFTER ? `, ${formatBytes((bytesAt(shown) * 1000) / elapsed)}/s` : "";
      const bytes = `${formatBytes(bytesAt(shown))} of ${formatBytes(totalBytes)}`;
      // \r back to the line's start, \x1b[K clears what a longer previous line left.
      output.write(`\r${label} [${bar}] ${String(shown).padStart(3)}% ${bytes}${rate}\x1b[K`);
    },
    end() {
      if (drawnAt !== undefined) output.write("\n");
      drawnAt = undefined;
    },
  };
}

/** Makes the progress display of one step: on stderr, or none with --quiet. */
export type ProgressOf = (label: string, totalBytes: number) => Progress;

export function progressOn(quiet: boolean | undefined): ProgressOf {
  return quiet ? () => NO_PROGRESS : (label, totalBytes) => showProgress(process.stderr, label, totalBytes);
}

/** Runs one step with its progress shown; the display ends whether the step succeeds or not. */
export async function withProgress<T>(progress: Progress, step: (onProgress: (percent: number) => void) => Promise<T>) {
  try {
    const result = await step((percent) => progress.update(percent));
    progress.update(100);
    return result;
  } finally {
    progress.end();
  }
}
