/**
 * `coffer restore --to-cinder`, as a user runs it (the CLI, OS_* credentials), against the real
 * loopback cloud: the recorded type, metadata and bootable flag; a preflight that says what blocks
 * a restore; a tampered manifest caught by the policy's public key alone.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { readManifest } from "../../provider/agent/manifest";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import { publicKeyOf } from "../../provider/common/signingKey";
import { waitForVolume, waitForVolumeDeleted } from "../../provider/openstack";
import type { CinderVolumeItem } from "../../provider/sources/cinderVolume";
import {
  cloudAs,
  cloudSetHost,
  deleteTestResources,
  osEnvFor,
  readVolumeBytes,
  writeVolumeBytes,
} from "../support/cloudAccess";
import { runCoffer } from "../support/cofferCli";
import { x25519Pair } from "../support/escrowKeys";
import { cloudMissingNote, loopbackCloud } from "../support/loopbackCloud";
import { ed25519Pair } from "../support/signingKeys";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(15 * 60_000);

const cloud = loopbackCloud();
const describeCloud = cloud ? describe : describe.skip;
const unique = `coffer-restore-${randomUUID().slice(0, 8)}`;
const MANIFEST_KEY = "Y2xvdWQtcmVzdG9yZS1tYW5pZmVzdC1rZXktMDAwMDA=";
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const waits = { timeoutMs: 300_000, deps: { now: () => Date.now(), sleep } };
const MIB = 1024 * 1024;

describeCloud(cloud ? "coffer restore --to-cinder, on the loopback cloud" : cloudMissingNote, () => {
  const tempDir = useTempDir();
  const demo = () => cloudAs(cloud!);
  const admin = () => cloudAs(cloud!, cloud!.admin);
  const volumes: string[] = [];
  const types: string[] = [];

  afterAll(async () => {
    await deleteTestResources(cloud!, unique, volumes);
    for (const id of types)
      await admin()
        .cinder.deleteVolumeType(id)
        .catch(() => undefined);
  });

  async function volume(options: { type?: string; metadata?: Record<string, string> } = {}) {
    const { cinder } = demo();
    const created = await cinder.createVolume({
      size: 1,
      name: `${unique}-vol`,
      volumeType: options.type,
      metadata: options.metadata,
    });
    volumes.push(created.id);
    await waitForVolume(cinder, created.id, waits);
    return created.id;
  }

  /** A point of one Cinder source, taken as demo, signed with the policy's key; its manifest path. */
  async function backedUp(volumeId: string, signingKey: string, keyEscrow?: object) {
    const provider = createBackupSetProvider(cloudSetHost(cloud!));
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const inputs = {
      policy: {
        id: "zone-r-1",
        zone: "zone-r",
        target: { kind: "directory", path: target },
        compression: "zstd",
        integrityCheck: "metadata",
        bandwidthLimitMiBps: 0,
        encrypted: false,
      },
      keys: { manifestKey: MANIFEST_KEY, signingKey },
      sources: [{ name: "db", cinderVolume: volumeId }],
      trigger: `${unique}-${randomBytes(2).toString("hex")}`,
      ...(keyEscrow ? { keyEscrow } : {}),
    };
    const checked = await provider.check({}, inputs);
    expect(checked.failures).toBeUndefined();
    const outs = (await provider.create(checked.inputs!)).outs as BackupSetOutputs;
    return outs.manifestPath;
  }

  const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

  test("into the recorded encrypted type, with metadata and bootable flag, after a preflight; a tampered manifest is refused by the public key alone", async () => {
    const signing = ed25519Pair();
    const publicKeyFile = path.join(tempDir(), "signing.pub");
    await fs.writeFile(publicKeyFile, publicKeyOf(signing.privateKey).pem);
    const recipient = x25519Pair();
    const keyEscrow = {
      store: path.join(tempDir(), "escrow"),
      recipients: [{ name: "dr-team", publicKey: recipient.publicKey }],
      threshold: 1,
    };
    const volumeId = await volume({ type: cloud!.volumeTypes.encrypted, metadata: { app: "ledger", tier: "gold" } });
    await demo().cinder.setBootable(volumeId, true);
    const data = randomBytes(MIB);
    await writeVolumeBytes(cloud!, volumeId, 3 * MIB, data);
    const manifestPath = await backedUp(volumeId, signing.privateKey, keyEscrow);
    const restore = [
      "restore",
      "--manifest",
      manifestPath,
      "--item",
      "db",
      "--to-cinder",
      "--public-key",
      publicKeyFile,
    ];

    const checked = await runCoffer([...restore, "--preflight"], osEnvFor(cloud!));
    expect(checked).toMatchObject({ code: 0 });
    expect(JSON.parse(checked.stdout)).toMatchObject({
      ok: true,
      checks: [
        { check: "project", status: "ok" },
        { check: "backup", status: "ok" },
        { check: "volume type", status: "ok" },
        { check: "key", status: "ok" },
        { check: "escrow", status: "ok" },
      ],
    });

    const restored = await runCoffer([...restore, "--name", `${unique}-back`], osEnvFor(cloud!));
    expect(restored.stderr).toMatch(/restoring cinder backup .* into type luks/);
    expect(restored.code).toBe(0);
    const result = JSON.parse(restored.stdout);
    volumes.push(result.volumeId);
    expect(result).toMatchObject({ restored: "db", typeName: cloud!.volumeTypes.encrypted, metadataApplied: true });
    const back = await demo().cinder.getVolume(result.volumeId);
    expect(back).toMatchObject({ name: `${unique}-back`, bootable: true, encrypted: true, volume_type: "luks" });
    expect(back.metadata).toMatchObject({ app: "ledger", tier: "gold" });
    // A new volume of the type gets a new key: Cinder cloned the backup's.
    const source = await demo().cinder.getVolume(volumeId);
    expect(back.encryption_key_id).not.toBe(source.encryption_key_id);
    expect(sha256(await readVolumeBytes(cloud!, result.volumeId, 3 * MIB, MIB))).toBe(sha256(data));

    // Someone with write access to the target changes the recorded metadata: the public key catches it.
    const text = await fs.readFile(manifestPath, "utf8");
    const tampered = text.replace('"tier": "gold"', '"tier": "free"');
    expect(tampered).not.toBe(text);
    await fs.writeFile(manifestPath, tampered);
    const refused = await runCoffer(restore, osEnvFor(cloud!));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/the manifest failed its check \(manifest: its Ed25519 signature .* does not match/);
    expect(refused.stderr).toMatch(/its metadata is refused; --without-metadata restores the data alone/);
    const dataOnly = await runCoffer([...restore, "--without-metadata", "--name", `${unique}-raw`], osEnvFor(cloud!));
    expect(dataOnly.code).toBe(0);
    const bare = JSON.parse(dataOnly.stdout);
    volumes.push(bare.volumeId);
    expect(bare.metadataApplied).toBe(false);
    // Cinder restores the metadata its own backup store kept; none of the tampered record is applied.
    const plain = await demo().cinder.getVolume(bare.volumeId);
    expect(plain.metadata?.tier).not.toBe("free");
    expect(sha256(await readVolumeBytes(cloud!, bare.volumeId, 3 * MIB, MIB))).toBe(sha256(data));
  });

  test("after its volume type was deleted: the preflight names the spec an admin must create; once created, the restore succeeds", async () => {
    const signing = ed25519Pair();
    const typeName = `${unique}-type`;
    const type = await admin().cinder.createVolumeType({ name: typeName });
    types.push(type.id);
    const volumeId = await volume({ type: typeName });
    const data = randomBytes(MIB);
    await writeVolumeBytes(cloud!, volumeId, 0, data);
    const manifestPath = await backedUp(volumeId, signing.privateKey);
    const read = readManifest(await fs.readFile(manifestPath, "utf8"));
    if (!read.ok) throw new Error(read.problem);
    const item = read.manifest.cloudItems![0].source as CinderVolumeItem;
    expect(item.volume.type).toEqual({ id: type.id, name: typeName, encryptionReadable: false });

    // The volume and then its type are deleted (a type in use can't be).
    await demo().cinder.deleteVolume(volumeId);
    await waitForVolumeDeleted(demo().cinder, volumeId, waits);
    await admin().cinder.deleteVolumeType(type.id);
    const keyFile = path.join(tempDir(), "manifest.key");
    await fs.writeFile(keyFile, MANIFEST_KEY);
    const restore = [
      "restore",
      "--manifest",
      manifestPath,
      "--item",
      "db",
      "--to-cinder",
      "--manifest-key-file",
      keyFile,
    ];
    const checked = await runCoffer([...restore, "--preflight"], osEnvFor(cloud!));
    expect(checked.code).toBe(1);
    const typeCheck = JSON.parse(checked.stdout).checks.find((c: { check: string }) => c.check === "volume type");
    expect(typeCheck).toEqual({
      check: "volume type",
      status: "fixable",
      message:
        `type ${typeName} (${type.id}) is gone: --recreate-type creates it (needs an admin) as: ` +
        `openstack volume type create ${typeName}`,
    });
    // Without admin rights, --recreate-type says what an admin must run.
    const denied = await runCoffer([...restore, "--recreate-type"], osEnvFor(cloud!));
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(
      new RegExp(`type ${typeName} is gone and these credentials can't create it: an admin can, with openstack volume`),
    );
    // An admin recreates it (a new id); the restore finds it by name.
    const again = await admin().cinder.createVolumeType({ name: typeName });
    types.push(again.id);
    const restored = await runCoffer(restore, osEnvFor(cloud!));
    expect(restored.code).toBe(0);
    const result = JSON.parse(restored.stdout);
    volumes.push(result.volumeId);
    expect(result.typeName).toBe(typeName);
    expect(sha256(await readVolumeBytes(cloud!, result.volumeId, 0, MIB))).toBe(sha256(data));
  });
});
