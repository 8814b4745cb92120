import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";

/** The names temporary files get: `.<name>.<12 hex>.tmp`, beside the file they become. */
const TEMPORARY_NAME = /^\..+\.[0-9a-f]{12}\.tmp$/;

/** Whether a file name is one of this module's temporary files (a write under way, or one a crash left). */
export function isTemporaryName(name: string): boolean {
  return TEMPORARY_NAME.test(name);
}

/**
 * A new, empty 0600 temporary file next to `file`, open for writing; missing parents are made 0700.
 * A parent removed meanwhile as empty (another writer's clean-up) is made again.
 */
async function openTemporary(file: string): Promise<{ temp: string; handle: fs.FileHandle }> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  for (let attempt = 1; ; attempt++) {
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    try {
      return { temp, handle: await fs.open(temp, "wx", 0o600) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 3) throw error;
    }
  }
}

/** A 0600 temporary file next to `file`, holding `content` on disk (fsync); missing parents are made 0700. */
async function writeTemporary(file: string, content: string): Promise<string> {
  const { temp, handle } = await openTemporary(file);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  } finally {
    await handle.close();
  }
  return temp;
}

async function syncDirectory(dir: string): Promise<void> {
  const dirHandle = await fs.open(dir, "r");
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

/** Puts a finished download in place: its bytes on disk (fsync), then renamed over `file`. */
export async function syncAndRename(temp: string, file: string): Promise<void> {
  const handle = await fs.open(temp, "r+");
  await handle.sync().finally(() => handle.close());
  await fs.rename(temp, file);
}

/**
 * Writes `content` to `file` so that readers see either the old file or the whole new one:
 * a 0600 temporary file in the same directory, fsync, rename, fsync of the directory.
 * The temporary file is removed if anything fails. Missing parent directories are made 0700.
 */
export async function writeFileAtomic(file: string, content: string): Promise<void> {
  const temp = await writeTemporary(file, content);
  let renamed = false;
  try {
    await fs.rename(temp, file);
    renamed = true;
    await syncDirectory(path.dirname(file));
  } finally {
    if (!renamed) await fs.rm(temp, { force: true });
  }
}

/**
 * Writes `file` whole, only if it does not exist yet: as writeFileAtomic, but with link instead of
 * rename, since link fails when the name exists (two writers at once: exactly one wins).
 * Returns false, having written nothing, when `file` already exists.
 */
export async function writeFileExclusive(file: string, content: string): Promise<boolean> {
  const temp = await writeTemporary(file, content);
  let outcome: "linked" | "exists" | "no-links";
  try {
    outcome = await fs.link(temp, file).then(
      () => "linked" as const,
      (error: NodeJS.ErrnoException) => {
        if (error.code === "EEXIST") return "exists" as const;
        // A share without hard links (CIFS without unix extensions): an exclusive create instead.
        if (["EPERM", "ENOTSUP", "EOPNOTSUPP"].includes(error.code ?? "")) return "no-links" as const;
        throw error;
      },
    );
  } finally {
    await fs.rm(temp, { force: true });
  }
  if (outcome === "exists") return false;
  if (outcome === "no-links" && !(await createExclusive(file, content))) return false;
  await syncDirectory(path.dirname(file));
  return true;
}

/** Creates `file` with `content` unless it exists (O_EXCL); a reader may see it before it is whole. */
async function createExclusive(file: string, content: string): Promise<boolean> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, "wx", 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return true;
}

/**
 * Copies `from` to `to` as writeFileAtomic writes: a reader of `to` sees the old file or the whole
 * copy. Returns the size and hex SHA-256 of what was copied. `signal` stops it, leaving `to` as it was.
 */
export async function copyFileAtomic(
  from: string,
  to: string,
  signal?: AbortSignal,
): Promise<{ sizeBytes: number; sha256: string }> {
  const source = await fs.open(from, "r");
  let temp: string | undefined;
  try {
    const opened = await openTemporary(to);
    temp = opened.temp;
    const hash = createHash("sha256");
    let sizeBytes = 0;
    try {
      const buffer = Buffer.alloc(1024 * 1024);
      for (;;) {
        signal?.throwIfAborted();
        const { bytesRead } = await source.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
        await opened.handle.write(buffer, 0, bytesRead);
        sizeBytes += bytesRead;
      }
      await opened.handle.sync();
    } finally {
      await opened.handle.close();
    }
    await fs.rename(temp, to);
    temp = undefined;
    await syncDirectory(path.dirname(to));
    return { sizeBytes, sha256: hash.digest("hex") };
  } finally {
    await source.close();
    if (temp !== undefined) await fs.rm(temp, { force: true });
  }
}

/** The file's text, or undefined when it does not exist. */
export async function readFileIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** Removes `dir` and then its parents up to (not including) `stopAt`, each only while empty. */
export async function removeEmptyDirs(dir: string, stopAt: string): Promise<void> {
  let current = path.resolve(dir);
  const stop = path.resolve(stopAt);
  while (current !== stop && current.startsWith(stop + path.sep)) {
    try {
      await fs.rmdir(current);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOTEMPTY" || code === "EEXIST") return;
      if (code !== "ENOENT") throw error;
    }
    current = path.dirname(current);
  }
}
