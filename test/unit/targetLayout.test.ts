import {
  escrowLayout,
  ownerMarkerName,
  partialFileName,
  OWNER_PATTERN,
  PARTIAL_PATTERN,
  targetLayout,
} from "../../provider/targets/layout";

describe("the layout: key names as Coffer has always written them", () => {
  test("on a backup target", () => {
    expect(targetLayout.identity()).toBe(".coffer/target.json");
    expect(targetLayout.policyDocument("zone-a")).toBe(".coffer/zones/zone-a/policy.json");
    expect(targetLayout.sets()).toBe("sets");
    expect(targetLayout.zoneSets("zone-a")).toBe("sets/zone-a");
    expect(targetLayout.setFolder("zone-a", "nightly-0a1b2c3d")).toBe("sets/zone-a/nightly-0a1b2c3d");
    expect(targetLayout.setManifest("zone-a", "nightly-0a1b2c3d")).toBe("sets/zone-a/nightly-0a1b2c3d/manifest.json");
    expect(targetLayout.setFile("zone-a", "s", "vm-1.qcow2.luks")).toBe("sets/zone-a/s/vm-1.qcow2.luks");
  });

  test("the keys points will use (issue 10 part 2)", () => {
    expect(targetLayout.setIndex("zone-a", "s")).toBe("sets/zone-a/s/index.json");
    expect(targetLayout.pointFolder("zone-a", "s", "p1")).toBe("sets/zone-a/s/p1");
    expect(targetLayout.pointManifest("zone-a", "s", "p1")).toBe("sets/zone-a/s/p1/manifest.json");
  });

  test("names in a set's folder: owner markers and partial files, and the patterns that find them", () => {
    const marker = ownerMarkerName("kvm-07", 4242);
    expect(marker).toBe(".owner-kvm-07-4242");
    expect(OWNER_PATTERN.exec(marker)?.slice(1)).toEqual(["kvm-07", "4242"]);
    const partial = partialFileName("vm-1.qcow2", "kvm-07", 4242, "0a1b2c3d");
    expect(partial).toBe(".vm-1.qcow2.partial-kvm-07-4242-0a1b2c3d");
    expect(PARTIAL_PATTERN.exec(partial)?.slice(1)).toEqual(["vm-1.qcow2", "kvm-07", "4242"]);
  });

  test("in an escrow store", () => {
    expect(escrowLayout.record("gold")).toBe("gold");
    expect(escrowLayout.version("gold", 3)).toBe("gold/v3.json");
    expect(escrowLayout.current("gold")).toBe("gold/current.json");
    expect(escrowLayout.refs("gold")).toBe("gold/refs");
    expect(escrowLayout.ref("gold", "nightly-0a1b")).toBe("gold/refs/nightly-0a1b.json");
    expect(escrowLayout.ref("gold", "a set/with:odd")).toBe("gold/refs/a_set_with_odd.json");
  });

  test("keys read back: which set, version or reference a key is", () => {
    expect(targetLayout.setEntryOf("sets/zone-a/s/vm-1.qcow2")).toEqual({
      zone: "zone-a",
      setId: "s",
      entry: "vm-1.qcow2",
    });
    expect(targetLayout.setEntryOf("sets/zone-a/s/p1/manifest.json")).toMatchObject({ setId: "s", entry: "p1" });
    expect(targetLayout.setEntryOf("sets/zone-a/stray-file")).toBeUndefined();
    expect(targetLayout.setEntryOf(".coffer/zones/zone-a/policy.json")).toBeUndefined();
    expect(targetLayout.setFolderOf("/srv/backups/sets/zone-a/s")).toEqual({ setId: "s", zone: "zone-a" });
    expect(targetLayout.setFolderOf("/restore/s/")).toEqual({ setId: "s" });
    expect(escrowLayout.versionOf("gold", "gold/v12.json")).toBe(12);
    expect(escrowLayout.versionOf("gold", "gold/current.json")).toBeUndefined();
    expect(escrowLayout.versionOf("gold", "gold/refs/v1.json")).toBeUndefined();
    expect(escrowLayout.versionOf("gold", "golden/v1.json")).toBeUndefined();
    expect(escrowLayout.refNameOf("gold", "gold/refs/nightly.json")).toBe("nightly");
    expect(escrowLayout.refNameOf("gold", "gold/refs/notes.txt")).toBeUndefined();
    expect(escrowLayout.refNameOf("gold", "gold/v1.json")).toBeUndefined();
  });

  test("a name that would reach into another folder is refused", () => {
    expect(() => targetLayout.policyDocument("../zone")).toThrow(/zone "..\/zone" can't name/);
    expect(() => targetLayout.setFolder("zone-a", "a/b")).toThrow(/set id/);
    expect(() => escrowLayout.version("..", 1)).toThrow(/escrow id/);
  });
});
