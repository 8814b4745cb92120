import { randomBytes } from "node:crypto";
import * as os from "node:os";
import * as path from "node:path";
import { CofferError, CofferErrorCode, redact } from "../common/errors";
import { partialFileName } from "../targets/layout";
import type { SecretFd } from "./tempFiles";

/** execa, loaded when first needed: it is ESM-only, and this package is CommonJS. */
export async function loadExeca() {
  return import("execa");
}

export interface RunOptions {
  /** Values to redact from any error (a `key`'s value is added). */
  secrets?: readonly string[];
  /** A secret the tool reads as /dev/fd/3 (see KEY_FD_PATH). */
  key?: SecretFd;
  /** What is being worked on, for error messages ("source web-1-root"). */
  subject: string;
  signal?: AbortSignal;
  /** Called with each line the tool writes to stdout (progress). */
  onStdoutLine?: (line: string) => void;
  /** Called with stdout as it streams, which is then not kept (large outputs, e.g. a disk image). */
  onStdoutChunk?: (chunk: Buffer) => void;
  /** For servers: stdout goes to /dev/null, so it can't hold a pipe open after its client ends. */
  discardStdout?: boolean;
}

/** Runs a tool; on failure throws a CofferError whose code says why, with secrets redacted. */
export async function run(command: string, args: readonly string[], options: RunOptions): Promise<string> {
  return (await start(command, args, options)).finished;
}

/** A tool started by `start`: `finished` settles as `run` does; `stop` ends it early. */
export interface RunningTool {
  finished: Promise<string>;
  /** What it wrote to stderr, redacted, once it has exited (a server's only report). */
  stderr: Promise<string>;
  stop(): void;
}

/** Where a tool started with a `key` reads it: the fd is its fd 3. */
export const KEY_FD_PATH = "/dev/fd/3";

/**
 * Starts a tool that runs beside other work (a server), with `run`'s error handling.
 * setpriv's pdeathsig kills the tool when this process dies, even by SIGKILL, so no qemu-img
 * writes on and no qemu-nbd serves for a process that is gone. The signal follows the thread
 * that forked, and Node forks from its main thread, which lives as long as the process.
 */
export async function start(command: string, args: readonly string[], runOptions: RunOptions): Promise<RunningTool> {
  const key = runOptions.key;
  const options = key ? { ...runOptions, secrets: [...(runOptions.secrets ?? []), key.value] } : runOptions;
  const { execa } = await loadExeca();
  const stdout = options.discardStdout ? "ignore" : "pipe";
  const child = execa("setpriv", ["--pdeathsig", "KILL", "--", command, ...args], {
    reject: false,
    cancelSignal: options.signal,
    stripFinalNewline: true,
    // A number shares that open fd (execa's types name only 3-9, but spawn takes any). Not a
    // pipe: a Node pipe is a socketpair, which /dev/fd/3 can't open.
    stdio: ["pipe", stdout, "pipe", ...(key ? [key.fd as 3] : [])],
    buffer: { stdout: !options.onStdoutChunk, stderr: true },
  });
  if (options.onStdoutChunk) child.stdout?.on("data", options.onStdoutChunk);
  if (options.onStdoutLine) {
    let pending = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split(/\r|\n/);
      pending = lines.pop() ?? "";
      for (const line of lines) if (line.trim()) options.onStdoutLine!(line.trim());
    });
  }
  const secrets = options.secrets ?? [];
  const stderr = child.then((result) => redact(String(result.stderr ?? "").trim(), secrets));
  const finished = child.then(async (result) => {
    if (result.exitCode === 0 && !result.failed) return String(result.stdout ?? "");
    if (result.isCanceled)
      throw new CofferError("ABORTED", `${options.subject}: stopped before it finished`, { secrets });
    throw toolFailure(
      command,
      (await stderr) || (result.signal ? `killed by ${result.signal}` : `exit code ${result.exitCode}`),
      options,
    );
  });
  return { finished, stderr, stop: () => child.kill() };
}

/** QEMU's warning for the `backing=` Coffer passes on purpose (see image.ts): noise in an error. */
const EMPTY_BACKING_WARNING = /warning: Use of "backing": "" is deprecated/;

/** The error for a tool that failed, from what it said (already redacted). */
export function toolFailure(command: string, detail: string, options: RunOptions, cause?: unknown): CofferError {
  const lastLines = detail
    .split("\n")
    .filter((line) => !EMPTY_BACKING_WARNING.test(line))
    .slice(-3)
    .join(" / ");
  return new CofferError(classify(detail), `${options.subject}: ${path.basename(command)} failed: ${lastLines}`, {
    secrets: options.secrets ?? [],
    cause,
  });
}

/** Maps a tool's error text to the cause users act on. */
export function classify(stderr: string): CofferErrorCode {
  if (/No space left on device|ENOSPC|Disk quota exceeded/i.test(stderr)) return "DISK_FULL";
  if (/Invalid password|cannot unlock any keyslot/i.test(stderr)) return "WRONG_PASSPHRASE";
  if (/Failed to get .*lock|Is another process using the image/i.test(stderr)) return "SOURCE_LOCKED";
  if (/No such file or directory|Could not open/i.test(stderr)) return "SOURCE_MISSING";
  return "QEMU_FAILED";
}

/**
 * Debian's QEMU 7.2 sometimes fails to create a LUKS header with "Unable to get accurate CPU
 * usage" (its PBKDF benchmark reads getrusage too early). Only that error is retried.
 */
export async function retryLuksCreation<T>(create: () => Promise<T>, attempts = 8): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await create();
    } catch (error) {
      if (attempt >= attempts || !/accurate CPU usage/.test(String((error as Error).message))) throw error;
    }
  }
}

/** A name for a temporary file that no reader takes for a finished backup, and that says who made it. */
export function partialName(finalName: string): string {
  return partialFileName(finalName, os.hostname(), process.pid, randomBytes(4).toString("hex"));
}

/** Whether a process of this host is still alive (EPERM: alive, but not ours to signal). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
