/**
 * copyToTarget on the loopback cloud: a Cinder volume's data copied into the policy's target in
 * Coffer's format through a Glance image, and restored without the cloud, byte for byte; for an
 * encrypted volume, whose bytes are a LUKS container keyed the way Cinder's encryptor keys it (the
 * hex of its Barbican key), both layers are opened with the escrowed key.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { readManifest } from "../../provider/agent/manifest";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import { collect, waitForVolume } from "../../provider/openstack";
import type { CinderVolumeItem } from "../../provider/sources/cinderVolume";
import { cloudAs, cloudSetHost, deleteTestResources, osEnvFor } from "../support/cloudAccess";
import { runCoffer } from "../support/cofferCli";
import { x25519Pair } from "../support/escrowKeys";
import { cloudMissingNote, loopbackCloud } from "../support/loopbackCloud";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(20 * 60_000);

const execute = promisify(execFile);
/** qemu-img, once more when Debian's QEMU 7.2 fails its LUKS benchmark (research/qemu-agent.md §2.3). */
async function run(tool: string, args: string[]) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await execute(tool, args);
    } catch (error) {
      if (attempt >= 8 || !String((error as { stderr?: string }).stderr).includes("accurate CPU usage")) throw error;
    }
  }
}
const cloud = loopbackCloud();
const describeCloud = cloud ? describe : describe.skip;
const unique = `coffer-copy-test-${randomUUID().slice(0, 8)}`;
const PASSPHRASE = "copy-test-passphrase-5521";
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const waits = { timeoutMs: 300_000, deps: { now: () => Date.now(), sleep } };
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

async function fileSha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** A sparse file of `size` bytes with random MiBs at a few offsets. */
async function plainDisk(file: string, size: number): Promise<void> {
  const handle = await fs.open(file, "w");
  try {
    await handle.truncate(size);
    for (const at of [0, 5 * MIB, size - MIB]) await handle.write(randomBytes(MIB), 0, MIB, at);
  } finally {
    await handle.close();
  }
}

