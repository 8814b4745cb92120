/**
 * Merging a pruned link of a qcow2 chain into its kept point, without QEMU: the manifests a merge
 * rewrites (the kept point's files and base, the digests and depths of the links after it), the
 * journal's roll forward and roll back, what chainBases reads while a merge is finished, and which
 * merges preview and `coffer prune` plan. The merged backups themselves: test/agent/mergeLinks.test.ts.
 */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { chainBases, sha256Text } from "../../provider/agent/chain";
import type { Manifest, ManifestItem } from "../../provider/agent/manifest";
import { MergeJournal, mergedFileName, noLinkLeftBehind, settleMerge } from "../../provider/agent/merge";
import { bootId } from "../../provider/agent/setOwner";
import { INDEX_KIND, SetIndex } from "../../provider/agent/pointIndex";
import { describeChange, pruneCandidates } from "../../provider/backupSet/change";
import { rewriteManifests } from "../../provider/backupSet/merge";
import type { PointRecord } from "../../provider/backupSet/state";
import { planPrune } from "../../provider/cli/points";
import { useTempDir } from "../support/tempDir";

const SET = "nightly-1a2b";
const hex = (c: string) => c.repeat(64);

function item(pointId: string, chain: ManifestItem["chain"], file = "vm.qcow2.luks"): ManifestItem {
  return {
    name: "vm",
    host: "kvm-1",
    source: { kind: "runningVm", qmpSocket: "/run/vm.qmp", device: "vda" } as unknown as ManifestItem["source"],
    file,
    format: "qcow2-in-luks",
    compression: "zstd",
    encrypted: true,
    virtualSize: 16 << 20,
    sizeBytes: 1000,
    streamSha256: hex(pointId.slice(-1)),
    fileSha256: hex("f"),
    verifiedAtBackup: "full",
    startedAt: "2026-11-20T03:00:00Z",
    finishedAt: "2026-11-20T03:01:00Z",
    ...(chain ? { chain } : {}),
  };
}

const manifest = (pointId: string, items: ManifestItem[]) =>
  ({ kind: "coffer.BackupSet", schemaVersion: 7, setId: SET, pointId, items }) as unknown as Manifest;

