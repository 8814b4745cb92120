import { readFileSync } from "node:fs";

/** The parent pid of `pid` from /proc, or undefined once it has exited. */
export function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ")".
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

/** The command line of `pid`, one string per argument ([] once it has exited). */
export function commandLineOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return [];
  }
}

export interface ParentWatchOptions {
  /**
   * An ancestor that only runs this process for another (a shell script that does not exec):
   * the watch goes on to that ancestor's parent, which is then the one watched.
   */
  passThrough?: (commandLine: string[]) => boolean;
  intervalMs?: number;
}

/**
 * Calls `onGone` once when the process that started this one exits. A process's children are
 * given to init (or a subreaper) when it exits, so a changed parent pid along the chain means
 * it is gone, even while it is an unreaped zombie, and a reused pid can't be mistaken for it.
 * The timer is unref'd: the watch never keeps the process alive. Returns a function that stops it.
 */
export function watchParent(onGone: () => void, options: ParentWatchOptions = {}): () => void {
  const links: { pid: number; parent: number }[] = [{ pid: process.pid, parent: process.ppid }];
  while (options.passThrough) {
    const { parent } = links[links.length - 1];
    const grandparent = parentOf(parent);
    if (parent <= 1 || grandparent === undefined || !options.passThrough(commandLineOf(parent))) break;
    links.push({ pid: parent, parent: grandparent });
  }
  // Started by init: there is no parent whose exit could be seen.
  if (links[links.length - 1].parent <= 1) return () => undefined;
  const timer = setInterval(() => {
    const gone = links.some(({ pid, parent }) => (pid === process.pid ? process.ppid : parentOf(pid)) !== parent);
    if (!gone) return;
    clearInterval(timer);
    onGone();
  }, options.intervalMs ?? 300);
  timer.unref();
  return () => clearInterval(timer);
}
