/**
 * `coffer prune` on points with Cinder backups, as a user runs it (the CLI, OS_* credentials),
 * against the real loopback cloud: it names the backups, keeps a full an incremental needs, and
 * deletes the backups (incrementals first) before the folders.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { readSetIndex, setAt } from "../../provider/agent/pointIndex";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import { waitForVolume } from "../../provider/openstack";
import { cloudAs, cloudSetHost, deleteTestResources, osEnvFor, writeVolumeBytes } from "../support/cloudAccess";
import { runCoffer } from "../support/cofferCli";
import { cloudMissingNote, loopbackCloud } from "../support/loopbackCloud";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(15 * 60_000);

const cloud = loopbackCloud();
const describeCloud = cloud ? describe : describe.skip;
const unique = `coffer-prune-${randomUUID().slice(0, 8)}`;
const MANIFEST_KEY = "Y2xvdWQtcHJ1bmUtbWFuaWZlc3Qta2V5LTAwMDAwMDA=";
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const waits = { timeoutMs: 300_000, deps: { now: () => Date.now(), sleep } };

describeCloud(cloud ? "coffer prune of points with Cinder backups, on the loopback cloud" : cloudMissingNote, () => {
  const tempDir = useTempDir();
  const volumes: string[] = [];

  afterAll(async () => {
    await deleteTestResources(cloud!, unique, volumes);
  });

  test("dry-run names backups; a needed full is refused; retention deletes the backups, then folders", async () => {
    const { cinder } = cloudAs(cloud!);
    const created = await cinder.createVolume({ size: 1, name: `${unique}-vol` });
    volumes.push(created.id);
    await waitForVolume(cinder, created.id, waits);
    await writeVolumeBytes(cloud!, created.id, 0, randomBytes(4096));

    // Three points taken by the provider: a full, an incremental on it, and a newer full.
    const provider = createBackupSetProvider(cloudSetHost(cloud!));
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const declared = async (n: number, incremental: boolean) => {
      const inputs = {
        policy: {
          id: "zone-p-1",
          zone: "zone-p",
          target: { kind: "directory", path: target },
          compression: "zstd",
          integrityCheck: "metadata",
          bandwidthLimitMiBps: 0,
          encrypted: false,
        },
        keys: { manifestKey: MANIFEST_KEY },
        sources: [{ name: "data", cinderVolume: created.id, incremental }],
        // The set id starts with the trigger: backups' names carry it, so cleanup finds them.
        trigger: `${unique}-${n}`,
      };
      const checked = await provider.check({}, inputs);
      expect(checked.failures).toBeUndefined();
      return checked.inputs!;
    };
    let state = (await provider.create(await declared(1, true))).outs as BackupSetOutputs;
    await writeVolumeBytes(cloud!, created.id, 65536, randomBytes(4096));
    state = (await provider.update(state.setId, state as never, await declared(2, true))).outs as BackupSetOutputs;
    state = (await provider.update(state.setId, state as never, await declared(3, false))).outs as BackupSetOutputs;
    const [full, incremental, newest] = state.points;
    expect(incremental.dependsOn).toEqual([full.id]);
    const [fullBackup, incrementalBackup] = [full.cloud![0].id, incremental.cloud![0].id];
    const setDir = path.join(target, "sets", "zone-p", state.setId);
    const set = setAt(target, setDir);
    // The provider's index records the backups and what builds on what.
    const written = (await readSetIndex(set)).index!;
    expect(written.schemaVersion).toBe(2);
    expect(written.points.find((p) => p.id === incremental.id)).toMatchObject({
      dependsOn: [full.id],
      cloud: { project: { projectId: expect.any(String) }, backups: [{ id: incrementalBackup, parent: fullBackup }] },
    });

    const prune = ["prune", "--target", target, "--zone", "zone-p", "--set", state.setId];
    const env = osEnvFor(cloud!);
    const dry = await runCoffer([...prune, "--keep-last", "1", "--dry-run"], env);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`would prune ${incremental.id}: `);
    expect(dry.stdout).toContain(`would delete its Cinder backups ${incrementalBackup}`);
    expect(dry.stdout).toContain(`would delete its Cinder backups ${fullBackup}`);
    expect(await cinder.getBackup(fullBackup)).toMatchObject({ status: "available" });
    expect(await cinder.getBackup(incrementalBackup)).toMatchObject({ status: "available" });

    // The full alone, while the incremental lives: refused, naming it; nothing deleted.
    const refused = await runCoffer([...prune, "--point", full.id], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`point ${full.id} is needed by ${incremental.id}`);
    expect(await cinder.getBackup(fullBackup)).toMatchObject({ status: "available" });
    expect(await fs.readdir(setDir)).toContain(full.id);

    // Retention: the incremental's backup, then the full's (Cinder refuses the other order), then the folders.
    const pruned = await runCoffer([...prune, "--keep-last", "1", "--json"], env);
    expect(pruned.code).toBe(0);
    const result = JSON.parse(pruned.stdout);
    expect(result.deleted).toEqual([incremental.id, full.id]);
    expect(result.cloudBackups).toEqual({
      deleted: [
        { point: incremental.id, ids: [incrementalBackup] },
        { point: full.id, ids: [fullBackup] },
      ],
      kept: [],
    });
    for (const id of [incrementalBackup, fullBackup]) {
      await expect(cinder.getBackup(id)).rejects.toMatchObject({ code: "CLOUD_NOT_FOUND" });
    }
    expect(await cinder.getBackup(newest.cloud![0].id)).toMatchObject({ status: "available" });
    expect((await fs.readdir(setDir)).filter((e) => e !== "index.json")).toEqual([newest.id]);
    const after = (await readSetIndex(set)).index!;
    expect(after.points.map((p) => p.id)).toEqual([newest.id]);
    expect(after.pruned).toEqual([
      { id: incremental.id, prunedAt: expect.any(String), by: expect.any(String), cloudBackups: [incrementalBackup] },
      { id: full.id, prunedAt: expect.any(String), by: expect.any(String), cloudBackups: [fullBackup] },
    ]);
  });
});
