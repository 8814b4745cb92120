import { randomBytes, createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { TargetStore, listAll } from "../../provider/targets/store";

export const keysIn = async (store: TargetStore, prefix = "") => (await listAll(store, prefix)).map((o) => o.key);

/** A local file of `size` random bytes in `dir`, and its hex SHA-256. */
export async function randomFileIn(
  dir: string,
  name: string,
  size: number,
): Promise<{ file: string; bytes: Buffer; sha256: string }> {
  const bytes = randomBytes(size);
  const file = path.join(dir, name);
  await fs.writeFile(file, bytes);
  return { file, bytes, sha256: createHash("sha256").update(bytes).digest("hex") };
}

/** Whether `work` fails, whether it throws at once or rejects. */
async function refused(work: () => unknown): Promise<boolean> {
  try {
    await work();
    return false;
  } catch {
    return true;
  }
}

/**
 * What every TargetStore does (store.ts), run against the store `make` gives: a new, empty one for each
 * test. `tempDir` is the test's own folder, for local files; a store may keep its own data there too.
 */
export function describeStoreConformance(
  kind: string,
  make: () => TargetStore | Promise<TargetStore>,
  tempDir: () => string,
): void {
  const randomFile = (name: string, size: number) => randomFileIn(tempDir(), name, size);
  describe(`the ${kind} store (conformance)`, () => {
    test("a key never written reads as undefined, has no stat and is not listed", async () => {
      const store = await make();
      await expect(store.assertReachable()).resolves.toBeUndefined();
      expect(await store.readText("zones/a/policy.json")).toBeUndefined();
      expect(await store.stat("zones/a/policy.json")).toBeUndefined();
      expect(await keysIn(store)).toEqual([]);
    });

    test("writeTextAtomic stores the text whole and a second write replaces it", async () => {
      const store = await make();
      await store.writeTextAtomic("a/b/doc.json", "first");
      await store.writeTextAtomic("a/b/doc.json", "zweite Fassung, größer");
      expect(await store.readText("a/b/doc.json")).toBe("zweite Fassung, größer");
      expect(await store.stat("a/b/doc.json")).toEqual({ sizeBytes: Buffer.byteLength("zweite Fassung, größer") });
      expect(await listAll(store, "")).toEqual([{ key: "a/b/doc.json", sizeBytes: 24 }]);
    });

    test("writeTextExclusive writes only where there is nothing; of two at once exactly one wins", async () => {
      const store = await make();
      expect(await store.writeTextExclusive("claim.json", "first")).toBe(true);
      expect(await store.writeTextExclusive("claim.json", "second")).toBe(false);
      expect(await store.readText("claim.json")).toBe("first");
      const results = await Promise.all([
        store.writeTextExclusive("x/race", "one"),
        store.writeTextExclusive("x/race", "two"),
      ]);
      expect(results.filter(Boolean)).toHaveLength(1);
      expect(await store.readText("x/race")).toBe(results[0] ? "one" : "two");
      expect(await keysIn(store)).toEqual(["claim.json", "x/race"]);
    });

    test("put stores a file (several reads long) and reports its size and SHA-256; get copies it back", async () => {
      const store = await make();
      const { file, bytes, sha256 } = await randomFile("disk.raw", 3 * 1024 * 1024 + 17);
      expect(await store.put("sets/z/s1/vm.qcow2", file)).toEqual({ sizeBytes: bytes.length, sha256 });
      expect(await store.stat("sets/z/s1/vm.qcow2")).toEqual({ sizeBytes: bytes.length });
      const copy = path.join(tempDir(), "copy.raw");
      await fs.writeFile(copy, "something to replace");
      await store.get("sets/z/s1/vm.qcow2", copy);
      expect((await fs.readFile(copy)).equals(bytes)).toBe(true);
      await expect(store.get("sets/z/s1/missing.qcow2", copy)).rejects.toThrow();
      expect((await fs.readFile(copy)).equals(bytes)).toBe(true);
    });

    test("a failed put (aborted, or no such file) leaves the object as it was and lists nothing more", async () => {
      const store = await make();
      await store.writeTextAtomic("sets/z/s1/vm.qcow2", "the old object");
      const { file } = await randomFile("new.raw", 64 * 1024);
      const aborted = AbortSignal.abort();
      await expect(store.put("sets/z/s1/vm.qcow2", file, { signal: aborted })).rejects.toThrow();
      await expect(store.put("sets/z/s1/vm.qcow2", path.join(tempDir(), "no-such-file"))).rejects.toThrow();
      await expect(store.put("sets/z/s1/other.qcow2", file, { signal: aborted })).rejects.toThrow();
      expect(await store.readText("sets/z/s1/vm.qcow2")).toBe("the old object");
      expect(await keysIn(store)).toEqual(["sets/z/s1/vm.qcow2"]);
    });

    test("list yields every object under a folder at any depth, not one that merely starts with its name", async () => {
      const store = await make();
      for (const key of ["a/b/c.json", "a/d.json", "ab/e.json", "top.json"]) await store.writeTextAtomic(key, key);
      expect(await keysIn(store)).toEqual(["a/b/c.json", "a/d.json", "ab/e.json", "top.json"]);
      expect(await keysIn(store, "a")).toEqual(["a/b/c.json", "a/d.json"]);
      expect(await keysIn(store, "a/b")).toEqual(["a/b/c.json"]);
      expect(await keysIn(store, "ab")).toEqual(["ab/e.json"]);
      expect(await keysIn(store, "top.json")).toEqual([]);
      expect(await keysIn(store, "nothing/here")).toEqual([]);
      expect(await listAll(store, "a/b")).toEqual([{ key: "a/b/c.json", sizeBytes: "a/b/c.json".length }]);
    });

    test("remove takes the object out of read, stat and list, and removing again is no error", async () => {
      const store = await make();
      await store.writeTextAtomic("refs/set-a.json", "a");
      await store.writeTextAtomic("refs/set-b.json", "b");
      await store.remove("refs/set-a.json");
      await store.remove("refs/set-a.json");
      await store.remove("never/written.json");
      expect(await store.readText("refs/set-a.json")).toBeUndefined();
      expect(await store.stat("refs/set-a.json")).toBeUndefined();
      expect(await keysIn(store)).toEqual(["refs/set-b.json"]);
    });

    test.each(["../outside", "/etc/passwd", "a/../../outside", "a//b", "", ".", "a/./b", "a/"])(
      "the key %j is refused by every operation, and nothing is written",
      async (key) => {
        const store = await make();
        const ownFiles = await fs.readdir(tempDir()); // what the store keeps there, if anything
        const { file } = await randomFile("in.raw", 16);
        const operations = [
          () => store.readText(key),
          () => store.writeTextAtomic(key, "x"),
          () => store.writeTextExclusive(key, "x"),
          () => store.put(key, file),
          () => store.get(key, path.join(tempDir(), "out.raw")),
          () => store.stat(key),
          () => store.remove(key),
          () => store.locate(key),
        ];
        for (const operation of operations) expect(await refused(operation)).toBe(true);
        if (key !== "") expect(await refused(() => listAll(store, key))).toBe(true);
        expect(await keysIn(store)).toEqual([]);
        expect((await fs.readdir(tempDir())).sort()).toEqual([...ownFiles, "in.raw"].sort());
      },
    );
  });
}
