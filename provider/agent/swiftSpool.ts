/**
 * A Swift target at the agent: QEMU and the verifiers need local files, so each command works in the target's
 * spool (`target.path`, laid out as the container is) and moves objects in or out of the container around the
 * existing work. Nothing stays in the spool after a command: every file it wrote or fetched goes in `finally`.
 *   backup-item     the item is written into the spool, put (parallel SLO segments), then removed.
 *   write-manifest  the manifest is put last, after every item: a point without one is never taken for good.
 *   verify-set      the point's objects are fetched into the spool, verified as a directory point is, removed.
 *   delete-*        the point's objects are removed from the container (a large object with its segments).
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { removeEmptyDirs } from "../common/atomicFile";
import { CofferError } from "../common/errors";
import type { TargetRef } from "../common/targetIdentity";
import { directoryStore } from "../targets/directory";
import { MANIFEST_FILE, PARTIAL_PATTERN } from "../targets/layout";
import { TargetStore, listAll } from "../targets/store";
import type { SwiftStore } from "../targets/swift";
import { SwiftTargetAccess, swiftTargetStore } from "../targets/swiftTarget";
import { BACKUP_FILE } from "./image";
import { readManifest } from "./manifest";

const GiB = 1024 ** 3;

/** One store per Swift target in this process: one sign-in (token) serves all of a command's requests. */
const swiftStores = new Map<string, SwiftStore>();
function swiftStoreOf(access: SwiftTargetAccess): SwiftStore {
  const id = JSON.stringify(access);
  let store = swiftStores.get(id);
  if (!store) swiftStores.set(id, (store = swiftTargetStore(access)));
  return store;
}

/** The store a request's target names: its Swift container, or the directory at its path. */
export function targetStoreOf(target: TargetRef): TargetStore {
  return target.swift ? swiftStoreOf(target.swift) : directoryStore(target.path);
}

/** The key of the spool file `file` (under the target's spool `root`). */
export function keyOfSpoolFile(root: string, file: string): string {
  const relative = path.relative(root, file);
  if (relative.startsWith("..") || path.isAbsolute(relative)) {
    throw new CofferError("INVALID_INPUT", `${file} is not inside the backup target's spool ${root}`);
  }
  return relative.split(path.sep).join("/");
}

/** Removes the spool's `file` and the folders it leaves empty (never the spool's root). */
async function removeSpoolFile(root: string, file: string): Promise<void> {
  await fs.rm(file, { force: true });
  await removeEmptyDirs(path.dirname(file), root).catch(() => undefined);
}

/**
 * Runs `backup` (which writes one item file into the spool folder `setDir`) and puts the file into the
 * container; the spool file goes whatever happens. A partial file that grows past `scratch.maxGiB` stops the
 * backup (the spool is bounded). Returns what `backup` returned, once the container holds the same bytes.
 */
export async function backupThroughSpool<T extends { file: string; fileSha256?: string; sizeBytes: number }>(
  target: TargetRef & { swift: SwiftTargetAccess },
  setDir: string,
  signal: AbortSignal | undefined,
  backup: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const store = swiftStoreOf(target.swift);
  const limit = new AbortController();
  const stop = signal ? AbortSignal.any([signal, limit.signal]) : limit.signal;
  const maxBytes = target.swift.scratch.maxGiB * GiB;
  let over: string | undefined;
  const watch = setInterval(() => {
    void spoolBytes(setDir).then((bytes) => {
      if (bytes <= maxBytes || over) return;
      over = `the item's spool file grew past target.scratch.maxGiB (${target.swift.scratch.maxGiB} GiB) in ${setDir}`;
      limit.abort(new CofferError("IO_FAILED", over));
    });
  }, 500);
  let file: string | undefined;
  try {
    const item = await backup(stop).catch((error: unknown) => {
      throw over ? new CofferError("IO_FAILED", `${over}: raise it, or give scratch more room`) : error;
    });
    clearInterval(watch);
    file = path.join(setDir, item.file);
    const stored = await store.put(keyOfSpoolFile(target.path, file), file, { signal });
    if (item.fileSha256 !== undefined && stored.sha256 !== item.fileSha256) {
      throw new CofferError(
        "IO_FAILED",
        `${store.locate(keyOfSpoolFile(target.path, file))}: stored ${stored.sha256}, but the backup's SHA-256 is ` +
          `${item.fileSha256}: the spool file changed while it was uploaded`,
      );
    }
    return item;
  } finally {
    clearInterval(watch);
    if (file) await removeSpoolFile(target.path, file);
  }
}

