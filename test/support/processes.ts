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

/** The fields of /proc/<pid>/stat after the command name ([state, ppid, ...]), or undefined once it is gone. */
function statOf(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** Live children of `pid`, read from /proc. */
export function childrenOf(pid: number): ProcessInfo[] {
  return processesMentioning("").filter((child) => statOf(child.pid)?.[1] === String(pid));
}

/** Whether `pid` runs (an exited process that no one has reaped yet does not). */
export function isRunning(pid: number): boolean {
  const state = statOf(pid)?.[0];
  return state !== undefined && state !== "Z";
}

/** A process as a pid and its start time: a pid the kernel gives to another process later is not it. */
export interface ProcessIdentity {
  pid: number;
  startedAt: string;
}

/** `pid` with its start time (field 22 of /proc/<pid>/stat), or undefined once it is gone. */
export function identityOf(pid: number): ProcessIdentity | undefined {
  const startedAt = statOf(pid)?.[19];
  return startedAt === undefined ? undefined : { pid, startedAt };
}

/** SIGKILLs the process if it still runs and is still that one (pids are reused: pid_max may be 32768). */
export function killIfStillRunning(process_: ProcessIdentity): void {
  if (!isRunning(process_.pid) || identityOf(process_.pid)?.startedAt !== process_.startedAt) return;
  try {
    process.kill(process_.pid, "SIGKILL");
  } catch {
    // it exited meanwhile
  }
}

/** Polls `check` every 10 ms until it returns a value other than undefined, or `timeoutMs` passes. */
export async function pollFor<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
