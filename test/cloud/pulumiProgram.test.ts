/**
 * A user's program through the real Pulumi engine against the loopback cloud: a Cinder volume's id
 * and the credentials come from stack config (the `openstack:*` keys @pulumi/openstack reads),
 * the set takes Cinder backups, `pulumi refresh` shows one deleted behind Pulumi's back as drift,
 * and destroy with deleteBackupsOnDestroy deletes them. The policy's copyToTarget copies the volume's
 * data into the target at the first point; switched off, the next point has none. (@pulumi/openstack's
 * resource plugin can't be built here: the Go module proxy refuses pulumi-openstack's provider module,
 * so the volume is made by the test and its id passed through stack config, as the issue allows.)
 */
import { randomBytes, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileSha256 } from "../../provider/agent/image";
import { readManifest } from "../../provider/agent/manifest";
import { collect, waitForBackupDeleted, waitForVolume, waitForVolumeDeleted } from "../../provider/openstack";
import type { CinderVolumeItem } from "../../provider/sources/cinderVolume";
import { cloudAs } from "../support/cloudAccess";
import { runCoffer } from "../support/cofferCli";
import { cloudMissingNote, loopbackCloud } from "../support/loopbackCloud";
import { pulumiCliReady } from "../support/pulumiCli";
import { stackProject } from "../support/stackProject";

jest.setTimeout(20 * 60_000);

const cloud = loopbackCloud();
const ready = cloud !== undefined && pulumiCliReady();
const describeCloud = ready ? describe : describe.skip;
const unique = `coffer-program-${randomUUID().slice(0, 8)}`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const waits = { timeoutMs: 300_000, deps: { now: () => Date.now(), sleep } };