describe("rewriteManifests: the kept point takes the pruned link's place, the links after it follow", () => {
  const render = async (m: Manifest) => JSON.stringify(m);
  const base = (pointId: string, manifestSha256: string) => ({
    pointId,
    item: "vm",
    file: "vm.qcow2.luks",
    manifestSha256,
  });

  test("a middle link: the kept point builds on the link's base; each later link names its new digest", async () => {
    const p2 = manifest("p2", [item("p2", { bitmap: "b2", base: base("p1", hex("1")), depth: 1 })]);
    const p3 = manifest("p3", [item("p3", { bitmap: "b3", base: base("p2", hex("2")), depth: 2 })]);
    const p4 = manifest("p4", [item("p4", { bitmap: "b4", base: base("p3", hex("3")), depth: 3 })]);
    const files = [
      { item: "vm", file: "vm.merged-p2.qcow2.luks", replaces: "vm.qcow2.luks", sizeBytes: 7, fileSha256: hex("7") },
    ];
    const rewritten = await rewriteManifests({
      from: { pointId: "p2", manifest: p2 },
      into: { pointId: "p3", manifest: p3 },
      files,
      later: [{ pointId: "p4", manifest: p4 }],
      render,
    });
    expect(rewritten.map((r) => r.pointId)).toEqual(["p3", "p4"]);
    const [into, later] = rewritten.map((r) => r.manifest.items[0]);
    expect(into).toMatchObject({ file: "vm.merged-p2.qcow2.luks", sizeBytes: 7, fileSha256: hex("7") });
    // Its guest data is what it always was: the stream's hash stays.
    expect(into.streamSha256).toBe(p3.items[0].streamSha256);
    expect(into.chain).toEqual({ bitmap: "b3", base: base("p1", hex("1")), depth: 1, merged: ["p2"] });
    const merged = { ...base("p3", sha256Text(rewritten[0].text)), file: "vm.merged-p2.qcow2.luks" };
    expect(later.chain).toEqual({ bitmap: "b4", base: merged, depth: 2 });
    expect(rewritten[1].text).toBe(JSON.stringify(rewritten[1].manifest));
  });

  test("a chain's full backup merged into its first link makes that a full backup; points elsewhere stay", async () => {
    const p1 = manifest("p1", [item("p1", { bitmap: "b1", depth: 0 })]);
    const p2 = manifest("p2", [
      item("p2", { bitmap: "b2", base: base("p1", hex("1")), depth: 1, merged: ["p0"] }),
      { ...item("p2", undefined, "db.qcow2.luks"), name: "db" },
    ]);
    const other = manifest("p9", [item("p9", { bitmap: "b9", depth: 0 })]);
    const files = [
      { item: "vm", file: "vm.merged-p1.qcow2.luks", replaces: "vm.qcow2.luks", sizeBytes: 9, fileSha256: hex("9") },
    ];
    const rewritten = await rewriteManifests({
      from: { pointId: "p1", manifest: p1 },
      into: { pointId: "p2", manifest: p2 },
      files,
      later: [{ pointId: "p9", manifest: other }],
      render,
    });
    expect(rewritten.map((r) => r.pointId)).toEqual(["p2"]);
    expect(rewritten[0].manifest.items[0].chain).toEqual({ bitmap: "b2", depth: 0, merged: ["p0", "p1"] });
    expect(rewritten[0].manifest.items[1]).toEqual(p2.items[1]);
  });

  test("refuses when the agent merged no backup of an item that builds on the pruned point", async () => {
    const p1 = manifest("p1", [item("p1", { depth: 0 })]);
    const p2 = manifest("p2", [item("p2", { base: base("p1", hex("1")), depth: 1 })]);
    const merging = rewriteManifests({
      from: { pointId: "p1", manifest: p1 },
      into: { pointId: "p2", manifest: p2 },
      files: [],
      later: [],
      render,
    });
    await expect(merging).rejects.toThrow("point p2: item vm: the agent merged no backup of it");
  });

  test("a merged backup's name is new, and still a backup file's", () => {
    expect(mergedFileName("vm.qcow2.luks", "p2")).toBe("vm.merged-p2.qcow2.luks");
    expect(mergedFileName("vm.qcow2", "p2")).toBe("vm.merged-p2.qcow2");
  });
});

