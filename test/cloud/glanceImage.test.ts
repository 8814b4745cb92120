/**
 * A Glance image as a source, on the loopback cloud: its bytes (a real qcow2 image) stored in the
 * target with its hash checked against Glance's, its properties recorded, and `coffer restore
 * --to-glance` giving Glance the same bytes (the same os_hash_value) with the same properties.
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { readManifest } from "../../provider/agent/manifest";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import type { GlanceImageItem } from "../../provider/sources/glanceImage";
import { waitForImage } from "../../provider/sources/glanceStage";
import { cloudAs, cloudSetHost, osEnvFor } from "../support/cloudAccess";
import { runCoffer } from "../support/cofferCli";
import { cloudMissingNote, loopbackCloud } from "../support/loopbackCloud";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(10 * 60_000);

const run = promisify(execFile);
const cloud = loopbackCloud();
const describeCloud = cloud ? describe : describe.skip;
const unique = `coffer-image-${randomUUID().slice(0, 8)}`;
const PASSPHRASE = "glance-test-passphrase-8812";
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describeCloud(cloud ? "a Glance image in a set, on the loopback cloud" : cloudMissingNote, () => {
  const tempDir = useTempDir();
  const demo = () => cloudAs(cloud!);
  const images: string[] = [];

  afterAll(async () => {
    for (const id of images)
      await demo()
        .glance.deleteImage(id)
        .catch(() => undefined);
  });

  test("backed up with its hash checked and its properties recorded; restored to Glance with the same bytes and properties", async () => {
    const { glance } = demo();
    // A real qcow2 image with data in it: stored as its bytes, not as the disk it describes.
    const qcow2 = path.join(tempDir(), "image.qcow2");
    const data = path.join(tempDir(), "data.raw");
    await fs.writeFile(data, randomBytes(3 * 1024 * 1024));
    await run("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", data, qcow2]);
    const properties = { os_distro: "debian", hw_disk_bus: "scsi", license_key_id: "LIC-4711" };
    const image = await glance.createImage({
      name: `${unique}-base`,
      diskFormat: "qcow2",
      containerFormat: "bare",
      properties,
      tags: ["golden"],
      minDisk: 2,
    });
    images.push(image.id);
    await glance.uploadImageData(image.id, qcow2);
    const ctx = { cloud: demo(), waits: { now: () => Date.now(), sleep }, subject: "test", progress: () => undefined };
    const active = await waitForImage(image.id, { ...ctx, project: { authUrl: "", projectId: "" } });

    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const provider = createBackupSetProvider(cloudSetHost(cloud!));
    const inputs = {
      policy: {
        id: "zone-g-1",
        zone: "zone-g",
        target: { kind: "directory", path: target },
        compression: "zstd",
        integrityCheck: "full",
        bandwidthLimitMiBps: 0,
        encrypted: true,
      },
      keys: { passphrase: PASSPHRASE },
      sources: [{ name: "base", glanceImage: image.id }],
      trigger: `${unique}-1`,
    };
    const checked = await provider.check({}, inputs);
    expect(checked.failures).toBeUndefined();
    const outs = (await provider.create(checked.inputs!)).outs as BackupSetOutputs;
    const read = readManifest(await fs.readFile(outs.manifestPath, "utf8"));
    if (!read.ok) throw new Error(read.problem);
    const [item] = read.manifest.items;
    const source = item.source as GlanceImageItem;
    expect(source).toMatchObject({
      kind: "glanceImage",
      imageId: image.id,
      diskFormat: "qcow2",
      containerFormat: "bare",
      minDiskGiB: 2,
      tags: ["golden"],
      hashAlgo: active.os_hash_algo,
      hashValue: active.os_hash_value,
      sizeBytes: (await fs.stat(qcow2)).size,
    });
    expect(source.properties).toMatchObject(properties);
    expect(item).toMatchObject({ encrypted: true, format: "qcow2-in-luks", verifiedAtBackup: "full" });
    expect(await fs.readdir(path.join(target, ".coffer", "staging"))).toEqual([]);

    // The image is gone from Glance: refresh says so (the point keeps its bytes), and the set brings it
    // back: the same bytes, formats and properties.
    await glance.deleteImage(image.id);
    const notes: string[] = [];
    await createBackupSetProvider(cloudSetHost(cloud!, notes)).read(outs.setId, outs as never);
    expect(notes).toContainEqual(
      `set ${outs.setId}: glance image ${image.id} is gone from Glance; ` +
        `point ${outs.points[0].id} keeps the bytes it copied (coffer restore --to-glance)`,
    );
    const restore = ["restore", "--manifest", outs.manifestPath, "--item", "base", "--to-glance", "--quiet"];
    const restored = await runCoffer([...restore, "--name", `${unique}-back`], {
      ...osEnvFor(cloud!),
      COFFER_PASSPHRASE: PASSPHRASE,
    });
    expect(restored).toMatchObject({ code: 0 });
    const result = JSON.parse(restored.stdout);
    images.push(result.imageId);
    expect(result).toMatchObject({ restored: "base", metadataApplied: true });
    const back = await glance.getImage(result.imageId);
    expect(back).toMatchObject({
      name: `${unique}-back`,
      status: "active",
      disk_format: "qcow2",
      container_format: "bare",
      os_hash_value: active.os_hash_value,
      tags: ["golden"],
    });
    expect(back.properties).toMatchObject(properties);
  });
});
