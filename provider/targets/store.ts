/**
 * Where Coffer keeps what it writes: a backup target (policy documents, sets, the target's
 * identity) or an escrow store (records). A store holds objects under keys, '/'-separated names
 * relative to its root; which keys exist is provider/targets/layout.ts's business alone. Every
 * store passes test/unit/targetStore.conformance.test.ts.
 */
export interface TargetStore {
  /**
   * "memory": the in-memory store the unit tests inject (test/support/memoryStore.ts); "swift": a
   * container of an OpenStack Swift account (targets/swift.ts); "s3": a bucket of an S3 API (targets/s3.ts).
   */
  readonly kind: "directory" | "memory" | "swift" | "s3";
  /** Where the store is, as messages name it: a directory store's folder. */
  readonly location: string;
  /**
   * Where `key` is, as messages and outputs name it: its path in a directory store, swift:<container>/<name>,
   * s3://<bucket>/<name>.
   */
  locate(key: string): string;
  /**
   * Throws unless the store is there to use (a directory store: its folder exists). An unmounted
   * store is refused, never written to.
   */
  assertReachable(): Promise<void>;
  /** The object's text, or undefined when there is none; any other failure throws. */
  readText(key: string): Promise<string | undefined>;
  /** Replaces the object whole: a reader sees the old text or the new one, never part of it. */
  writeTextAtomic(key: string, text: string): Promise<void>;
  /** Writes the object whole only if there is none; false, having written nothing, if there is. */
  writeTextExclusive(key: string, text: string): Promise<boolean>;
  /** Stores the local `file` as the object, atomically; returns what was stored. */
  put(key: string, file: string, opts?: { signal?: AbortSignal }): Promise<StoredFile>;
  /** Copies the object into the local `file` (replacing it); throws when there is no object. */
  get(key: string, file: string): Promise<void>;
  stat(key: string): Promise<{ sizeBytes: number } | undefined>;
  /**
   * Every object under the folder `prefix` ("" for all), at any depth, in no particular order.
   * Objects being written (a write's temporary file) are not listed.
   */
  list(prefix: string): AsyncIterable<StoredObject>;
  /** Removes the object; nothing there is no error. */
  remove(key: string): Promise<void>;
}

/**
 * A store on a local (or mounted) folder. QEMU reads and writes backups in place, so the agent
 * works with real paths, which only this kind of store has.
 */
export interface DirectoryStore extends TargetStore {
  readonly kind: "directory";
  /** The store's folder. */
  readonly localDir: string;
  /** The real path of `key`, for tools that read or write it in place. */
  localPath(key: string): string;
}

/** An object as a listing names it: sizes come with the listing, as object stores give them. */
export interface StoredObject {
  key: string;
  sizeBytes: number;
}

export interface StoredFile {
  sizeBytes: number;
  /** Hex SHA-256 of the bytes stored. */
  sha256: string;
}

/**
 * `key` split into its names, or an error when it is not a key: keys are relative, '/'-separated,
 * with no empty, "." or ".." names, so no key reaches outside its store.
 */
export function keyNames(key: string): string[] {
  const names = key.split("/");
  if (key.includes("\0") || names.some((n) => n === "" || n === "." || n === "..")) {
    throw new Error(`"${key}" is not a key of a store: use names separated by '/', without '.', '..' or a leading '/'`);
  }
  return names;
}

/** `prefix` as a folder of keys: "" (everything), or a key followed by '/'. */
export function folderPrefix(prefix: string): string {
  return prefix === "" ? "" : keyNames(prefix).join("/") + "/";
}

/** Every object under `prefix`, sorted by key. */
export async function listAll(store: TargetStore, prefix: string): Promise<StoredObject[]> {
  const found: StoredObject[] = [];
  for await (const object of store.list(prefix)) found.push(object);
  return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
