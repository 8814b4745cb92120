/**
 * A set's index with points that hold Cinder backups: written and read in both versions, rebuilt
 * from manifests, and `coffer prune`'s plan and deletions from it (with a cloud stand-in).
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { MANIFEST_KIND, Manifest, renderSignedManifest } from "../../provider/agent/manifest";
import {
  INDEX_KIND,
  SetIndex,
  SetOnStore,
  currentSetIndex,
  readSetIndex,
  rebuildSetIndex,
  setAt,
  writeSetIndex,
} from "../../provider/agent/pointIndex";
import { CofferError } from "../../provider/common/errors";
import { planPrune, prunePoints, renderPrune } from "../../provider/cli/points";
import type { CloudProjectAccess } from "../../provider/sources/cinderBackups";
import type { CinderVolumeItem } from "../../provider/sources/cinderVolume";
import { targetLayout } from "../../provider/targets/layout";
import { memoryStore } from "../support/memoryStore";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

const MANIFEST_KEY = "dW5pdC10ZXN0LW1hbmlmZXN0LWtleQ==";
const project = { authUrl: "https://keystone.example:5000/v3", region: "RegionOne", projectId: "p-1" };
const SET = "nightly-1a2b3c4d";
const FULL = "20261120T030000Z-aaaa";
const INCR = "20261121T030000Z-bbbb";
const NEWEST = "20261122T030000Z-cccc";

/** A Cinder source's manifest record: `backupId`, built on `parent` when given. */
function cinderSource(backupId: string, parent?: string): CinderVolumeItem {
  return {
    kind: "cinderVolume",
    cloud: project,
    volumeId: "vol-1",
    backupId,
    ...(parent ? { parentBackupId: parent } : {}),
    incremental: parent !== undefined,
    force: false,
    volume: {
      sizeGiB: 1,
      bootable: false,
      type: { name: "standard", encryptionReadable: true },
      metadata: {},
      imageMetadata: {},
      encrypted: false,
    },
  };
}

/** A point's manifest with one Cinder backup only the cloud holds. */
function manifestOf(pointId: string, takenAt: string, source?: CinderVolumeItem): Manifest {
  return {
    kind: MANIFEST_KIND,
    schemaVersion: 4,
    setId: SET,
    pointId,
    name: pointId,
    trigger: pointId,
    zone: "zone-a",
    policy: { compression: "zstd", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "metadata" },
    keySource: "manifest-key",
    qemuVersion: "7.2",
    createdAt: takenAt,
    items: [],
    ...(source
      ? { cloudItems: [{ name: "data", host: "here", source, startedAt: takenAt, finishedAt: takenAt }] }
      : {}),
  };
}

const POINTS = [
  { id: FULL, takenAt: "2026-11-20T03:00:00.000Z", source: cinderSource("bk-full") },
  { id: INCR, takenAt: "2026-11-21T03:00:00.000Z", source: cinderSource("bk-incr", "bk-full") },
  { id: NEWEST, takenAt: "2026-11-22T03:00:00.000Z", source: cinderSource("bk-new") },
];

async function writeManifests(set: SetOnStore) {
  for (const p of POINTS) {
    const key = `${targetLayout.setFolder(set.zone, set.setId)}/${p.id}/manifest.json`;
    await set.store.writeTextAtomic(
      key,
      await renderSignedManifest(manifestOf(p.id, p.takenAt, p.source), MANIFEST_KEY),
    );
  }
}

/** The index Pulumi writes of the three points, all verified, keeping the last `keepLast`. */
function declaredIndex(keepLast: number, withCloud: boolean): SetIndex {
  const cloudOf = (p: (typeof POINTS)[number]) => ({
    project,
    backups: [
      {
        source: "data",
        kind: "cinder-backup" as const,
        id: p.source.backupId,
        ...(p.source.parentBackupId ? { parent: p.source.parentBackupId } : {}),
      },
    ],
  });
  return {
    kind: INDEX_KIND,
    schemaVersion: 2,
    setId: SET,
    zone: "zone-a",
    updatedAt: "2026-11-22T03:05:00.000Z",
    retention: { keepLast },
    holds: [],
    points: POINTS.map((p) => ({
      id: p.id,
      takenAt: p.takenAt,
      sizeBytes: 0,
      status: "ok" as const,
      checkedAt: p.takenAt,
      keySource: "manifest-key" as const,
      ...(withCloud ? { cloud: cloudOf(p) } : {}),
      ...(withCloud && p.id === INCR ? { dependsOn: [FULL] } : {}),
    })),
    pruned: [],
  };
}

