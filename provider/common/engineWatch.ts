import * as path from "node:path";
import { CofferError } from "./errors";
import { watchParent } from "./parentWatch";

/**
 * The provider process outlives a killed Pulumi engine: nothing else stops it, and a create in
 * flight would go on to finish a set that no state tracks. This watch aborts `engineGone` when
 * the engine exits; work in flight stops on it or finishes, cleans up, and then the process exits.
 */
const gone = new AbortController();
export const engineGone: AbortSignal = gone.signal;

const held = new Set<Promise<unknown>>();

/** Keeps the process, once the engine is gone, until `work` has settled (its clean-up done). */
export function settleBeforeExit<T>(work: Promise<T>): Promise<T> {
  held.add(work);
  const release = () => held.delete(work);
  work.then(release, release);
  return work;
}

/** A provider object whose every method's work is held by `settleBeforeExit`. */
export function settlingBeforeExit<P extends object>(provider: P): P {
  type Method = (...args: unknown[]) => Promise<unknown>;
  const wrap =
    (method: Method) =>
    (...args: unknown[]) =>
      settleBeforeExit(method(...args));
  const wrapped = Object.entries(provider).map(([name, v]) => [name, typeof v === "function" ? wrap(v) : v]);
  return Object.fromEntries(wrapped) as P;
}

/**
 * `pulumi-resource-pulumi-nodejs` is a shell script that runs node without exec, so the engine
 * is that shell's parent (started directly, as the grpc tests do, it is this process's parent).
 */
const pluginScript = (commandLine: string[]) =>
  commandLine.slice(0, 3).some((arg) => path.basename(arg).startsWith("pulumi-resource-"));

let watching = false;

/** Starts the watch once per process; `exitAfterMs` bounds the wait for held work. */
export function watchEngine(exitAfterMs = 120_000): void {
  if (watching) return;
  watching = true;
  watchParent(
    () => {
      gone.abort(new CofferError("ABORTED", "the Pulumi engine exited"));
      const deadline = new Promise((resolve) => setTimeout(resolve, exitAfterMs));
      void Promise.race([Promise.allSettled([...held]), deadline]).then(() => process.exit(1));
    },
    { passThrough: pluginScript },
  );
}
