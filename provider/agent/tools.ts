import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CofferError, CofferErrorCode, redact } from "../common/errors";

/** execa, loaded when first needed: it is ESM-only, and this package is CommonJS. */
export async function loadExeca() {
  return import("execa");
}

/**
 * Runs `fn` with `secret` in a 0600 file inside a fresh 0700 directory, removed in `finally`,
 * so tools read it with `--object secret,file=...` and it never reaches a command line.
 * The file holds the exact bytes (no trailing newline: qemu would take it as part of the secret).
 */
export async function withSecretFile<T>(secret: string, fn: (file: string) => Promise<T>): Promise<T> {
  return withPrivateDir("coffer-key-", async (dir) => {
    const file = path.join(dir, "key");
    await fs.writeFile(file, secret, { mode: 0o600, flag: "wx" });
    return fn(file);
  });
}

/** Runs `fn` with a fresh 0700 directory under the system's temp dir, removed in `finally`. */
export async function withPrivateDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  try {
    return await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export interface RunOptions {
  /** Values to redact from any error: passphrases and the paths of key files. */
  secrets?: readonly string[];
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

/** Starts a tool that runs beside other work (a server), with `run`'s error handling. */
export async function start(command: string, args: readonly string[], options: RunOptions): Promise<RunningTool> {
  const { execa } = await loadExeca();
  const child = execa(command, args, {
    reject: false,
    cancelSignal: options.signal,
    stripFinalNewline: true,
    stdout: options.discardStdout ? "ignore" : "pipe",
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
    if (result.isCanceled) throw new CofferError("ABORTED", `${options.subject}: stopped before it finished`, { secrets });
    throw toolFailure(command, (await stderr) || (result.signal ? `killed by ${result.signal}` : `exit code ${result.exitCode}`), options);
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
  return new CofferError(classify(detail), `${options.subject}: ${path.basename(command)} failed: ${lastLines}`, { secrets: options.secrets ?? [], cause });
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
  return `.${finalName}.partial-${os.hostname()}-${process.pid}-${randomBytes(4).toString("hex")}`;
}

export const PARTIAL_PATTERN = /^\.(.+)\.partial-(.+)-(\d+)-[0-9a-f]{8}$/;

/** Whether a process of this host is still alive (EPERM: alive, but not ours to signal). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
