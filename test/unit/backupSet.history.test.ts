import { provider as checker } from "../../provider/backupSet";
import { describeChange, planSetChange } from "../../provider/backupSet/change";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import {
  BackupSetOutputs,
  PointRecord,
  SET_SCHEMA_VERSION,
  itemsDigest,
  upgradeOutputs,
} from "../../provider/backupSet/state";
import { UNKNOWN } from "../../provider/common/check";
import { fakeAgent } from "../support/fakeAgent";

// Each point wraps its own key with a real scrypt (about 0.9 s of CPU): a test of four points on a busy
// 2-core machine passes Jest's 5 s default.
jest.setTimeout(30_000);

const HOUR = 3_600_000;
const policy = {
  id: "zone-a-1",
  zone: "zone-a",
  target: { kind: "directory", path: "/srv/b" },
  compression: "zstd",
  integrityCheck: "full",
  bandwidthLimitMiBps: 0,
  encrypted: true,
};
const declared = {
  policy,
  keys: { passphrase: "first passphrase, long enough" },
  sources: [{ name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.raw" }],
  trigger: "2026-11-24",
};

async function checked(change: Record<string, unknown> = {}) {
  const result = await checker.check({}, { __provider: "x", ...declared, ...change });
  expect(result.failures).toBeUndefined();
  return result.inputs as Record<string, unknown>;
}

/** A provider over the fake agent, with a clock the test moves. */
function world(start = Date.parse("2026-11-26T03:00:00Z")) {
  let now = start;
  const agent = fakeAgent({ now: () => new Date(now) });
  const provider = createBackupSetProvider(agent.host);
  let state: BackupSetOutputs;
  return {
    agent,
    provider,
    advance: (ms: number) => (now += ms),
    get state() {
      return state;
    },
    async create(change: Record<string, unknown> = {}) {
      const { outs } = await provider.create(await checked(change));
      return (state = outs as BackupSetOutputs);
    },
    /** What `pulumi up` does: diff, then update when it says so. */
    async up(change: Record<string, unknown> = {}) {
      const news = await checked(change);
      agent.notes.length = 0;
      const diff = await provider.diff(state.setId, state, news);
      if (diff.changes) state = (await provider.update(state.setId, state, news)).outs as BackupSetOutputs;
      return diff;
    },
    async refresh() {
      const { props } = await provider.read(state.setId, state);
      return (state = props as BackupSetOutputs);
    },
  };
}

const ids = (state: BackupSetOutputs) => state.points.map((p) => p.id);

describe("an EncryptedBackupSet's history of points", () => {
  test("create takes the first point in the set's folder and indexes it; an unchanged set plans nothing", async () => {
    const w = world();
    const state = await w.create();
    expect(state).toMatchObject({
      setId: "nightly-1a2b3c4d",
      keyVersion: 1,
      keyring: [],
      schemaVersion: SET_SCHEMA_VERSION,
    });
    expect(state.points).toEqual([expect.objectContaining({ id: "p001", status: "ok", loc: 0, key: 1 })]);
    expect(state.locations).toEqual([
      { targetPath: "/srv/b", targetId: "target-1", zone: "zone-a", manifestHost: "local", hosts: ["local"] },
    ]);
    expect(state.manifestPath).toBe("/srv/b/sets/zone-a/nightly-1a2b3c4d/p001/manifest.json");
    expect(w.agent.indexes.get("/srv/b/sets/zone-a/nightly-1a2b3c4d")?.points.map((p) => p.id)).toEqual(["p001"]);
    expect(await w.up()).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
    expect(w.agent.notes).toEqual([]);
  });

  test("a new trigger or a due schedule takes a point by update: the set keeps its id, and preview says why", async () => {
    const w = world();
    await w.create({ schedule: { every: "24h" } });
    w.advance(23 * HOUR);
    expect((await w.up({ schedule: { every: "24h" } })).changes).toBe(false);
    w.advance(3 * HOUR);
    const diff = await w.up({ schedule: { every: "24h" } });
    expect(diff).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    expect(w.agent.notes).toEqual(["set nightly-1a2b3c4d: takes a point: last point 26 h ago; every 24h"]);
    await w.up({ schedule: { every: "24h" }, trigger: "2026-11-27" });
    expect(w.agent.notes[0]).toMatch(/takes a point: trigger changed$/);
    expect(w.state.setId).toBe("nightly-1a2b3c4d");
    expect(ids(w.state)).toEqual(["p001", "p002", "p003"]);
  });

  test("policy and source changes apply from the next point and never touch the points taken", async () => {
    const w = world();
    await w.create();
    const diff = await w.up({ policy: { ...policy, compression: "zlib" } });
    expect(diff.changes).toBe(true);
    expect(w.agent.notes).toEqual([
      "set nightly-1a2b3c4d: policy changed: applies from the next point; no point taken is changed",
    ]);
    expect(
      w.agent.calls.filter((c) => ["backup-item", "delete-set", "delete-points"].includes(c.command)),
    ).toHaveLength(1);
    await w.up({ policy: { ...policy, compression: "zlib" }, trigger: "t2" });
    const backups = w.agent.calls.filter((c) => c.command === "backup-item");
    expect(backups.map((c) => c.request.compression)).toEqual(["zstd", "zlib"]);
    expect(w.agent.calls.some((c) => c.command.startsWith("delete-"))).toBe(false);
  });

  test("the policy's copyToTarget switched on applies from the next point: no point taken, none touched", async () => {
    const w = world();
    await w.create();
    const points = w.state.points;
    const diff = await w.up({ policy: { ...policy, copyToTarget: true } });
    expect(diff).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    expect(w.agent.notes).toEqual([
      "set nightly-1a2b3c4d: policy changed: applies from the next point; no point taken is changed",
    ]);
    expect(w.state.points).toEqual(points);
    expect(w.agent.calls.filter((c) => c.command === "backup-item")).toHaveLength(1);
    expect(await w.up({ policy: { ...policy, copyToTarget: true } })).toMatchObject({ changes: false });
  });

  test("a rotated passphrase is kept for the points made with it until the last of them is pruned", async () => {
    const w = world();
    const old = declared.keys.passphrase;
    const rotated = { keys: { passphrase: "second passphrase, long enough" } };
    await w.create();
    await w.up({ ...rotated });
    expect(w.state).toMatchObject({ keyVersion: 2, keyring: [{ version: 1, passphrase: old }] });
    expect(w.state.points.map((p) => p.key)).toEqual([1]);
    await w.up({ ...rotated, trigger: "t2" });
    expect(w.state.points.map((p) => p.key)).toEqual([1, 2]);
    // Every point verifies with its own key.
    w.advance(31 * 24 * HOUR);
    await w.refresh();
    const verifies = w.agent.calls.filter((c) => c.command === "verify-set");
    expect(verifies.map((c) => [c.request.setDir.split("/").pop(), c.request.keys.passphrase])).toEqual([
      ["p001", old],
      ["p002", rotated.keys.passphrase],
    ]);
    // Pruning p001 drops the old key from state.
    const keepLast1 = { history: { retention: { keepLast: 1 } }, ...rotated };
    await w.up({ ...keepLast1, trigger: "t3" });
    expect(ids(w.state)).toEqual(["p003"]);
    expect(w.state.keyring).toEqual([]);
  });

  test("retention prunes after the new point verifies, and preview names the points first", async () => {
    const w = world();
    const rules = { history: { retention: { keepLast: 2 } } };
    await w.create(rules);
    for (const trigger of ["t2", "t3"]) {
      w.advance(HOUR);
      await w.up({ ...rules, trigger });
    }
    expect(ids(w.state)).toEqual(["p002", "p003"]);
    w.advance(HOUR);
    await w.up({ ...rules, trigger: "t4" });
    expect(w.agent.notes).toEqual([
      "set nightly-1a2b3c4d: takes a point: trigger changed",
      expect.stringMatching(
        /^set nightly-1a2b3c4d: after the new point verifies, prunes 1 point\(s\) by retention: p002 \(2 h old, 4.0 KiB\)$/,
      ),
    ]);
    expect(ids(w.state)).toEqual(["p003", "p004"]);
    const deleted = w.agent.calls.filter((c) => c.command === "delete-points").flatMap((c) => c.request.pointDirs);
    expect(deleted).toEqual(["/srv/b/sets/zone-a/nightly-1a2b3c4d/p001", "/srv/b/sets/zone-a/nightly-1a2b3c4d/p002"]);
  });

  test("state written by release 0.3 (schema 3, made by its own code) reads, and the same inputs change nothing", () => {
    // test/fixtures/state-0.3-set.json: the outputs of a create and an update by release 0.3's provider.
    const fixture = JSON.parse(readFileSync(path.join(__dirname, "../fixtures/state-0.3-set.json"), "utf8"));
    expect(fixture.outs.schemaVersion).toBe(3);
    const state = upgradeOutputs(fixture.outs);
    expect(state.schemaVersion).toBe(SET_SCHEMA_VERSION);
    expect(state.points.map((p) => p.id)).toEqual(fixture.outs.points.map((p: { id: string }) => p.id));
    expect(state.points.every((p) => p.cloud === undefined && p.dependsOn === undefined)).toBe(true);
    // The newest point's items still digest to what state recorded: refresh finds no difference.
    expect(itemsDigest(state.items)).toBe(state.points.at(-1)!.itemsSha256);
    const { policy, history, keys, sources, trigger, concurrency } = fixture.outs;
    const change = planSetChange(state, { policy, history, keys, sources, trigger, concurrency }, new Date());
    expect(change).toMatchObject({ changes: false, prune: [], fromNextPoint: [], setSettings: [] });
    expect(change.take).toBeUndefined();
  });

  test("preview names the cloud backups a pruned point deletes", () => {
    const point = (id: string, sizeBytes: number, cloud?: PointRecord["cloud"]): PointRecord => ({
      id,
      takenAt: "2026-11-25T03:00:00Z",
      loc: 0,
      sizeBytes,
      itemsSha256: "",
      key: 1,
      status: "ok",
      checkedAt: "2026-11-25T03:00:00Z",
      ...(cloud ? { cloud } : {}),
    });
    const change = {
      changes: true,
      prune: [
        point("p1", 0, [{ source: "data", kind: "cinder-backup", id: "b-1" }]),
        point("p2", 4096, [
          { source: "data", kind: "cinder-backup", id: "b-2" },
          { source: "logs", kind: "cinder-backup", id: "b-3" },
        ]),
      ],
      merge: [],
      fromNextPoint: [],
      setSettings: [],
      unknown: [],
      strayHolds: [],
    };
    expect(describeChange("s", change, new Date("2026-11-26T03:00:00Z"))).toEqual([
      "set s: prunes 2 point(s) by retention: p1 (24 h old, cinder backup b-1), " +
        "p2 (24 h old, 4.0 KiB and cinder backups b-2, b-3)",
    ]);
  });

  test("a held point is never pruned; a failed point is evidence: kept, named as drift, and the next up takes a point", async () => {
    const w = world();
    const rules = { history: { retention: { keepLast: 1 } } };
    await w.create(rules);
    const holds = [{ point: "p001", reason: "case 4711" }];
    await w.up({ ...rules, holds: [...holds, { point: "p0", reason: "typo" }], trigger: "t2" });
    expect(w.agent.notes).toContain(
      "set nightly-1a2b3c4d: holds names point p0, which this set does not have: it holds nothing (see coffer list)",
    );
    await w.up({ ...rules, holds, trigger: "t3" });
    expect(ids(w.state)).toEqual(["p001", "p003"]);
    w.agent.damaged.set("/srv/b/sets/zone-a/nightly-1a2b3c4d/p003", "item web-1-root: the guest data differs");
    await w.refresh();
    expect(w.state.verification).toMatchObject({
      status: "failed",
      failures: ["point p003: item web-1-root: the guest data differs"],
    });
    const diff = await w.up({ ...rules, holds, trigger: "t3" });
    expect(diff.changes).toBe(true);
    expect(w.agent.notes[0]).toBe("set nightly-1a2b3c4d: takes a point: the newest point failed");
    expect(ids(w.state)).toEqual(["p001", "p003", "p004"]);
    expect(w.state.points.find((p) => p.id === "p003")?.status).toBe("failed");
  });

  test("refresh re-verifies the newest point every time and older ones after reverifyAfterDays", async () => {
    const w = world();
    const history = { history: { reverifyAfterDays: 7 } };
    await w.create(history);
    await w.up({ ...history, trigger: "t2" });
    w.agent.calls.length = 0;
    w.advance(24 * HOUR);
    await w.refresh();
    const checked = () => w.agent.calls.filter((c) => c.command === "verify-set").map((c) => c.request.setDir);
    expect(checked()).toEqual(["/srv/b/sets/zone-a/nightly-1a2b3c4d/p002"]);
    w.agent.calls.length = 0;
    w.advance(7 * 24 * HOUR);
    await w.refresh();
    expect(checked()).toHaveLength(2);
  });

  test("rpoHours: refresh shows an overdue set, and the next up takes a point", async () => {
    const w = world();
    const rpo = { history: { rpoHours: 24 } };
    await w.create(rpo);
    w.advance(25 * HOUR);
    await w.refresh();
    expect(w.state.overdue).toBe(true);
    await w.up(rpo);
    expect(w.agent.notes[0]).toMatch(/takes a point: newest good point 25 h ago exceeds rpoHours 24/);
    expect(w.state.overdue).toBe(false);
  });

  test("destroy keeps the points by default and says where; deleteBackupsOnDestroy deletes the unheld ones", async () => {
    const w = world();
    await w.create();
    await w.up({ trigger: "t2" });
    await w.provider.delete(w.state.setId, w.state);
    expect(w.agent.calls.some((c) => c.command.startsWith("delete-"))).toBe(false);
    expect(w.agent.notes.at(-1)).toMatch(
      /^set nightly-1a2b3c4d: keeps its 2 point\(s\) \(8\.0 KiB\) in \/srv\/b\/sets\/zone-a\/nightly-1a2b3c4d; see them with coffer list --target \/srv\/b --set nightly-1a2b3c4d$/,
    );
    const holds = [{ point: "p001", reason: "case 4711" }];
    await w.up({ trigger: "t2", holds, deleteBackupsOnDestroy: true });
    await w.provider.delete(w.state.setId, w.state);
    expect(w.agent.calls.filter((c) => c.command === "delete-points").flatMap((c) => c.request.pointDirs)).toEqual([
      "/srv/b/sets/zone-a/nightly-1a2b3c4d/p002",
    ]);
    expect(w.agent.notes.at(-1)).toBe("set nightly-1a2b3c4d: keeps 1 held point(s): p001");
  });

  test("a point that can't be deleted everywhere stays in state, named; the up still records its new point", async () => {
    const w = world();
    const rules = { history: { retention: { keepLast: 1 } } };
    await w.create({ ...rules, host: "kvm-07" });
    w.agent.unreachable.add("kvm-07");
    await w.up({ ...rules, trigger: "t2" });
    expect(ids(w.state)).toEqual(["p001", "p002"]);
    expect(w.agent.notes.at(-1)).toMatch(
      /^point p001: not deleted \(.*kvm-07.*\); it stays, and the next up tries again$/,
    );
    w.agent.unreachable.clear();
    expect((await w.up({ ...rules, trigger: "t2" })).changes).toBe(true);
    expect(w.agent.notes).toEqual([
      expect.stringMatching(/^set nightly-1a2b3c4d: prunes 1 point\(s\) by retention: p001 /),
    ]);
    expect(ids(w.state)).toEqual(["p002"]);
  });

  test("a point pruned without Pulumi (coffer prune) leaves state on refresh, named; one lost shows as missing", async () => {
    const w = world();
    await w.create();
    await w.up({ trigger: "t2" });
    await w.up({ trigger: "t3" });
    const setDir = "/srv/b/sets/zone-a/nightly-1a2b3c4d";
    const index = w.agent.indexes.get(setDir)!;
    w.agent.indexes.set(setDir, {
      ...index,
      pruned: [{ id: "p001", prunedAt: "2026-11-26T04:00:00Z", by: "coffer prune" }],
    });
    w.agent.manifests.delete(`${setDir}/p001`);
    w.agent.manifests.delete(`${setDir}/p002`);
    await w.refresh();
    expect(ids(w.state)).toEqual(["p002", "p003"]);
    expect(w.agent.notes).toContain("point p001: pruned on 2026-11-26T04:00:00Z by coffer prune: dropped from state");
    expect(w.state.points[0]).toMatchObject({ id: "p002", status: "missing" });
    expect(w.state.verification.status).toBe("missing");
  });

  test("an unknown trigger or retention during preview is said, not guessed", async () => {
    const w = world();
    await w.create({ history: { retention: { keepLast: 1 } } });
    const change = planSetChange(
      w.state,
      { ...(await checked()), trigger: UNKNOWN, history: UNKNOWN } as never,
      new Date(Date.parse("2026-11-27T03:00:00Z")),
    );
    expect(change).toMatchObject({ changes: true, prune: [], unknown: ["trigger", "rpoHours", "retention"] });
  });
});

describe("state written by the previous release (one set, one backup)", () => {
  const previous = {
    ...declared,
    policy,
    concurrency: 2,
    escrow: { recordId: "gold", store: "/srv/escrow", escrowsPassphrase: true, version: 3 },
    schemaVersion: 2,
    setId: "2026-11-24-0a1b2c3d",
    setDir: "/srv/b/sets/zone-a/2026-11-24-0a1b2c3d",
    manifestPath: "/srv/b/sets/zone-a/2026-11-24-0a1b2c3d/manifest.json",
    manifestHost: "local",
    items: [
      {
        name: "web-1-root",
        host: "kvm-01",
        source: { kind: "disk", path: "/var/lib/libvirt/images/web-1.raw", format: "raw" },
        file: "web-1-root.qcow2.luks",
        format: "qcow2-in-luks",
        compression: "zstd",
        encrypted: true,
        virtualSize: 8388608,
        sizeBytes: 1234567,
        streamSha256: "a".repeat(64),
        fileSha256: "b".repeat(64),
        verifiedAtBackup: "full",
        startedAt: "2026-11-24T03:00:00.000Z",
        finishedAt: "2026-11-24T03:01:00.000Z",
        via: "local",
      },
    ],
    verification: { status: "ok", checkedAt: "2026-11-25T03:00:00.000Z", level: "full", failures: [] },
    targetId: "target-1",
  };

  test("reads as a set with one point, the backup kept where it is", () => {
    const state = upgradeOutputs(previous as never);
    expect(state.points).toEqual([
      {
        id: "2026-11-24-0a1b2c3d",
        takenAt: "2026-11-24T03:01:00.000Z",
        loc: 0,
        sizeBytes: 1234567,
        itemsSha256: expect.stringMatching(/^[0-9a-f]{64}$/),
        key: 1,
        escrowVersion: 3,
        status: "ok",
        checkedAt: "2026-11-25T03:00:00.000Z",
      },
    ]);
    expect(state.locations).toEqual([
      {
        targetPath: "/srv/b",
        targetId: "target-1",
        zone: "zone-a",
        manifestHost: "local",
        hosts: ["local"],
        escrow: { recordId: "gold", store: "/srv/escrow" },
      },
    ]);
    expect(state.escrow).toEqual({ recordId: "gold", store: "/srv/escrow", escrowsPassphrase: true });
    expect(state).toMatchObject({
      keyVersion: 1,
      keyring: [],
      setDir: previous.setDir,
      schemaVersion: SET_SCHEMA_VERSION,
    });
  });

  test("an unchanged declaration plans nothing; a new trigger takes a second point beside the first", async () => {
    const w = world();
    const state = upgradeOutputs(previous as never);
    w.agent.manifests.set(previous.setDir, { setId: previous.setId, items: previous.items } as never);
    const news = await checked({ escrow: { recordId: "gold", store: "/srv/escrow", escrowsPassphrase: true } });
    expect(await w.provider.diff(state.setId, previous as never, news)).toMatchObject({ changes: false });
    const { outs } = await w.provider.update(state.setId, previous as never, { ...(await checked()), trigger: "t2" });
    expect((outs as BackupSetOutputs).points.map((p) => [p.id, p.status])).toEqual([
      ["2026-11-24-0a1b2c3d", "ok"],
      ["p001", "ok"],
    ]);
    expect(w.agent.calls.some((c) => c.command.startsWith("delete-"))).toBe(false);
  });
});