describeCloud(
  cloud ? "copyToTarget: a Cinder volume's data in the target, on the loopback cloud" : cloudMissingNote,
  () => {
    const tempDir = useTempDir();
    const demo = () => cloudAs(cloud!);
    const volumes: string[] = [];

    afterAll(async () => {
      await deleteTestResources(cloud!, unique, volumes);
    });

    async function volume(volumeType?: string): Promise<string> {
      const { cinder } = demo();
      const created = await cinder.createVolume({ size: 1, name: `${unique}-vol`, volumeType });
      volumes.push(created.id);
      await waitForVolume(cinder, created.id, waits);
      return created.id;
    }

    const volumeFile = (id: string) => path.join(cloud!.volumesDir, `volume-${id}`);

    async function takePoint(target: string, source: object, extra: Record<string, unknown> = {}) {
      const provider = createBackupSetProvider(cloudSetHost(cloud!));
      await makeTarget(target);
      const inputs = {
        policy: {
          id: "zone-k-1",
          zone: "zone-k",
          target: { kind: "directory", path: target },
          compression: "zstd",
          integrityCheck: "metadata",
          bandwidthLimitMiBps: 0,
          encrypted: true,
        },
        keys: { passphrase: PASSPHRASE },
        sources: [source],
        trigger: `${unique}-${randomBytes(2).toString("hex")}`,
        ...extra,
      };
      const checked = await provider.check({}, inputs);
      expect(checked.failures).toBeUndefined();
      return (await provider.create(checked.inputs!)).outs as BackupSetOutputs;
    }

    /** Nothing of the copy's way is left: no temporary image or volume, an empty staging folder. */
    async function nothingLeft(target: string) {
      const { cinder, glance } = demo();
      const images = await collect(glance.listImages());
      expect(images.filter((i) => i.name?.startsWith(`coffer-copy ${unique}`))).toEqual([]);
      const temporary = (await collect(cinder.listVolumes())).filter((v) =>
        v.name?.startsWith(`coffer-copy ${unique}`),
      );
      expect(temporary.filter((v) => v.status !== "deleting")).toEqual([]);
      expect(await fs.readdir(path.join(target, ".coffer", "staging")).catch(() => [])).toEqual([]);
    }

    test("an available volume: the copy is in the point's folder, encrypted, and restores byte for byte without the cloud", async () => {
      const volumeId = await volume();
      await plainDisk(volumeFile(volumeId), GIB);
      const target = path.join(tempDir(), "target");
      const outs = await takePoint(target, { name: "data", cinderVolume: volumeId, copyToTarget: true });
      const read = readManifest(await fs.readFile(outs.manifestPath, "utf8"));
      if (!read.ok) throw new Error(read.problem);
      expect(read.manifest.cloudItems).toBeUndefined();
      const [item] = read.manifest.items;
      expect(item).toMatchObject({ name: "data", format: "qcow2-in-luks", encrypted: true, virtualSize: GIB });
      const source = item.source as CinderVolumeItem;
      expect(source).toMatchObject({ kind: "cinderVolume", volumeId, copy: { via: "volume", sizeBytes: GIB } });
      expect(await demo().cinder.getBackup(source.backupId)).toMatchObject({ status: "available" });
      await nothingLeft(target);

      const to = path.join(tempDir(), "restored.raw");
      const args = ["restore", "--manifest", outs.manifestPath, "--item", "data", "--to", to, "--quiet"];
      const restored = await runCoffer(args, { COFFER_PASSPHRASE: PASSPHRASE });
      expect(restored).toMatchObject({ code: 0 });
      expect(await fileSha256(to)).toBe(await fileSha256(volumeFile(volumeId)));
    });

    test("an encrypted, in-use volume: copied through a snapshot; its LUKS container opens with the escrowed key, byte for byte", async () => {
      const { cinder, barbican, session } = demo();
      const volumeId = await volume(cloud!.volumeTypes.encrypted);
      const keyId = (await cinder.getVolume(volumeId)).encryption_key_id!;
      const keyHex = (await barbican.getSecretPayload(keyId)).toString("hex");
      // The volume's bytes: a LUKS1 container as Cinder's encryptor makes it (aes-xts-plain64, a 256-bit
      // key, the hex of the Barbican key as passphrase), holding a plain disk.
      const work = tempDir();
      const secretFile = path.join(work, "luks.pass");
      await fs.writeFile(secretFile, keyHex, { mode: 0o600 });
      const secret = `secret,id=k,file=${secretFile}`;
      const luksOptions = "cipher-alg=aes-128,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256";
      const probe = path.join(work, "probe.luks");
      await run("qemu-img", [
        "create",
        "-q",
        "-f",
        "luks",
        "--object",
        secret,
        "-o",
        `key-secret=k,${luksOptions}`,
        probe,
        "1M",
      ]);
      const header = (await fs.stat(probe)).size - MIB;
      const payload = GIB - header;
      const plain = path.join(work, "plain.raw");
      await plainDisk(plain, payload);
      const container = volumeFile(volumeId);
      await fs.rm(container);
      const opts = `key-secret=k,${luksOptions}`;
      await run("qemu-img", ["create", "-q", "-f", "luks", "--object", secret, "-o", opts, container, String(payload)]);
      const into = `driver=luks,key-secret=k,file.filename=${container}`;
      await run("qemu-img", ["convert", "-n", "--object", secret, "-f", "raw", plain, "--target-image-opts", into]);
      await fs.rm(secretFile);
      expect((await fs.stat(container)).size).toBe(GIB);

      // In use, as Nova would have it: the copy goes through a snapshot and a temporary volume.
      const headers = { "OpenStack-API-Version": "volume 3.54" };
      const call = { service: "cinder" as const, resource: "attachment", headers };
      const { z } = await import("zod");
      const attachment = (
        await session.request(
          {
            ...call,
            method: "POST",
            path: "/attachments",
            json: { attachment: { volume_uuid: volumeId, instance_uuid: randomUUID() } },
          },
          z.object({ attachment: z.object({ id: z.string() }) }),
        )
      ).body.attachment.id;
      await session.request(
        { ...call, method: "POST", path: `/attachments/${attachment}/action`, json: { "os-complete": null } },
        z.unknown(),
      );
      await waitForVolume(cinder, volumeId, waits, ["in-use"]);
      const recipient = x25519Pair();
      const store = path.join(work, "escrow");
      const keyEscrow = { store, recipients: [{ name: "dr-team", publicKey: recipient.publicKey }], threshold: 1 };
      const target = path.join(work, "target");
      let outs: BackupSetOutputs;
      try {
        const source = { name: "vault", cinderVolume: volumeId, force: true, copyToTarget: true };
        outs = await takePoint(target, source, { keyEscrow });
      } finally {
        await session.request({ ...call, method: "DELETE", path: `/attachments/${attachment}` }, z.unknown());
      }
      const read = readManifest(await fs.readFile(outs.manifestPath, "utf8"));
      if (!read.ok) throw new Error(read.problem);
      const source = read.manifest.items[0].source as CinderVolumeItem;
      expect(source.copy).toMatchObject({ via: "snapshot", sizeBytes: GIB });
      expect(source.volume.encrypted).toBe(true);
      await nothingLeft(target);

      // Without the cloud and without Pulumi: the key from the escrow, then both layers opened.
      const privateKey = path.join(work, "dr-team.pem");
      await fs.writeFile(privateKey, recipient.privateKey, { mode: 0o600 });
      const keyFile = path.join(work, "key.hex");
      const recover = [
        "escrow",
        "recover",
        "--store",
        store,
        "--id",
        source.escrowedKeys![0].record,
        "--key",
        privateKey,
      ];
      expect(await runCoffer([...recover, "--format", "hex", "--out", keyFile])).toMatchObject({ code: 0 });
      const to = path.join(work, "vault.raw");
      const restore = ["restore", "--manifest", outs.manifestPath, "--item", "vault", "--to", to, "--quiet"];
      const refused = await runCoffer(restore, { COFFER_PASSPHRASE: PASSPHRASE });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(
        /an encrypted volume's copy \(a LUKS container\): give its key with --volume-key-file/,
      );
      const restored = await runCoffer([...restore, "--volume-key-file", keyFile], { COFFER_PASSPHRASE: PASSPHRASE });
      expect(restored).toMatchObject({ code: 0 });
      expect(await fileSha256(to)).toBe(await fileSha256(plain));
      // Barbican loses the backup's key: Cinder can't restore its backup any more; the copy, opened with
      // the escrowed key and sealed with a new one, goes into a new volume of the encrypted type.
      await barbican.deleteSecret(source.backupKeyId!);
      const osEnv = { ...osEnvFor(cloud!), COFFER_PASSPHRASE: PASSPHRASE };
      const toCinder = ["restore", "--manifest", outs.manifestPath, "--item", "vault", "--to-cinder", "--quiet"];
      const preflight = await runCoffer([...toCinder, "--preflight"], osEnv);
      expect(preflight.code).toBe(1);
      expect(preflight.stdout).toMatch(/--from-copy restores the copy in the target/);
      const fromCopyArgs = [...toCinder, "--from-copy", "--volume-key-file", keyFile, "--name", `${unique}-back`];
      const fromCopy = await runCoffer(fromCopyArgs, osEnv);
      expect(fromCopy).toMatchObject({ code: 0 });
      const back = JSON.parse(fromCopy.stdout);
      volumes.push(back.volumeId);
      expect(back).toMatchObject({ fromCopy: true, typeName: cloud!.volumeTypes.encrypted });
      const restoredVolume = await cinder.getVolume(back.volumeId);
      expect(restoredVolume).toMatchObject({ encrypted: true, volume_type: cloud!.volumeTypes.encrypted });
      expect(restoredVolume.encryption_key_id).not.toBe(keyId);
      // Its bytes: a LUKS container of the new volume's own key, holding the plain disk.
      const newKey = (await barbican.getSecretPayload(restoredVolume.encryption_key_id!)).toString("hex");
      const newSecret = path.join(work, "new.pass");
      await fs.writeFile(newSecret, newKey, { mode: 0o600 });
      const opened = path.join(work, "opened.raw");
      const from = `driver=luks,key-secret=n,file.filename=${volumeFile(back.volumeId)}`;
      const secretObject = `secret,id=n,file=${newSecret}`;
      await run("qemu-img", ["convert", "--object", secretObject, "--image-opts", from, "-O", "raw", opened]);
      expect(await fileSha256(opened)).toBe(await fileSha256(plain));

      // A wrong key opens nothing.
      await fs.writeFile(keyFile, "00".repeat(32));
      const wrong = await runCoffer([...restore, "--force", "--volume-key-file", keyFile], {
        COFFER_PASSPHRASE: PASSPHRASE,
      });
      expect(wrong.code).toBe(1);
    });
  },
);
