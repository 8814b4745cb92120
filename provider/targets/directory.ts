import { Dirent, promises as fs } from "node:fs";
import * as path from "node:path";
import {
  copyFileAtomic,
  isTemporaryName,
  readFileIfExists,
  removeEmptyDirs,
  writeFileAtomic,
  writeFileExclusive,
} from "../common/atomicFile";
import { DirectoryStore, StoredObject, TargetStore, folderPrefix, keyNames } from "./store";

/** Whether an error says that the path, or a folder on the way to it, is not there. */
const notThere = (error: unknown) => ["ENOENT", "ENOTDIR"].includes((error as NodeJS.ErrnoException).code ?? "");

/**
 * The store on the folder `root` (a NAS mount, a local folder). A key is a file under it: written
 * atomically (temporary file, fsync, rename), 0600 in folders made 0700. Removing an object removes
 * the folders it leaves empty, up to (never including) `root`: a folder holds objects, as a key
 * prefix does in an object store. Methods are own properties, so tests can spread and override them.
 */
export function directoryStore(root: string): DirectoryStore {
  const localPath = (key: string) => path.join(root, ...keyNames(key));

  async function* walk(dir: string, prefix: string): AsyncGenerator<StoredObject> {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (error) {
      if (notThere(error)) return;
      throw error;
    }
    for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        yield* walk(file, `${prefix}${entry.name}/`);
        continue;
      }
      if (isTemporaryName(entry.name)) continue;
      // A symlink counts as what it points to, if that is a file (folders are not followed: no loops).
      const stat = await fs.stat(file).catch((error) => {
        if (notThere(error)) return undefined;
        throw error;
      });
      if (stat?.isFile()) yield { key: `${prefix}${entry.name}`, sizeBytes: stat.size };
    }
  }

  return {
    kind: "directory",
    location: root,
    localDir: root,
    localPath,
    locate: localPath,
    async assertReachable() {
      const stat = await fs.stat(root);
      if (!stat.isDirectory()) throw new Error(`${root} is not a directory`);
    },
    readText: (key) => readFileIfExists(localPath(key)),
    writeTextAtomic: (key, text) => writeFileAtomic(localPath(key), text),
    writeTextExclusive: (key, text) => writeFileExclusive(localPath(key), text),
    put: (key, file, opts) => copyFileAtomic(file, localPath(key), opts?.signal),
    async get(key, file) {
      await copyFileAtomic(localPath(key), file);
    },
    async stat(key) {
      const stat = await fs.stat(localPath(key)).catch((error) => {
        if (notThere(error)) return undefined;
        throw error;
      });
      return stat?.isFile() ? { sizeBytes: stat.size } : undefined;
    },
    async *list(prefix) {
      const folder = folderPrefix(prefix);
      yield* walk(folder === "" ? root : localPath(prefix), folder);
    },
    async remove(key) {
      const file = localPath(key);
      await fs.rm(file, { force: true });
      await removeEmptyDirs(path.dirname(file), root);
    },
  };
}

/** The store `where` names: a store, or the folder of a directory store (what state and CLI flags hold). */
export function storeAt(where: TargetStore | string): TargetStore {
  return typeof where === "string" ? directoryStore(where) : where;
}