const memorySet = (): SetOnStore => ({ store: memoryStore(), zone: "zone-a", setId: SET });

describe("a set's index with cloud backups", () => {
  test("without cloud backups an index is written as version 1, with them as 2; both read back", async () => {
    const set = memorySet();
    const plain = declaredIndex(2, false);
    await writeSetIndex(set, plain);
    const v1 = await readSetIndex(set);
    expect(v1.index).toEqual({ ...plain, schemaVersion: 1 });

    await writeSetIndex(set, declaredIndex(2, true));
    const v2 = await readSetIndex(set);
    expect(v2.index).toEqual(declaredIndex(2, true));
    expect(v2.index!.points[1]).toMatchObject({
      dependsOn: [FULL],
      cloud: { project, backups: [{ id: "bk-incr", parent: "bk-full", kind: "cinder-backup", source: "data" }] },
    });
  });

  test("an index written by an older Coffer (version 1, string dependsOn) still reads", async () => {
    const set = memorySet();
    const older = { ...declaredIndex(2, false), schemaVersion: 1 };
    const text = JSON.stringify({ ...older, points: [{ ...older.points[0], dependsOn: FULL }] });
    await set.store.writeTextAtomic(targetLayout.setIndex(set.zone, set.setId), text);
    const { index, problem } = await readSetIndex(set);
    expect(problem).toBeUndefined();
    expect(index?.points[0].dependsOn).toBe(FULL);
    expect(index?.schemaVersion).toBe(1);
  });

  test("a rebuild recovers each point's Cinder backups, their project, and what builds on what", async () => {
    const set = memorySet();
    await writeManifests(set);
    const rebuilt = await rebuildSetIndex(set);
    expect(rebuilt.points.map((p) => [p.id, p.status, p.dependsOn])).toEqual([
      [FULL, "unchecked", undefined],
      [INCR, "unchecked", [FULL]],
      [NEWEST, "unchecked", undefined],
    ]);
    expect(rebuilt.points[1].cloud).toEqual({
      project,
      backups: [{ source: "data", kind: "cinder-backup", id: "bk-incr", parent: "bk-full" }],
    });
  });

  test("a version 1 index that lacks the cloud backups gets them from the manifests", async () => {
    const set = memorySet();
    await writeManifests(set);
    await writeSetIndex(set, declaredIndex(1, false));
    const { index } = await currentSetIndex(set);
    expect(index.points.map((p) => [p.id, p.status, p.dependsOn, p.cloud?.backups.map((b) => b.id)])).toEqual([
      [FULL, "ok", undefined, ["bk-full"]],
      [INCR, "ok", [FULL], ["bk-incr"]],
      [NEWEST, "ok", undefined, ["bk-new"]],
    ]);
  });
});

describe("coffer prune's plan with incrementals", () => {
  const now = new Date("2026-11-23T00:00:00Z");

  test("a full an incremental still needs stays, with the reason; a whole chain goes incremental first", () => {
    const { plan } = planPrune(declaredIndex(2, true), { now });
    expect(plan.keep.map((k) => [k.point.id, k.reasons])).toEqual([
      [NEWEST, ["keepLast (1 of 2)", "newest good point"]],
      [INCR, ["keepLast (2 of 2)"]],
      [FULL, [`needed by ${INCR}`]],
    ]);
    expect(plan.prune).toEqual([]);

    const both = planPrune(declaredIndex(1, true), { now });
    expect(both.plan.prune.map((p) => p.point.id)).toEqual([INCR, FULL]);
  });

  test("--point refuses a full an incremental needs, naming it; the incremental itself may go", () => {
    expect(() => planPrune(declaredIndex(3, true), { point: FULL, now })).toThrow(
      `point ${FULL} is needed by ${INCR}: their incrementals build on its backups; ` +
        "prune those first, or let retention prune them together",
    );
    const { plan } = planPrune(declaredIndex(3, true), { point: INCR, now });
    expect(plan.prune.map((p) => [p.point.id, p.reason])).toEqual([[INCR, "named with --point"]]);
  });
});

