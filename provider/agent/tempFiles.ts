/**
 * What Coffer puts in the system's temp folder, made so that a killed process leaves nothing
 * that matters: secrets live in files without a name, and the private folders of servers carry
 * host and pid, so every later start removes those of dead processes (and stops their server).
 */
import { randomBytes } from "node:crypto";
import { constants, promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { commandLineOf } from "../common/parentWatch";
import { pidAlive } from "./tools";

type PrivateDirKind = "nbd" | "key" | "drill" | "qsd";

/** This host in folder names: letters and digits only, short enough for a unix socket path. */
const hostTag = () =>
  os
    .hostname()
    .replace(/[^A-Za-z0-9]/g, "")
    .slice(0, 32);

const PRIVATE_DIR = /^coffer-(nbd|key|drill|qsd)-([A-Za-z0-9]*)-(\d+)-[0-9a-f]{8}$/;
/** A key folder of earlier Coffer versions (`mkdtemp("coffer-key-")`): no host, no pid. */
const UNNAMED_KEY_DIR = /^coffer-key-[A-Za-z0-9]{6}$/;
/**
 * An earlier version kept its key folder for a whole backup-item or verify-set, hours when a
 * bandwidth limit applies, and its name says nothing of its owner. A day covers any such run;
 * one removed in use only fails that run, which then leaves nothing that looks good.
 */
export const UNNAMED_KEY_DIR_MAX_AGE_MS = 24 * 60 * 60 * 1000;

/**
 * Runs `fn` with a fresh 0700 folder `coffer-<kind>-<host>-<pid>-<random>` under `parent` (default
 * tmp, where later starts sweep those of dead processes), removed in `finally`.
 */
export async function withPrivateDir<T>(
  kind: PrivateDirKind,
  fn: (dir: string) => Promise<T>,
  parent = os.tmpdir(),
): Promise<T> {
  const dir = path.join(parent, `coffer-${kind}-${hostTag()}-${process.pid}-${randomBytes(4).toString("hex")}`);
  await fs.mkdir(dir, { mode: 0o700 });
  try {
    return await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** A secret in an open file that has no name: a tool given `fd` as its fd 3 reads `/dev/fd/3`. */
export interface SecretFd {
  fd: number;
  value: string;
  /** A random 256-bit key (a point's own), not a passphrase: a LUKS keyslot for it needs no key stretching. */
  random?: boolean;
}

const O_TMPFILE = 0o20000000 | constants.O_DIRECTORY;

/**
 * Runs `fn` with `secret` in an unnamed 0600 file (O_TMPFILE), closed in `finally`. Whatever
 * kills this process, no copy stays on disk. The file holds the exact bytes (no trailing
 * newline: qemu would take it as part of the secret).
 */
export async function withSecretFd<T>(secret: string, fn: (key: SecretFd) => Promise<T>): Promise<T> {
  const handle = await openUnnamed();
  try {
    await handle.writeFile(secret);
    return await fn({ fd: handle.fd, value: secret });
  } finally {
    await handle.close();
  }
}

async function openUnnamed(): Promise<fs.FileHandle> {
  try {
    return await fs.open(os.tmpdir(), O_TMPFILE | constants.O_RDWR, 0o600);
  } catch (error) {
    if (!["EOPNOTSUPP", "EISDIR", "EINVAL"].includes((error as NodeJS.ErrnoException).code ?? "")) throw error;
  }
  // A file system without O_TMPFILE: name the file only until it is open, before the secret is written.
  return withPrivateDir("key", async (dir) => {
    const file = path.join(dir, "key");
    const handle = await fs.open(file, "wx+", 0o600);
    await fs.unlink(file);
    return handle;
  });
}

/**
 * Removes what killed Coffer processes of this host left under tmp: their private folders, after
 * stopping a qemu-nbd still serving from one (it may serve a decrypted backup), and key folders
 * of earlier versions, which may hold a passphrase. Returns the folders removed.
 */
export async function sweepTempLeftovers(now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  const tmp = os.tmpdir();
  for (const entry of await fs.readdir(tmp).catch(() => [] as string[])) {
    const match = PRIVATE_DIR.exec(entry);
    if (!match && !UNNAMED_KEY_DIR.test(entry)) continue;
    const dir = path.join(tmp, entry);
    const stat = await fs.lstat(dir).catch(() => undefined);
    // Another user's folder is not ours to judge; a link is not a folder Coffer made.
    if (!stat?.isDirectory() || stat.uid !== process.getuid?.()) continue;
    const ownerMayRun = match
      ? match[2] !== hostTag() || pidAlive(Number(match[3]))
      : now - stat.mtimeMs < UNNAMED_KEY_DIR_MAX_AGE_MS;
    if (ownerMayRun) continue;
    if (match?.[1] === "nbd") await stopOrphanedServer(dir);
    // One folder that can't be removed does not stop the command that swept.
    await fs.rm(dir, { recursive: true, force: true }).then(
      () => removed.push(dir),
      () => undefined,
    );
  }
  return removed;
}

/** Kills the qemu-nbd named by the folder's pid file, if that pid still is that server. */
async function stopOrphanedServer(dir: string): Promise<void> {
  const pid = Number((await fs.readFile(path.join(dir, NBD_PID_FILE), "utf8").catch(() => "")).trim());
  if (!Number.isInteger(pid) || pid <= 1) return;
  const commandLine = commandLineOf(pid);
  const socket = path.join(dir, NBD_SOCKET);
  if (!commandLine.some((arg) => path.basename(arg) === "qemu-nbd") || !commandLine.includes(socket)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // it exited meanwhile
  }
}

/** The names of a read-back's socket and pid file in its private folder. */
export const NBD_SOCKET = "nbd.sock";
export const NBD_PID_FILE = "qemu-nbd.pid";
