import { promises as fs, mkdirSync, statSync } from "node:fs";
import * as path from "node:path";
import { directoryStore } from "../../provider/targets/directory";
import { TargetStore } from "../../provider/targets/store";
import { memoryStore } from "../support/memoryStore";
import { describeStoreConformance, keysIn, randomFileIn } from "../support/storeConformance";
import { useTempDir } from "../support/tempDir";

const tempDir = useTempDir();
const randomFile = (name: string, size: number) => randomFileIn(tempDir(), name, size);

/** Every store kind that needs no service, made fresh and empty for each test (Swift's: test/swift). */
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
for (const [kind, make] of stores) describeStoreConformance(kind, make, tempDir);

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