describe("a merge's journal: finished once committed, undone while only prepared and its owner is gone", () => {
  const tempDir = useTempDir();
  const setDirIn = async () => {
    const setDir = path.join(tempDir(), "sets", "zone-a", SET);
    for (const point of ["p1", "p2", "p3"]) {
      await fs.mkdir(path.join(setDir, point), { recursive: true });
      await fs.writeFile(path.join(setDir, point, "manifest.json"), `old ${point}\n`);
      await fs.writeFile(path.join(setDir, point, "vm.qcow2.luks"), `backup ${point}\n`);
    }
    await fs.writeFile(path.join(setDir, "p2", "vm.merged-p1.qcow2.luks"), "merged\n");
    return setDir;
  };
  const journal = (state: MergeJournal["state"], owner = { host: os.hostname(), pid: process.pid, bootId: bootId() }) =>
    ({
      kind: "coffer.Merge",
      from: "p1",
      into: "p2",
      owner,
      state,
      preparedAt: new Date().toISOString(),
      files: [{ item: "vm", file: "vm.merged-p1.qcow2.luks", replaces: "vm.qcow2.luks" }],
      fromFiles: ["vm.qcow2.luks"],
      manifests: state === "committed" ? ["p2", "p3"] : [],
    }) satisfies MergeJournal;
  const write = (setDir: string, j: MergeJournal) => fs.writeFile(path.join(setDir, "merge.json"), JSON.stringify(j));
  /** p2's rewritten manifest: it names the merged backup. */
  const newP2 = JSON.stringify({
    manifest: { pointId: "p2", items: [{ name: "vm", file: "vm.merged-p1.qcow2.luks" }] },
  });
  const tree = async (setDir: string) => {
    const found: Record<string, string> = {};
    for (const entry of (await fs.readdir(setDir, { recursive: true })).sort()) {
      const file = path.join(setDir, entry);
      if ((await fs.stat(file)).isFile()) found[entry] = await fs.readFile(file, "utf8");
    }
    return found;
  };

  test("committed: the rewritten manifests go in place, the replaced backup and the merged point go", async () => {
    const setDir = await setDirIn();
    await fs.writeFile(path.join(setDir, "p2", "manifest.next.json"), newP2);
    await fs.writeFile(path.join(setDir, "p3", "manifest.next.json"), "new p3\n");
    await write(setDir, journal("committed"));
    // From a point's folder too: every command on a point looks in its set's folder.
    expect(await settleMerge(path.join(setDir, "p3"))).toBe("finished");
    expect(await tree(setDir)).toEqual({
      "p2/manifest.json": newP2,
      "p2/vm.merged-p1.qcow2.luks": "merged\n",
      "p3/manifest.json": "new p3\n",
      "p3/vm.qcow2.luks": "backup p3\n",
    });
    expect(await settleMerge(setDir)).toBe("none");
  });

  test("committed, stopped half-way through the swap: the rest is done, and the swapped one stays", async () => {
    const setDir = await setDirIn();
    await fs.writeFile(path.join(setDir, "p2", "manifest.json"), newP2);
    await fs.writeFile(path.join(setDir, "p2", "manifest.prev.json"), "old p2\n");
    await fs.writeFile(path.join(setDir, "p3", "manifest.next.json"), "new p3\n");
    await write(setDir, journal("committed"));
    expect(await settleMerge(setDir)).toBe("finished");
    const after = await tree(setDir);
    expect([after["p2/manifest.json"], after["p3/manifest.json"], after["p2/manifest.prev.json"]]).toEqual([
      newP2,
      "new p3\n",
      undefined,
    ]);
    expect(Object.keys(after).some((f) => f.startsWith("p1/"))).toBe(false);
  });

  test("committed, but the kept point's manifest does not name the merged backup: nothing is removed", async () => {
    const setDir = await setDirIn();
    // The rewritten manifests never reached the folder (a run that undid the merge meanwhile).
    await write(setDir, journal("committed"));
    const before = await tree(setDir);
    await expect(settleMerge(setDir)).rejects.toThrow(/does not name vm.merged-p1.qcow2.luks.*nothing removed/);
    expect(await tree(setDir)).toEqual(before);
  });

  test("a commit must rewrite every point that builds on a changed one, whatever the provider's view", async () => {
    const setDir = await setDirIn();
    // p4 links on p2, whose manifest the merge rewrites; p5 on p4 (not changed), p6 on nothing.
    const link = (base?: string) => ({
      manifest: { items: [{ name: "vm", file: "f", chain: base ? { base: { pointId: base } } : {} }] },
    });
    for (const [point, base] of [
      ["p4", "p2"],
      ["p5", "p4"],
      ["p6", undefined],
    ] as const) {
      await fs.mkdir(path.join(setDir, point));
      await fs.writeFile(path.join(setDir, point, "manifest.json"), JSON.stringify(link(base)));
    }
    const request = { setDir, from: "p1", into: "p2", manifestSecret: "k", owner: journal("prepared").owner };
    const text = "{}";
    await expect(noLinkLeftBehind({ ...request, manifests: [{ pointId: "p2", text }] })).rejects.toThrow(
      /point p4 builds on point p2, which the merge changes, but its manifest is not among the rewritten ones/,
    );
    // p4 rewritten too: then p5 builds on a changed point.
    const withP4 = [
      { pointId: "p2", text },
      { pointId: "p4", text },
    ];
    await expect(noLinkLeftBehind({ ...request, manifests: withP4 })).rejects.toThrow(/point p5 builds on point p4/);
    const all = [...withP4, { pointId: "p5", text }];
    await expect(noLinkLeftBehind({ ...request, manifests: all })).resolves.toBeUndefined();
    // A link on the merged point itself, left out.
    await fs.writeFile(path.join(setDir, "p6", "manifest.json"), JSON.stringify(link("p1")));
    await expect(noLinkLeftBehind({ ...request, manifests: all })).rejects.toThrow(/point p6 builds on point p1/);
  });

  test("prepared, its owner gone (an earlier boot): undone, every point exactly as it was", async () => {
    const setDir = await setDirIn();
    await fs.writeFile(path.join(setDir, "p3", "manifest.next.json"), "new p3\n");
    const before = await tree(setDir);
    await write(setDir, journal("prepared", { host: os.hostname(), pid: process.pid, bootId: "an-earlier-boot" }));
    expect(await settleMerge(setDir)).toBe("undone");
    const { "p2/vm.merged-p1.qcow2.luks": _merged, "p3/manifest.next.json": _next, ...untouched } = before;
    expect(await tree(setDir)).toEqual(untouched);
  });

  test("prepared by a live owner: left alone (it commits or undoes it itself)", async () => {
    const setDir = await setDirIn();
    await write(setDir, journal("prepared"));
    const before = await tree(setDir);
    expect(await settleMerge(setDir)).toBe("in progress");
    expect(await tree(setDir)).toEqual(before);
  });

  test("prepared by an owner on another host: left alone for a day, then undone", async () => {
    const setDir = await setDirIn();
    const elsewhere = { ...journal("prepared", { host: "pulumi-elsewhere", pid: 1, bootId: "b" }) };
    await write(setDir, elsewhere);
    expect(await settleMerge(setDir)).toBe("in progress");
    await write(setDir, { ...elsewhere, preparedAt: new Date(Date.now() - 25 * 3600_000).toISOString() });
    expect(await settleMerge(setDir)).toBe("undone");
    expect(Object.keys(await tree(setDir))).not.toContain(`p2/vm.merged-p1.qcow2.luks`);
  });

  test("while a merge is finished, a link not yet rewritten reads its base through the replaced manifest", async () => {
    const setDir = await setDirIn();
    const old = "old p2 manifest";
    await fs.writeFile(path.join(setDir, "p2", "manifest.json"), "new p2 manifest");
    const recorded = JSON.stringify({ manifest: { items: [{ ...item("p2", { depth: 0 }), sizeBytes: 11 }] } });
    await fs.writeFile(path.join(setDir, "p2", "manifest.prev.json"), recorded);
    const chain = {
      depth: 1,
      base: { pointId: "p2", item: "vm", file: "vm.qcow2.luks", manifestSha256: sha256Text(recorded) },
    };
    const bases = await chainBases(path.join(setDir, "p3"), chain, "point p3");
    expect(bases).toEqual([expect.objectContaining({ pointId: "p2", sizeBytes: 11 })]);
    // Neither the current nor the replaced one: the chain is broken, as before.
    await fs.writeFile(path.join(setDir, "p2", "manifest.prev.json"), old);
    await expect(chainBases(path.join(setDir, "p3"), chain, "point p3")).rejects.toThrow(/not the one it was built on/);
  });
});