describe("coffer prune deletes a point's Cinder backups before its folder", () => {
  const tempDir = useTempDir();
  const now = new Date("2026-11-23T00:00:00Z");

  /** A directory target with the three points and their index (keepLast 1: the chain goes). */
  async function target() {
    const dir = path.join(tempDir(), "target");
    await makeTarget(dir);
    const setDir = path.join(dir, "sets", "zone-a", SET);
    const set = setAt(dir, path.join(dir, "sets", "zone-a", SET));
    await writeManifests(set);
    await writeSetIndex(set, declaredIndex(1, true));
    return { dir, setDir, set };
  }

  /** A cloud whose Cinder deletes each backup (`refuse`: these it refuses), recording the order. */
  function cloud(refuse: string[] = []) {
    const deleted: string[] = [];
    const gone = new Set<string>();
    const cinder = {
      async deleteBackup(id: string) {
        if (refuse.includes(id)) throw new CofferError("CLOUD_BAD_REQUEST", `cinder refused to delete backup ${id}`);
        deleted.push(id);
        gone.add(id);
      },
      async getBackup(id: string) {
        if (gone.has(id)) throw new CofferError("CLOUD_NOT_FOUND", `no backup ${id}`);
        return { id, status: "deleting" };
      },
    };
    const access = { cloud: { cinder }, project, waits: { now: () => Date.now(), sleep: async () => undefined } };
    return { deleted, access: async () => access as unknown as CloudProjectAccess };
  }

  const options = (dir: string, access: () => Promise<CloudProjectAccess>, dryRun = false) => ({
    target: dir,
    zone: "zone-a",
    set: SET,
    dryRun,
    now,
    by: "unit test",
    cloud: access,
  });

  test("dry-run names the backups and deletes nothing; then the chain goes, children first, recorded", async () => {
    const { dir, setDir, set } = await target();
    const { deleted, access } = cloud();
    const dry = await prunePoints(options(dir, access, true));
    expect(dry.prune).toEqual([
      { point: INCR, reason: expect.any(String), cloudBackups: ["bk-incr"] },
      { point: FULL, reason: expect.any(String), cloudBackups: ["bk-full"] },
    ]);
    expect(renderPrune(dry, true)).toContain(`would prune ${INCR}: `);
    expect(renderPrune(dry, true)).toContain("would delete its Cinder backups bk-incr");
    expect(deleted).toEqual([]);

    const result = await prunePoints(options(dir, access));
    expect(deleted).toEqual(["bk-incr", "bk-full"]);
    expect(result.deleted).toEqual([INCR, FULL]);
    expect(result.cloudBackups).toEqual({
      deleted: [
        { point: INCR, ids: ["bk-incr"] },
        { point: FULL, ids: ["bk-full"] },
      ],
      kept: [],
    });
    expect((await fs.readdir(setDir)).filter((e) => e !== "index.json")).toEqual([NEWEST]);
    const { index } = await readSetIndex(set);
    expect(index?.points.map((p) => p.id)).toEqual([NEWEST]);
    expect(index?.pruned).toEqual([
      { id: INCR, prunedAt: now.toISOString(), by: "unit test", cloudBackups: ["bk-incr"] },
      { id: FULL, prunedAt: now.toISOString(), by: "unit test", cloudBackups: ["bk-full"] },
    ]);
  });

  test("a backup Cinder won't delete keeps its point's folder and its base's; the output says so", async () => {
    const { dir, setDir, set } = await target();
    const { deleted, access } = cloud(["bk-incr"]);
    const result = await prunePoints(options(dir, access));
    expect(deleted).toEqual([]);
    expect(result.deleted).toEqual([]);
    expect(result.cloudBackups.kept).toEqual([
      {
        point: INCR,
        ids: ["bk-incr"],
        project,
        problem: expect.stringContaining("cinder refused to delete backup bk-incr"),
      },
      { point: FULL, ids: ["bk-full"], project, problem: `kept: point ${INCR} builds on it and was not deleted` },
    ]);
    expect(renderPrune(result, false)).toContain(
      `not pruned ${INCR}: its Cinder backups bk-incr (project p-1 at ${project.authUrl}) could not all be deleted`,
    );
    expect((await fs.readdir(setDir)).sort()).toEqual([FULL, INCR, NEWEST, "index.json"].sort());
    expect((await readSetIndex(set)).index?.points).toHaveLength(3);
  });

  test("no cloud to sign in to: the points with Cinder backups stay, the error named", async () => {
    const { dir, setDir } = await target();
    const unreachable = async (): Promise<CloudProjectAccess> => {
      throw new CofferError("CLOUD_CONFIG_INVALID", "no cloud: set OS_AUTH_URL or OS_CLOUD");
    };
    const result = await prunePoints(options(dir, unreachable));
    expect(result.deleted).toEqual([]);
    expect(result.cloudBackups.kept.map((k) => [k.point, k.problem])).toEqual([
      [INCR, "no cloud: set OS_AUTH_URL or OS_CLOUD"],
      [FULL, `kept: point ${INCR} builds on it and was not deleted`],
    ]);
    expect((await fs.readdir(setDir)).length).toBe(4);
  });
});
