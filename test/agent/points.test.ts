import { spawnSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { backupItem, sweepLeftovers, verifySet, writeManifest } from "../../provider/agent/backupSet";
import { MANIFEST_KIND, MANIFEST_SCHEMA_VERSION, Manifest } from "../../provider/agent/manifest";
import { currentSetIndex, readSetIndex, setAt, writeSetIndex } from "../../provider/agent/pointIndex";
import { bootId } from "../../provider/agent/setOwner";
import { makeRawDisk } from "../support/disks";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(180_000);
const tempDir = useTempDir();
const zoneDir = () => path.join(tempDir(), "target", "sets", "zone-a");
const KEYS = { passphrase: "points-test-passphrase-1", manifestKey: "bWFuaWZlc3Qta2V5" };

/** A point of set `setId` with one unencrypted source, signed with the manifest key (or none for a crash). */
async function point(setId: string, pointId: string | undefined, options: { sign?: boolean; owner?: object } = {}) {
  const disk = path.join(tempDir(), `${setId}-${pointId}.raw`);
  await makeRawDisk(disk, 4);
  const item = await backupItem({
    zoneDir: zoneDir(),
    setId,
    pointId,
    name: "vm-root",
    source: { disk },
    compression: "none",
    encrypted: false,
    bandwidthLimitMiBps: 0,
    integrityCheck: "none",
    owner: options.owner as never,
  });
  const dir = path.join(zoneDir(), setId, pointId ?? "");
  const manifest: Manifest = {
    kind: MANIFEST_KIND,
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    setId,
    ...(pointId ? { pointId } : {}),
    name: "t",
    trigger: "t",
    zone: "zone-a",
    policy: { compression: "none", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "none" },
    keySource: "manifest-key",
    qemuVersion: "7.2",
    createdAt: new Date().toISOString(),
    items: [item],
  };
  if (options.sign !== false) await writeManifest(dir, manifest, KEYS.manifestKey);
  return dir;
}

function deadPid(): number {
  return Number(spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" }).stdout.trim());
}

describe("points in a set's folder", () => {
  test("each point has its own folder and manifest; a manifest copied into another point's folder is refused", async () => {
    const first = await point("nightly", "p1");
    const second = await point("nightly", "p2");
    expect(path.dirname(first)).toBe(path.join(zoneDir(), "nightly"));
    expect(await verifySet(first, "metadata", KEYS)).toMatchObject({ status: "ok" });
    for (const file of await fs.readdir(first)) await fs.copyFile(path.join(first, file), path.join(second, file));
    expect(await verifySet(second, "none", KEYS)).toMatchObject({
      status: "failed",
      failures: [expect.stringMatching(/belongs to point p1, not to this folder's point p2/)],
    });
  });

  test("verify picks the key each manifest names from the keys it is given", async () => {
    const dir = await point("nightly", "p1");
    expect(await verifySet(dir, "none", { passphrase: "wrong", manifestKey: KEYS.manifestKey })).toMatchObject({
      status: "ok",
    });
    expect(await verifySet(dir, "none", { passphrase: KEYS.passphrase, manifestKey: "d3Jvbmc=" })).toMatchObject({
      status: "failed",
      failures: [expect.stringMatching(/HMAC/)],
    });
  });

  test("a crashed point's folder is swept, its set's finished points and index stay", async () => {
    const good = await point("nightly", "p1");
    const owner = { host: os.hostname(), pid: deadPid(), bootId: bootId() };
    const crashed = await point("nightly", "p2", { sign: false, owner });
    const setDir = path.dirname(good);
    const set = setAt(path.join(tempDir(), "target"), setDir);
    await writeSetIndex(set, (await currentSetIndex(set)).index);
    const removed = await sweepLeftovers(zoneDir());
    expect(removed.every((f) => f.startsWith(crashed))).toBe(true);
    expect(removed.length).toBeGreaterThan(0);
    expect((await fs.readdir(setDir)).sort()).toEqual(["index.json", "p1"]);
  });

  test("the index is rebuilt from the manifests, keeps what was pruned without Pulumi, and shows lost points", async () => {
    const legacy = await point("nightly", undefined);
    await point("nightly", "p2");
    const setDir = legacy;
    const set = setAt(path.join(tempDir(), "target"), setDir);
    const rebuilt = await currentSetIndex(set);
    expect(rebuilt.rebuilt).toBe(true);
    expect(rebuilt.index.points.map((p) => [p.id, p.status, p.keySource])).toEqual([
      ["nightly", "unchecked", "manifest-key"],
      ["p2", "unchecked", "manifest-key"],
    ]);
    const pruned = [{ id: "p0", prunedAt: "2026-11-26T00:00:00Z", by: "coffer prune" }];
    await writeSetIndex(set, { ...rebuilt.index, pruned });
    await fs.rm(path.join(setDir, "p2"), { recursive: true });
    const now = await currentSetIndex(set);
    expect(now.index.points.map((p) => [p.id, p.status])).toEqual([
      ["nightly", "unchecked"],
      ["p2", "missing"],
    ]);
    // A later write by Pulumi keeps the record of what was pruned without it.
    await writeSetIndex(set, { ...now.index, pruned: [] });
    expect((await readSetIndex(set)).index?.pruned).toEqual(pruned);
  });
});