describe("which merges preview and coffer prune plan", () => {
  const now = new Date("2026-11-25T12:00:00Z");
  const record = (id: string, day: number, extra: Partial<PointRecord> = {}): PointRecord => ({
    id,
    takenAt: `2026-11-${day}T03:00:00Z`,
    loc: 0,
    sizeBytes: 4096,
    itemsSha256: "",
    key: 1,
    status: "ok",
    checkedAt: `2026-11-${day}T03:05:00Z`,
    ...extra,
  });
  const chain = [
    record("p1", 20),
    record("p2", 21, { dependsOn: ["p1"] }),
    record("p3", 22, { dependsOn: ["p2"] }),
    record("p4", 23, { dependsOn: ["p3"] }),
  ];
  const history = { retention: { keepLast: 1 } } as never;

  test("retention merges the links a kept point builds on; preview says so before it happens", () => {
    const planned = pruneCandidates(chain, { history, holds: [{ point: "p2", reason: "audit" }] }, now);
    expect(planned.prune).toEqual([]);
    expect(planned.merge.map((m) => [m.point.id, m.into.id])).toEqual([["p3", "p4"]]);
    const change = {
      changes: true,
      prune: [],
      merge: planned.merge,
      fromNextPoint: [],
      setSettings: [],
      unknown: [],
      strayHolds: [],
    };
    expect(describeChange("s", change, now)).toEqual([
      "set s: merges p3 (3 d old) into p4: retention prunes it, and p4's incremental backups build on it, " +
        "so they take in its data",
    ]);
  });

  test("a point about to be taken links on the newest: that one merges into it", () => {
    const planned = pruneCandidates(chain.slice(0, 2), { history }, now, { linksOn: "p2" });
    expect(planned.merge.map((m) => [m.point.id, m.into.id])).toEqual([
      ["p2", "(the new point)"],
      ["p1", "(the new point)"],
    ]);
  });

  test("a point with Cinder backups, or one a Cinder incremental builds on, is never merged", () => {
    const cloud = [{ source: "db", kind: "cinder-backup" as const, id: "bk-1" }];
    const withCinder = [record("p1", 20, { cloud }), record("p2", 21, { dependsOn: ["p1"] })];
    const planned = pruneCandidates(withCinder, { history }, now);
    expect(planned.merge).toEqual([]);
  });

  const index = (retention: SetIndex["retention"], holds: SetIndex["holds"] = []): SetIndex => ({
    kind: INDEX_KIND,
    schemaVersion: 1,
    setId: SET,
    zone: "zone-a",
    updatedAt: now.toISOString(),
    retention,
    holds,
    points: chain.map(({ id, takenAt, dependsOn }) => ({
      id,
      takenAt,
      sizeBytes: 4096,
      status: "ok" as const,
      keySource: "passphrase" as const,
      ...(dependsOn ? { dependsOn } : {}),
    })),
    pruned: [],
  });

  test("coffer prune merges only with the set's keys; without, it keeps what a kept point builds on", () => {
    const withKeys = planPrune(index({ keepLast: 1 }), { now, merges: true });
    expect(withKeys.plan.merge.map((m) => `${m.point.id} into ${m.into.id}`)).toEqual([
      "p3 into p4",
      "p2 into p4",
      "p1 into p4",
    ]);
    const withoutKeys = planPrune(index({ keepLast: 1 }), { now });
    expect(withoutKeys.plan.merge).toEqual([]);
    expect(withoutKeys.plan.keep.map((k) => k.point.id)).toEqual(["p4", "p3", "p2", "p1"]);
  });

  test("--point of a link a kept point builds on: merged with keys, else refused saying how", () => {
    const merged = planPrune(index(null), { now, point: "p2", merges: true });
    expect(merged.plan.merge.map((m) => [m.point.id, m.into.id, m.reason])).toEqual([
      ["p2", "p3", "named with --point"],
    ]);
    expect(merged.plan.prune).toEqual([]);
    expect(() => planPrune(index(null), { now, point: "p2" })).toThrow(
      "point p2 is needed by p3: their incrementals build on its backups; " +
        "give the set's passphrase (or manifest key) to merge it into p3, or prune p3 first",
    );
    // A held point after it never changes: its manifest would be rewritten.
    expect(() =>
      planPrune(index(null, [{ point: "p4", reason: "case 9" }]), { now, point: "p2", merges: true }),
    ).toThrow("it can't be merged into p3: point p4 is held, and its files never change");
  });
});
