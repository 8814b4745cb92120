/**
 * RestoreDrill's cinderScratch on the loopback cloud: a point whose only backup is Cinder's is
 * drilled by restoring that backup into a scratch volume, which is deleted afterwards.
 */
import { randomBytes, randomUUID } from "node:crypto";
import * as path from "node:path";
import { agentClient } from "../../provider/backupSet/agentClient";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import { collect, waitForBackupDeleted, waitForVolume } from "../../provider/openstack";
import { createRestoreDrillProvider } from "../../provider/restoreDrill/provider";
import { cloudAccess, cloudAs, cloudSetHost, deleteTestResources, writeVolumeBytes } from "../support/cloudAccess";
import { cloudMissingNote, loopbackCloud } from "../support/loopbackCloud";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(15 * 60_000);

const cloud = loopbackCloud();
const describeCloud = cloud ? describe : describe.skip;
const unique = `coffer-test-${randomUUID().slice(0, 8)}`;
const MANIFEST_KEY = "Y2xvdWQtdGVzdC1tYW5pZmVzdC1rZXktMDAwMDAwMDA=";
const waits = { timeoutMs: 300_000, deps: { now: () => Date.now(), sleep: (ms: number) => sleep(ms) } };
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describeCloud(cloud ? "RestoreDrill of Cinder backups, on the loopback cloud" : cloudMissingNote, () => {
  const tempDir = useTempDir();
  const volumes: string[] = [];

  afterAll(async () => {
    // The scratch volumes are named after the set, whose id starts with `unique`: none may stay.
    const { cinder } = cloudAs(cloud!);
    const left = (await collect(cinder.listVolumes())).filter((v) => v.name?.includes(unique)).map((v) => v.id);
    await deleteTestResources(cloud!, unique, [...new Set([...volumes, ...left])]);
  });

  test("cinderScratch: the Cinder backup into a scratch volume, deleted after; a lost backup is named", async () => {
    const { cinder } = cloudAs(cloud!);
    const volume = await cinder.createVolume({ size: 1, name: `${unique}-vol` });
    volumes.push(volume.id);
    await waitForVolume(cinder, volume.id, waits);
    await writeVolumeBytes(cloud!, volume.id, 0, randomBytes(4096));

    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const setProvider = createBackupSetProvider(cloudSetHost(cloud!));
    const checkedSet = await setProvider.check(
      {},
      {
        policy: {
          id: "zone-d-1",
          zone: "zone-d",
          target: { kind: "directory", path: target },
          compression: "zstd",
          integrityCheck: "metadata",
          bandwidthLimitMiBps: 0,
          encrypted: false,
        },
        keys: { manifestKey: MANIFEST_KEY },
        sources: [{ name: "data", cinderVolume: volume.id }],
        // The set id starts with the trigger: backups' and scratch volumes' names carry it.
        trigger: `${unique}-1`,
      },
    );
    expect(checkedSet.failures).toBeUndefined();
    const set = (await setProvider.create(checkedSet.inputs)).outs;
    const pointId = set.points[0].id;

    const progress: string[] = [];
    const access = cloudAccess(cloud!);
    const provider = createRestoreDrillProvider({
      agent: agentClient,
      now: () => new Date(),
      random: Math.random,
      progress: (line) => progress.push(line),
      cloud: () => access,
    });
    const inputs = (cinderScratch: boolean) => ({
      sets: [{ name: "volumes", setId: set.setId, points: set.points, locations: set.locations }],
      keys: [{ setId: set.setId, keyVersion: set.keyVersion, keys: set.keys, keyring: set.keyring }],
      cinderScratch,
    });
    const checked = async (news: object) => {
      const result = await provider.check({}, news as Record<string, unknown>);
      expect(result.failures).toBeUndefined();
      return result.inputs as Record<string, unknown>;
    };

    // Without a scratch volume nothing of this point can be drilled: that fails, and says what to do.
    const error = await provider.create(await checked(inputs(false))).catch((e) => e);
    expect(error.message).toMatch(
      new RegExp(`point ${pointId}: hash: nothing of the point is in the target \\(only Cinder holds data\\)`),
    );

    const { outs } = await provider.create(await checked(inputs(true)));
    expect(outs.results[0]).toMatchObject({
      setId: set.setId,
      pointId,
      ok: true,
      checks: { manifest: "ok", hash: "skipped", qemuImgCheck: "skipped", cinderScratch: "ok" },
      items: [],
      notDrilled: [{ item: "data", reason: expect.stringMatching(/only the cloud holds its backup/) }],
    });
    expect(progress.some((line) => /scratch volume .* is available/.test(line))).toBe(true);
    // The scratch volume is gone; the source volume and its backup stay.
    const named = (await collect(cinder.listVolumes())).filter((v) => v.name?.startsWith("coffer-drill"));
    expect(named.filter((v) => v.name!.includes(set.setId))).toEqual([]);
    expect((await cinder.getVolume(volume.id)).status).toBe("available");
    const backupId = set.points[0].cloud[0].id;
    expect((await cinder.getBackup(backupId)).status).toBe("available");

    // The backup deleted behind Pulumi's back: refresh's drill fails at cinderScratch, named, and makes no volume.
    await cinder.deleteBackup(backupId);
    await waitForBackupDeleted(cinder, backupId, waits);
    const read = await provider.read("drill", outs);
    expect(read.props.status).toBe("failed");
    expect(read.props.results[0]).toMatchObject({ ok: false, checks: { manifest: "ok", cinderScratch: "failed" } });
    expect(read.props.failures).toEqual([
      expect.stringMatching(
        new RegExp(
          `^set volumes \\(${set.setId}\\) point ${pointId}: cinderScratch: item data: cinder backup ${backupId}: `,
        ),
      ),
    ]);
    expect(read.props.failures[0]).toMatch(/is gone from the cloud/);
    const after = (await collect(cinder.listVolumes())).filter((v) => v.name?.includes(set.setId));
    expect(after).toEqual([]);
  });
});