const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const policy = new coffer.BackupPolicy("cloud", {
  zone: "cloud",
  target: { kind: "directory", path: spec.target },
  integrityCheck: "metadata",
  retention: { keepLast: 2 },
  copyToTarget: spec.copyToTarget,
});
const set = new coffer.EncryptedBackupSet("volumes", {
  policy,
  sources: [{ name: "data", cinderVolume: config.require("volumeId"), incremental: true }],
  trigger: spec.trigger,
  deleteBackupsOnDestroy: true,
});
const { setId, points, verification, manifestPath } = set;
exports.set = { setId, points, verification, manifestPath };
exports.manifestKey = policy.manifestKey;
`;

describeCloud(ready ? "a program with Cinder sources, through the real Pulumi engine" : cloudMissingNote, () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let work: string;
  let volumeId: string;
  const log = { output: "" };
  const record = { onOutput: (out: string) => (log.output += out) };
  const demo = () => cloudAs(cloud!);

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-cloud-e2e-"));
    await fs.mkdir(path.join(work, "target"));
    const { cinder } = demo();
    volumeId = (await cinder.createVolume({ size: 1, name: `${unique}-vol` })).id;
    await waitForVolume(cinder, volumeId, waits);
    // Data to copy: random MiBs at the start and in the middle of the volume.
    const handle = await fs.open(path.join(cloud!.volumesDir, `volume-${volumeId}`), "r+");
    for (const at of [0, 512 * 1024 * 1024]) await handle.write(randomBytes(1024 * 1024), 0, 1024 * 1024, at);
    await handle.close();
    // The engine's environment has no OS_* variables: the stack's openstack:* config must be what signs in.
    const withoutOs = Object.fromEntries(
      Object.keys(process.env)
        .filter((k) => k.startsWith("OS_"))
        .map((k) => [k, ""]),
    );
    env = await stackProject(PROGRAM, withoutOs);
    const { demo: user } = cloud!;
    const plain = {
      "openstack:authUrl": cloud!.authUrl,
      "openstack:region": cloud!.region,
      "openstack:userName": user.username,
      "openstack:tenantName": user.projectName,
      "openstack:userDomainName": user.userDomainName,
      "openstack:projectDomainName": user.projectDomainName,
      volumeId,
    };
    for (const [key, value] of Object.entries(plain)) await env.stack.setConfig(key, { value });
    env.setSecretConfig("openstack:password", user.password);
    const spec = { target: path.join(work, "target"), trigger: "t1", copyToTarget: true };
    await env.stack.setConfig("spec", { value: JSON.stringify(spec) });
  });

  afterAll(async () => {
    await env?.stack.destroy().catch(() => undefined);
    await env?.remove();
    const { cinder } = demo();
    for (const backup of await collect(cinder.listBackups({ filters: { volume_id: volumeId } }))) {
      await cinder.deleteBackup(backup.id).catch(() => undefined);
    }
    if (volumeId) {
      await cinder.deleteVolume(volumeId).catch(() => undefined);
      await waitForVolumeDeleted(cinder, volumeId, waits).catch(() => undefined);
    }
    await fs.rm(work, { recursive: true, force: true });
  });

  /** The manifest's item of the volume: in `items` with a copy in the target, else in `cloudItems`. */
  async function volumeItem(manifestPath: string) {
    const read = readManifest(await fs.readFile(manifestPath, "utf8"));
    if (!read.ok) throw new Error(read.problem);
    const { items, cloudItems } = read.manifest;
    return { stored: items.find((i) => i.name === "data"), inCloud: cloudItems?.find((i) => i.name === "data") };
  }

  test("up takes Cinder backups, refresh shows one deleted behind Pulumi's back, destroy deletes them", async () => {
    const { cinder } = demo();
    const up = await env.stack.up(record);
    expect(up.summary.result).toBe("succeeded");
    const outputs = await env.stack.outputs();
    const first = outputs.set.value;
    expect(first.points).toHaveLength(1);
    const [full] = first.points[0].cloud;
    expect(await cinder.getBackup(full.id)).toMatchObject({ status: "available", is_incremental: false });

    // The policy's copyToTarget: the source declares none, and its volume's data is in the target too,
    // restorable without the cloud, byte for byte.
    const copied = await volumeItem(first.manifestPath);
    expect(copied.inCloud).toBeUndefined();
    expect(copied.stored).toMatchObject({ name: "data", encrypted: false, virtualSize: 1024 * 1024 * 1024 });
    const copiedSource = copied.stored!.source as CinderVolumeItem;
    expect(copiedSource).toMatchObject({ kind: "cinderVolume", volumeId, backupId: full.id, copy: { via: "volume" } });
    const restoredFile = path.join(work, "restored.raw");
    const restoreArgs = ["restore", "--manifest", first.manifestPath, "--item", "data", "--to", restoredFile];
    const restored = await runCoffer([...restoreArgs, "--quiet"], { COFFER_MANIFEST_KEY: outputs.manifestKey.value });
    expect(restored).toMatchObject({ code: 0 });
    expect(await fileSha256(restoredFile)).toBe(await fileSha256(path.join(cloud!.volumesDir, `volume-${volumeId}`)));
    await fs.rm(restoredFile);

    // copyToTarget switched off: it applies from the next point, the set is updated (never replaced),
    // and the point taken keeps its copy.
    await env.stack.setConfig("spec", {
      value: JSON.stringify({ target: path.join(work, "target"), trigger: "t2" }),
    });
    const preview = await env.stack.preview(record);
    expect(preview.stdout).toMatch(/set .*: takes a point: trigger changed/);
    // (keys too: an unencrypted policy's manifest key is unknown while its update is previewed.)
    expect(preview.stdout).toMatch(/set .*: policy(, keys)? changed: applies from the next point; no point taken/);
    expect(preview.changeSummary).toMatchObject({ update: 2 });
    expect(preview.changeSummary).not.toHaveProperty("replace");
    expect((await env.stack.up(record)).summary.result).toBe("succeeded");
    const second = (await env.stack.outputs()).set.value;
    const [incremental] = second.points[1].cloud;
    expect(incremental).toMatchObject({ parent: full.id });
    expect(second.points[1].dependsOn).toEqual([first.points[0].id]);
    const { id, itemsSha256, sizeBytes } = first.points[0];
    expect(second.points[0]).toMatchObject({ id, itemsSha256, sizeBytes });
    const uncopied = await volumeItem(second.manifestPath);
    expect(uncopied.stored).toBeUndefined();
    expect(uncopied.inCloud?.source).toMatchObject({ kind: "cinderVolume", backupId: incremental.id });
    expect(uncopied.inCloud?.source).not.toHaveProperty("copy");

    // The incremental is deleted behind Pulumi's back: refresh shows its point as failed, by name.
    await cinder.deleteBackup(incremental.id);
    await waitForBackupDeleted(cinder, incremental.id, waits);
    await env.stack.refresh(record);
    const state = env.exportedState();
    const set = state.deployment.resources.find((r: { urn: string }) => r.urn.endsWith("::volumes"));
    expect(set.outputs.points[1]).toMatchObject({
      status: "missing",
      failures: [`cinder backup ${incremental.id} is gone from the cloud (source data)`],
    });
    expect(set.outputs.verification.status).toBe("missing");
    // The password is in state only encrypted, and never in the engine's output.
    expect(JSON.stringify(state)).not.toContain(cloud!.demo.password);
    expect(log.output).not.toContain(cloud!.demo.password);

    // destroy with deleteBackupsOnDestroy deletes the set's Cinder backups too.
    expect((await env.stack.destroy(record)).summary.result).toBe("succeeded");
    await expect(cinder.getBackup(full.id)).rejects.toMatchObject({ code: "CLOUD_NOT_FOUND" });
  });
});
