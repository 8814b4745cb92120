/**
 * Cinder volumes as sources of an EncryptedBackupSet, against the real loopback cloud: the
 * provider's create, update, read and delete, with the real agent writing manifests to a target.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { readManifest } from "../../provider/agent/manifest";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import { recoverSecret, volumeKeyRecordId } from "../../provider/escrow/record";
import { preflight } from "../../provider/sources/cinderRestore";
import type { CinderVolumeItem } from "../../provider/sources/cinderVolume";
import { collect, waitForBackupDeleted, waitForVolume, waitForVolumeDeleted } from "../../provider/openstack";
import { cloudAs, cloudSetHost, writeVolumeBytes } from "../support/cloudAccess";
import { cloudMissingNote, loopbackCloud } from "../support/loopbackCloud";
import { x25519Pair } from "../support/escrowKeys";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(15 * 60_000);

const cloud = loopbackCloud();
const describeCloud = cloud ? describe : describe.skip;
const unique = `coffer-test-${randomUUID().slice(0, 8)}`;
const MANIFEST_KEY = "Y2xvdWQtdGVzdC1tYW5pZmVzdC1rZXktMDAwMDAwMDA=";
const waits = { timeoutMs: 300_000, deps: { now: () => Date.now(), sleep: (ms: number) => sleep(ms) } };
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describeCloud(cloud ? "Cinder volumes in a set's history, on the loopback cloud" : cloudMissingNote, () => {
  const tempDir = useTempDir();
  const demo = () => cloudAs(cloud!);
  const made = { volumes: [] as string[] };

  afterAll(async () => {
    const { cinder } = demo();
    // Backups first (a volume with backups can still be deleted, but nothing of this test may stay).
    for await (const backup of cinder.listBackups()) {
      if (!backup.name?.includes(unique)) continue;
      await cinder.deleteBackup(backup.id).catch(() => undefined);
    }
    for (const id of made.volumes) {
      await cinder.deleteVolume(id).catch(() => undefined);
      await waitForVolumeDeleted(cinder, id, waits).catch(() => undefined);
    }
  });

  async function volume(sizeGiB = 1, volumeType?: string): Promise<string> {
    const { cinder } = demo();
    const created = await cinder.createVolume({ size: sizeGiB, name: `${unique}-vol`, volumeType });
    made.volumes.push(created.id);
    await waitForVolume(cinder, created.id, waits);
    return created.id;
  }

  /** Marks volume `id` in-use with a Cinder attachment (3.54), as Nova would; returns the detach. */
  async function attach(id: string): Promise<() => Promise<void>> {
    const { session, cinder } = demo();
    const headers = { "OpenStack-API-Version": "volume 3.54" };
    const json = { attachment: { volume_uuid: id, instance_uuid: randomUUID() } };
    const call = { service: "cinder" as const, resource: `attachment of volume ${id}`, headers };
    const reply = await session.request(
      { ...call, method: "POST", path: "/attachments", json },
      z.object({ attachment: z.object({ id: z.string() }) }),
    );
    const attachment = reply.body.attachment.id;
    await session.request(
      { ...call, method: "POST", path: `/attachments/${attachment}/action`, json: { "os-complete": null } },
      z.unknown(),
    );
    await waitForVolume(cinder, id, waits, ["in-use"]);
    return async () => {
      await session.request({ ...call, method: "DELETE", path: `/attachments/${attachment}` }, z.unknown());
      await waitForVolume(cinder, id, waits);
    };
  }

  function declared(target: string, sources: object[], overrides: Record<string, unknown> = {}) {
    return {
      policy: {
        id: "zone-c-1",
        zone: "zone-c",
        target: { kind: "directory", path: target },
        compression: "zstd",
        integrityCheck: "metadata",
        bandwidthLimitMiBps: 0,
        encrypted: false,
      },
      keys: { manifestKey: MANIFEST_KEY },
      sources,
      // The set id starts with the trigger: backups' names carry it, so cleanup finds them.
      trigger: `${unique}-1`,
      ...overrides,
    };
  }

  test("full, then incrementals on the set's own backups; retention keeps a chain whole and prunes it children first; a backup deleted behind Pulumi's back is drift", async () => {
    const notes: string[] = [];
    const provider = createBackupSetProvider(cloudSetHost(cloud!, notes));
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const volumeId = await volume();
    await writeVolumeBytes(cloud!, volumeId, 0, randomBytes(4096));
    const check = async (input: object) => {
      const result = await provider.check({}, input as Record<string, unknown>);
      expect(result.failures).toBeUndefined();
      return result.inputs as Record<string, unknown>;
    };
    const source = { name: "data", cinderVolume: volumeId, incremental: true };
    const history = { retention: { keepLast: 1 } };

    // Point 1: the volume has no backup yet, so the first is full even though incremental is asked.
    const created = await provider.create(await check(declared(target, [source], { history })));
    let state = created.outs as BackupSetOutputs;
    const [first] = state.points;
    expect(first.cloud).toEqual([{ source: "data", kind: "cinder-backup", id: expect.any(String) }]);
    expect(first.dependsOn).toBeUndefined();
    const manifestOf = async (s: BackupSetOutputs) => {
      const read = readManifest(await fs.readFile(s.manifestPath, "utf8"));
      if (!read.ok) throw new Error(read.problem);
      return read.manifest;
    };
    const firstManifest = await manifestOf(state);
    expect(firstManifest.items).toEqual([]);
    expect(firstManifest.cloudItems).toEqual([
      expect.objectContaining({
        name: "data",
        source: expect.objectContaining({
          kind: "cinderVolume",
          volumeId,
          backupId: first.cloud![0].id,
          incremental: false,
          volume: expect.objectContaining({ sizeGiB: 1, bootable: false, encrypted: false }),
        }),
      }),
    ]);
    const { cinder } = demo();
    const firstBackup = await cinder.getBackup(first.cloud![0].id);
    expect(firstBackup).toMatchObject({ status: "available", volume_id: volumeId, is_incremental: false });
    expect(firstBackup.metadata).toMatchObject({ "coffer-set": state.setId, "coffer-point": first.id });

    // Point 2: incremental on point 1's backup, so point 1 stays while point 2 does.
    await writeVolumeBytes(cloud!, volumeId, 65536, randomBytes(4096));
    const second = await provider.update(
      state.setId,
      state as never,
      await check(declared(target, [source], { history, trigger: `${unique}-2` })),
    );
    state = second.outs as BackupSetOutputs;
    expect(state.points.map((p) => p.id)).toEqual([first.id, expect.any(String)]);
    const point2 = state.points[1];
    expect(point2.cloud).toEqual([
      { source: "data", kind: "cinder-backup", id: expect.any(String), parent: first.cloud![0].id },
    ]);
    expect(point2.dependsOn).toEqual([first.id]);
    expect(await cinder.getBackup(point2.cloud![0].id)).toMatchObject({ is_incremental: true, status: "available" });

    // Point 3: a full backup; keepLast 1 then prunes the whole chain, incremental first.
    const full = { ...source, incremental: false };
    const third = await provider.update(
      state.setId,
      state as never,
      await check(declared(target, [full], { history, trigger: `${unique}-3` })),
    );
    state = third.outs as BackupSetOutputs;
    expect(state.points).toHaveLength(1);
    const point3 = state.points[0];
    expect(point3.dependsOn).toBeUndefined();
    for (const ref of [...first.cloud!, ...point2.cloud!]) {
      await expect(cinder.getBackup(ref.id)).rejects.toMatchObject({ code: "CLOUD_NOT_FOUND" });
    }
    await expect(fs.stat(path.dirname(created.outs.manifestPath))).rejects.toMatchObject({ code: "ENOENT" });

    // A refresh finds the backup gone behind Pulumi's back: drift on the point, named.
    const refreshedOk = await provider.read(state.setId, state as never);
    expect((refreshedOk.props as BackupSetOutputs).points[0].status).toBe("ok");
    await cinder.deleteBackup(point3.cloud![0].id);
    await waitForBackupDeleted(cinder, point3.cloud![0].id, waits);
    const refreshed = (await provider.read(state.setId, state as never)).props as BackupSetOutputs;
    expect(refreshed.points[0]).toMatchObject({
      status: "missing",
      failures: [`cinder backup ${point3.cloud![0].id} is gone from the cloud (source data)`],
    });
    expect(refreshed.verification.status).toBe("missing");
    // Nothing of this test's backups is left in the cloud.
    const left = (await collect(cinder.listBackups())).filter((b) => b.name?.includes(unique));
    expect(left).toEqual([]);
  });

  test("an in-use volume needs force; fromSnapshot backs up a snapshot taken for it and deletes the snapshot", async () => {
    const provider = createBackupSetProvider(cloudSetHost(cloud!));
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const volumeId = await volume();
    const detach = await attach(volumeId);
    const { cinder } = demo();
    try {
      const inputs = async (source: object, trigger: string) =>
        (await provider.check({}, declared(target, [source], { trigger: `${unique}-${trigger}` }))).inputs!;
      // Cinder refuses an in-use volume without force: nothing of the point is left, no backup, no folder.
      const refused = await provider.create(await inputs({ name: "db", cinderVolume: volumeId }, "u")).catch((e) => e);
      expect(refused).toMatchObject({ code: "CLOUD_BAD_REQUEST" });
      expect(refused.message).toMatch(/^point not taken, nothing of it was kept: source db: .*in-use/);
      expect(refused.message).toMatch(/cinder .*HTTP 400.*req-[0-9a-f-]{36}/);
      expect(await fs.readdir(path.join(target, "sets", "zone-c")).catch(() => [])).toEqual([]);
      const mine = async () => (await collect(cinder.listBackups({ filters: { volume_id: volumeId } }))).length;
      expect(await mine()).toBe(0);

      const forced = await provider.create(await inputs({ name: "db", cinderVolume: volumeId, force: true }, "f"));
      expect(await cinder.getBackup((forced.outs as BackupSetOutputs).points[0].cloud![0].id)).toMatchObject({
        status: "available",
      });

      const source = { name: "db", cinderVolume: volumeId, force: true, fromSnapshot: true };
      const snapped = (await provider.create(await inputs(source, "s"))).outs as BackupSetOutputs;
      const read = readManifest(await fs.readFile(snapped.manifestPath, "utf8"));
      if (!read.ok) throw new Error(read.problem);
      const item = read.manifest.cloudItems![0].source as { snapshotId?: string; backupId: string };
      expect(item.snapshotId).toEqual(expect.any(String));
      expect(await cinder.getBackup(item.backupId)).toMatchObject({
        snapshot_id: item.snapshotId,
        status: "available",
      });
      await expect(cinder.getSnapshot(item.snapshotId!)).rejects.toMatchObject({ code: "CLOUD_NOT_FOUND" });
    } finally {
      await detach();
    }
  });

  test("an encrypted volume's backup key is escrowed for the set's recipients; without an escrow nothing is taken", async () => {
    const provider = createBackupSetProvider(cloudSetHost(cloud!));
    const target = path.join(tempDir(), "target");
    const store = path.join(tempDir(), "escrow");
    await makeTarget(target);
    const volumeId = await volume(1, cloud!.volumeTypes.encrypted);
    const { cinder, barbican } = demo();
    const source = { name: "secure", cinderVolume: volumeId };
    const inputs = async (overrides: Record<string, unknown>) =>
      (await provider.check({}, declared(target, [source], overrides))).inputs!;

    const refused = await provider.create(await inputs({ trigger: `${unique}-e0` })).catch((e) => e);
    expect(refused).toMatchObject({ code: "INVALID_INPUT" });
    expect(refused.message).toMatch(/volume .* is encrypted: its key must be escrowed.*coffer\.SecretEscrow/);
    expect(await collect(cinder.listBackups({ filters: { volume_id: volumeId } }))).toEqual([]);

    const [first, second] = [x25519Pair(), x25519Pair()];
    const keyEscrow = {
      store,
      recipients: [
        { name: "dr-team", publicKey: first.publicKey },
        { name: "security", publicKey: second.publicKey },
      ],
      threshold: 1,
    };
    const created = (await provider.create(await inputs({ trigger: `${unique}-e1`, keyEscrow })))
      .outs as BackupSetOutputs;
    const read = readManifest(await fs.readFile(created.manifestPath, "utf8"));
    if (!read.ok) throw new Error(read.problem);
    const item = read.manifest.cloudItems![0].source as CinderVolumeItem;
    const backup = await cinder.getBackup(item.backupId);
    expect(item.volume).toMatchObject({ encrypted: true, encryptionKeyId: expect.any(String) });
    expect(item.volume.type.name).toBe(cloud!.volumeTypes.encrypted);
    expect(item.backupKeyId).toBe(backup.encryption_key_id);
    expect(item.backupKeyId).not.toBe(item.volume.encryptionKeyId);
    expect(item.escrowedKeys).toEqual([
      { barbicanSecret: item.backupKeyId, record: volumeKeyRecordId(item.backupKeyId!), store },
    ]);
    // Either recipient alone opens it (threshold 1): the hex form is what Cinder gives LUKS.
    const payload = await barbican.getSecretPayload(item.backupKeyId!);
    const recovered = await recoverSecret(store, item.escrowedKeys![0].record, [second.privateKey], undefined, "hex");
    expect(recovered).toBe(payload.toString("hex"));
    expect(payload.length).toBe(32);
    expect(created.points[0].cloud![0].key).toBe(item.backupKeyId);

    // Barbican loses the backup's key: refresh notes it (the escrow has it), the point stays good.
    const notes: string[] = [];
    const refresher = createBackupSetProvider(cloudSetHost(cloud!, notes));
    await barbican.deleteSecret(item.backupKeyId!);
    const refreshed = (await refresher.read(created.setId, created as never)).props as BackupSetOutputs;
    expect(refreshed.points[0].status).toBe("ok");
    expect(notes).toContainEqual(
      expect.stringMatching(
        new RegExp(`the key ${item.backupKeyId} of cinder backup ${item.backupId} .* is gone from Barbican`),
      ),
    );
    // The preflight of a restore says Cinder can't restore it, and points to the escrow.
    const blocked = await preflight(item, demo());
    expect(blocked.ok).toBe(false);
    expect(blocked.checks).toContainEqual({
      check: "key",
      status: "blocked",
      message: expect.stringMatching(/the backup's key .* is gone from Barbican, and Cinder restores only with it/),
    });
    expect(blocked.checks).toContainEqual({ check: "escrow", status: "ok", message: expect.any(String) });
  });
});
