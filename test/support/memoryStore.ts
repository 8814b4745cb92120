import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import { StoredObject, TargetStore, folderPrefix, keyNames } from "../../provider/targets/store";

/** A TargetStore in memory: the second store the conformance suite runs against, and a store tests can inject. */
export interface MemoryStore extends TargetStore {
  readonly kind: "memory";
  /** The objects, by key: tests look and change them directly. */
  readonly objects: Map<string, Buffer>;
}

export function memoryStore(location = "memory:"): MemoryStore {
  const objects = new Map<string, Buffer>();
  const checked = (key: string) => keyNames(key).join("/");
  const missing = (key: string) => Object.assign(new Error(`no object ${key}`), { code: "ENOENT" });
  return {
    kind: "memory",
    location,
    objects,
    locate: (key) => `${location}/${checked(key)}`,
    async assertReachable() {},
    async readText(key) {
      return objects.get(checked(key))?.toString("utf8");
    },
    async writeTextAtomic(key, text) {
      objects.set(checked(key), Buffer.from(text, "utf8"));
    },
    async writeTextExclusive(key, text) {
      if (objects.has(checked(key))) return false;
      objects.set(checked(key), Buffer.from(text, "utf8"));
      return true;
    },
    async put(key, file, opts) {
      const name = checked(key);
      const data = await fs.readFile(file);
      opts?.signal?.throwIfAborted();
      objects.set(name, data);
      return { sizeBytes: data.length, sha256: createHash("sha256").update(data).digest("hex") };
    },
    async get(key, file) {
      const data = objects.get(checked(key));
      if (data === undefined) throw missing(key);
      await fs.writeFile(file, data, { mode: 0o600 });
    },
    async stat(key) {
      const data = objects.get(checked(key));
      return data === undefined ? undefined : { sizeBytes: data.length };
    },
    async *list(prefix): AsyncGenerator<StoredObject> {
      const folder = folderPrefix(prefix);
      for (const [key, data] of [...objects]) if (key.startsWith(folder)) yield { key, sizeBytes: data.length };
    },
    async remove(key) {
      objects.delete(checked(key));
    },
  };
}
