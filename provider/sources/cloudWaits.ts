import type { StatusWaitOptions } from "../openstack/poll";
import type { CloudContext } from "./kind";

/** A backup can take long: a status wait gives up after this, naming what to check. */
export const BACKUP_TIMEOUT_MS = 6 * 3_600_000;
export const SNAPSHOT_TIMEOUT_MS = 30 * 60_000;
/** How often a long wait reports that it is still going. */
const PROGRESS_EVERY_MS = 30_000;

/** Status-wait options that report a long wait's progress every half minute. */
export function waitOptions(ctx: CloudContext, what: string, timeoutMs: number): StatusWaitOptions {
  let shownAt = -PROGRESS_EVERY_MS;
  return {
    timeoutMs,
    deps: ctx.waits,
    signal: ctx.signal,
    onProgress: ({ status, elapsedMs }) => {
      if (elapsedMs - shownAt < PROGRESS_EVERY_MS) return;
      shownAt = elapsedMs;
      ctx.progress(`${ctx.subject}: ${what} is ${status} (${Math.round(elapsedMs / 1000)} s)`);
    },
  };
}