/** Bytes of the partial backup files in a spool folder (what a running backup has written so far). */
async function spoolBytes(setDir: string): Promise<number> {
  let total = 0;
  for (const entry of await fs.readdir(setDir).catch(() => [] as string[])) {
    if (!PARTIAL_PATTERN.test(entry)) continue;
    total += await fs.stat(path.join(setDir, entry)).then(
      (s) => s.blocks * 512,
      () => 0,
    );
  }
  return total;
}

/** Puts the manifest `write` makes in the spool folder `setDir` into the container, last of a point; its place. */
export async function writeManifestThroughSpool(
  target: TargetRef & { swift: SwiftTargetAccess },
  setDir: string,
  write: () => Promise<string>,
): Promise<string> {
  const store = swiftStoreOf(target.swift);
  let file: string | undefined;
  try {
    file = await write();
    const key = keyOfSpoolFile(target.path, file);
    await store.writeTextAtomic(key, await fs.readFile(file, "utf8"));
    return store.locate(key);
  } finally {
    // The owner markers went with writeManifest; the spool folder goes once empty.
    if (file) await removeSpoolFile(target.path, file);
    else await removeEmptyDirs(setDir, target.path).catch(() => undefined);
  }
}

/** The objects directly in the point folder `setDir` (its manifest and backups; not a nested point's). */
async function pointObjects(store: TargetStore, root: string, setDir: string) {
  const folder = keyOfSpoolFile(root, setDir);
  return (await listAll(store, folder)).filter((o) => !o.key.slice(folder.length + 1).includes("/"));
}

/**
 * Runs `work` on the point folder `setDir` fetched from the container (its manifest and the backups directly
 * in it) into a folder of its own under the spool, laid out as the container is: two commands reading the
 * same point (a refresh and a drill) never share or remove each other's files. It all goes afterwards.
 */
export async function withFetchedPoint<T>(
  target: TargetRef & { swift: SwiftTargetAccess },
  setDir: string,
  work: (fetchedDir: string) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const store = swiftStoreOf(target.swift);
  await fs.mkdir(target.path, { recursive: true, mode: 0o700 });
  const root = await fs.mkdtemp(path.join(target.path, ".fetched-"));
  try {
    const fetchedDir = path.join(root, ...keyOfSpoolFile(target.path, setDir).split("/"));
    await fs.mkdir(fetchedDir, { recursive: true, mode: 0o700 });
    for (const object of await pointObjects(store, target.path, setDir)) {
      signal?.throwIfAborted();
      await store.get(object.key, path.join(root, ...object.key.split("/")));
    }
    return await work(fetchedDir);
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
}

/** The manifest's text of the point folder `setDir`, from the container; undefined when there is none. */
export async function readStoredManifest(
  target: TargetRef & { swift: SwiftTargetAccess },
  setDir: string,
): Promise<string | undefined> {
  const store = swiftStoreOf(target.swift);
  return store.readText(keyOfSpoolFile(target.path, path.join(setDir, MANIFEST_FILE)));
}

/**
 * Deletes a point from the container as deleteSet does from a folder: the backups its manifest names, the
 * objects `knownFiles` names, and, when it has no manifest (a point that was never finished), every backup file
 * in its folder; the manifest last. Nothing else (an object of another kind stays).
 */
export async function deleteStoredPoint(
  target: TargetRef & { swift: SwiftTargetAccess },
  setDir: string,
  knownFiles: readonly string[] = [],
): Promise<void> {
  const store = swiftStoreOf(target.swift);
  const manifestKey = keyOfSpoolFile(target.path, path.join(setDir, MANIFEST_FILE));
  const text = await store.readText(manifestKey);
  const opened = text === undefined ? undefined : readManifest(text);
  const named = new Set([
    ...(opened?.ok ? opened.manifest.items.map((i) => i.file) : []),
    ...knownFiles.map((f) => path.basename(f)),
  ]);
  for (const object of await pointObjects(store, target.path, setDir)) {
    const name = object.key.split("/").at(-1)!;
    if (name === MANIFEST_FILE) continue;
    if (named.has(name) || (text === undefined && BACKUP_FILE.test(name))) await store.remove(object.key);
  }
  await store.remove(manifestKey);
  await removeEmptyDirs(setDir, target.path).catch(() => undefined);
}
