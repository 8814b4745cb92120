import { readdirSync, readFileSync } from "node:fs";

export interface ProcessInfo {
  pid: number;
  command: string;
}

/** Live processes (other than this one) whose command line contains `text`, read from /proc. */
export function processesMentioning(text: string): ProcessInfo[] {
  const found: ProcessInfo[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let command: string;
    try {
      command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
    } catch {
      continue; // it exited while we looked
    }
    if (command.includes(text)) found.push({ pid, command });
  }
  return found;
}

/**
 * Kills what a test left running under `text` and returns what it found, so the test fails
 * on a leaked tool instead of hanging the run on the pipe that tool still holds.
 */
export function killLeftovers(text: string): ProcessInfo[] {
  const left = processesMentioning(text);
  for (const { pid } of left) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  return left;
}
