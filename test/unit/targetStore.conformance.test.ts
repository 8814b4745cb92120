import { randomBytes, createHash } from "node:crypto";
import { promises as fs, mkdirSync, statSync } from "node:fs";
import * as path from "node:path";
import { directoryStore } from "../../provider/targets/directory";
import { TargetStore, listAll } from "../../provider/targets/store";
import { memoryStore } from "../support/memoryStore";
import { useTempDir } from "../support/tempDir";

const tempDir = useTempDir();

/** Every store kind, made fresh and empty for each test: a new kind is one more line here. */
const stores: [string, () => TargetStore][] = [
  [
    "directory",
    () => {
      mkdirSync(path.join(tempDir(), "store"));
      return directoryStore(path.join(tempDir(), "store"));
    },
  ],
  ["memory", () => memoryStore()],
];

const keysIn = async (store: TargetStore, prefix = "") => (await listAll(store, prefix)).map((o) => o.key);

/** A local file of `size` random bytes, and its hex SHA-256. */
async function randomFile(name: string, size: number): Promise<{ file: string; bytes: Buffer; sha256: string }> {
  const bytes = randomBytes(size);
  const file = path.join(tempDir(), name);
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

describe.each(stores)("the %s store (conformance)", (_kind, make) => {
  test("a key never written reads as undefined, has no stat and is not listed", async () => {
    const store = make();
    await expect(store.assertReachable()).resolves.toBeUndefined();
    expect(await store.readText("zones/a/policy.json")).toBeUndefined();
    expect(await store.stat("zones/a/policy.json")).toBeUndefined();
    expect(await keysIn(store)).toEqual([]);
  });

  test("writeTextAtomic stores the text whole and a second write replaces it", async () => {
    const store = make();
    await store.writeTextAtomic("a/b/doc.json", "first");
    await store.writeTextAtomic("a/b/doc.json", "zweite Fassung, größer");
    expect(await store.readText("a/b/doc.json")).toBe("zweite Fassung, größer");
    expect(await store.stat("a/b/doc.json")).toEqual({ sizeBytes: Buffer.byteLength("zweite Fassung, größer") });
    expect(await listAll(store, "")).toEqual([{ key: "a/b/doc.json", sizeBytes: 24 }]);
  });

  test("writeTextExclusive writes only where there is nothing; of two at once exactly one wins", async () => {
    const store = make();
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
    const store = make();
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
    const store = make();
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
    const store = make();
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
    const store = make();
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
      const store = make();
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
      expect((await fs.readdir(tempDir())).sort()).toEqual([
        "in.raw",
        ...(store.kind === "directory" ? ["store"] : []),
      ]);
    },
  );
});

describe("the directory store", () => {
  const root = () => path.join(tempDir(), "target");
  const made = () => {
    mkdirSync(root());
    return directoryStore(root());
  };

  test("keys are files under its folder, written 0600 in folders made 0700", async () => {
    const store = made();
    await store.writeTextAtomic(".coffer/zones/zone-a/policy.json", "{}");
    const file = path.join(root(), ".coffer", "zones", "zone-a", "policy.json");
    expect(store.localPath(".coffer/zones/zone-a/policy.json")).toBe(file);
    expect(store.locate(".coffer/zones/zone-a/policy.json")).toBe(file);
    expect(store.localDir).toBe(root());
    expect(store.location).toBe(root());
    expect(await fs.readFile(file, "utf8")).toBe("{}");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    const { file: local } = await randomFile("disk.raw", 1000);
    await store.put("sets/z/s/vm.qcow2", local);
    expect(statSync(path.join(root(), "sets", "z", "s", "vm.qcow2")).mode & 0o777).toBe(0o600);
  });

  test("a failed atomic write leaves the old state, and no temporary file in the folder or the listing", async () => {
    const store = made();
    await fs.mkdir(path.join(root(), "doc.json", "occupied"), { recursive: true });
    await expect(store.writeTextAtomic("doc.json", "new")).rejects.toThrow();
    expect(await fs.readdir(root())).toEqual(["doc.json"]);
    expect(await keysIn(store)).toEqual([]);
  });

  test("a write under way (its temporary file) is not listed; the files qemu writes in place are", async () => {
    const store = made();
    await fs.mkdir(path.join(root(), "sets", "z", "s"), { recursive: true });
    await fs.writeFile(path.join(root(), "sets", "z", "s", ".manifest.json.0123456789ab.tmp"), "half");
    await fs.writeFile(path.join(root(), "sets", "z", "s", ".vm.qcow2.partial-kvm-7-0a1b2c3d"), "being written");
    expect(await keysIn(store)).toEqual(["sets/z/s/.vm.qcow2.partial-kvm-7-0a1b2c3d"]);
  });

  test("removing an object removes the folders it leaves empty, up to and never including its folder", async () => {
    const store = made();
    await store.writeTextAtomic(".coffer/target.json", "identity");
    await store.writeTextAtomic(".coffer/zones/zone-a/policy.json", "{}");
    await store.writeTextAtomic("sets/z/s/manifest.json", "{}");
    await store.remove(".coffer/zones/zone-a/policy.json");
    expect(await fs.readdir(path.join(root(), ".coffer"))).toEqual(["target.json"]);
    await store.remove("sets/z/s/manifest.json");
    await store.remove(".coffer/target.json");
    expect(await fs.readdir(root())).toEqual([]);
  });

  test("remove refuses a folder: it removes objects, never what is in a folder", async () => {
    const store = made();
    await store.writeTextAtomic("sets/z/s/vm.qcow2", "backup");
    await expect(store.remove("sets/z/s")).rejects.toThrow();
    expect(await store.readText("sets/z/s/vm.qcow2")).toBe("backup");
  });

  test("a folder that is not there (an unmounted NAS's missing mount point) is unreachable", async () => {
    const store = directoryStore(path.join(tempDir(), "not-mounted"));
    await expect(store.assertReachable()).rejects.toThrow();
    await fs.writeFile(path.join(tempDir(), "a-file"), "");
    await expect(directoryStore(path.join(tempDir(), "a-file")).assertReachable()).rejects.toThrow(/not a directory/);
  });
});
