/**
 * A Nova server as a backup source on the loopback cloud: a TCG server booted from a raw marker
 * image, with a Cinder volume attached as /dev/vdb, backed up by an EncryptedBackupSet into a
 * directory target; nothing of the transfer is left in the cloud; `coffer restore --item` gives each
 * disk back byte for byte, and `coffer restore --to-nova` recreates a server whose root disk and
 * attached volume hold the same bytes. The loopback driver attaches volumes to Nova as loop devices.
 */
import { execFile } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { readManifest } from "../../provider/agent/manifest";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import { collect } from "../../provider/openstack";
import type { NovaServerItem } from "../../provider/sources/novaServer";
import { cloudAs, cloudSetHost, deleteTestResources, osEnvFor } from "../support/cloudAccess";
import { runCoffer } from "../support/cofferCli";
import { cloudMissingNote, loopbackCloud, loopbackCloudWithNova, novaMissingNote } from "../support/loopbackCloud";
import { GiB, MARKER_IMAGE_BYTES, attachMarkerVolume, bootMarkerServer, sha256Of } from "../support/novaServers";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(15 * 60_000);

const run = promisify(execFile);
const cloud = loopbackCloudWithNova();
const describeNova = cloud ? describe : describe.skip;
const unique = `coffer-novasrc-${randomUUID().slice(0, 8)}`;
const MANIFEST_KEY = "nova-source-test-manifest-key-7731";
describeNova(
  cloud
    ? "a Nova server as a backup source, on the loopback cloud"
    : loopbackCloud()
      ? novaMissingNote
      : cloudMissingNote,
  () => {
    const tempDir = useTempDir("coffer-novasrc-");
    const demo = () => cloudAs(cloud!);
    const servers: string[] = [];
    const volumes: string[] = [];
    const images: string[] = [];

    afterAll(async () => {
      await deleteTestResources(cloud!, unique, volumes, { servers, images });
    });

    test("its disk goes to the target, nothing stays in the cloud, and restores give the same bytes back", async () => {
      const { nova, glance, cinder } = demo();
      const timings: string[] = [];
      let started = Date.now();
      const lap = (what: string) => {
        timings.push(`${what} ${((Date.now() - started) / 1000).toFixed(0)} s`);
        started = Date.now();
      };

      // A server from a raw marker image.
      const made = { servers, images };
      const boot = { name: `${unique}-web`, dir: tempDir(), metadata: { coffer_test: unique } };
      const { serverId, imageId, rootDisk } = await bootMarkerServer(cloud!, demo(), boot, made);
      const data = { name: `${unique}-data`, serverId };
      const { volumeId, sha256: volumeSha256 } = await attachMarkerVolume(cloud!, demo(), data, volumes);
      lap("server and volume");
      const snapshotFiles = async () => (await fs.readdir(cloud!.volumesDir)).filter((f) => f.startsWith("snapshot-"));
      const snapshotsBefore = await snapshotFiles();

      // A point of it, into a directory target.
      const target = path.join(tempDir(), "target");
      await makeTarget(target);
      const provider = createBackupSetProvider(cloudSetHost(cloud!));
      const checked = await provider.check(
        {},
        {
          policy: {
            id: "zone-n-1",
            zone: "zone-n",
            target: { kind: "directory", path: target },
            compression: "zstd",
            integrityCheck: "metadata",
            bandwidthLimitMiBps: 0,
            encrypted: false,
          },
          keys: { manifestKey: MANIFEST_KEY },
          sources: [{ name: "web", novaServer: serverId }],
          trigger: `${unique}-t1`,
        },
      );
      expect(checked.failures).toBeUndefined();
      const outs = (await provider.create(checked.inputs!)).outs as BackupSetOutputs;
      lap("backup");
      const read = readManifest(await fs.readFile(outs.manifestPath, "utf8"));
      if (!read.ok) throw new Error(read.problem);
      expect(read.manifest.cloudItems).toBeUndefined();
      // The flavor's disk and the volume.
      expect(read.manifest.items.map((i) => [i.name, i.virtualSize])).toEqual([
        ["web", GiB],
        ["web.vdb", GiB],
      ]);
      const root = read.manifest.items[0].source as NovaServerItem;
      expect(root).toMatchObject({
        kind: "novaServer",
        serverId,
        disk: { role: "root", via: "image" },
        server: {
          name: `${unique}-web`,
          imageId,
          bootedFromVolume: false,
          metadata: { coffer_test: unique },
          networks: [],
          flavor: { name: "coffer.tiny", diskGiB: 1 },
          blockDeviceMapping: [{ volumeId, device: "/dev/vdb", boot: false, item: "web.vdb" }],
        },
      });
      expect(read.manifest.items[1].source).toMatchObject({
        kind: "novaServer",
        serverId,
        disk: { role: "volume", device: "/dev/vdb", volumeId, via: "snapshot", volume: { sizeGiB: 1 } },
      });

      // Nothing of the transfer is left: no image, no snapshot, no temporary volume, no staged file.
      const images_ = await collect(glance.listImages());
      expect(images_.filter((i) => i.name?.startsWith("coffer-copy ") && i.name.includes(unique))).toEqual([]);
      expect(images_.filter((i) => i.properties.instance_uuid === serverId)).toEqual([]);
      const leftVolumes = (await collect(cinder.listVolumes())).filter(
        (v) => v.name?.startsWith("coffer-copy ") && v.name.includes(unique) && v.status !== "deleting",
      );
      expect(leftVolumes).toEqual([]);
      // Other cloud tests run beside this one: their snapshots come and go in the same folder.
      expect(await collect(cinder.listSnapshots({ filters: { volume_id: volumeId } }))).toEqual([]);
      const known = new Set((await collect(cinder.listSnapshots())).map((s) => `snapshot-${s.id}`));
      const leftFiles = (await snapshotFiles()).filter((f) => !snapshotsBefore.includes(f) && !known.has(f));
      expect(leftFiles).toEqual([]);
      expect(await cinder.getVolume(volumeId)).toMatchObject({ status: "in-use" });
      expect(await fs.readdir(path.join(target, ".coffer", "staging")).catch(() => [])).toEqual([]);

      // The disk, restored to a file without the cloud, byte for byte.
      const keyFile = path.join(tempDir(), "manifest.key");
      await fs.writeFile(keyFile, MANIFEST_KEY, { mode: 0o600 });
      const restoreItem = async (item: string) => {
        const to = path.join(tempDir(), `${item}.raw`);
        const args = ["restore", "--manifest", outs.manifestPath, "--item", item, "--to", to, "--quiet"];
        const restored = await runCoffer([...args, "--manifest-key-file", keyFile]);
        expect([item, restored.code, restored.stderr]).toEqual([item, 0, ""]);
        return to;
      };
      const rootFile = await restoreItem("web");
      expect((await fs.stat(rootFile)).size).toBe(GiB);
      expect(await sha256Of(rootFile, MARKER_IMAGE_BYTES)).toBe(createHash("sha256").update(rootDisk).digest("hex"));
      expect(await sha256Of(await restoreItem("web.vdb"))).toBe(volumeSha256);
      lap("restore to files");

      // A new server from the point.
      const toNova = await runCoffer(
        [
          "restore",
          "--manifest",
          outs.manifestPath,
          "--item",
          "web",
          "--to-nova",
          "--quiet",
          "--manifest-key-file",
          keyFile,
        ],
        osEnvFor(cloud!),
      );
      const restoredServer = toNova.code === 0 ? JSON.parse(toNova.stdout) : undefined;
      if (restoredServer) servers.push(restoredServer.serverId);
      for (const v of restoredServer?.volumes ?? []) volumes.push(v.volumeId);
      expect([toNova.code, toNova.stderr]).toEqual([0, ""]);
      lap("restore --to-nova");
      expect(restoredServer).toMatchObject({
        restored: "web",
        volumes: [{ item: "web.vdb", volumeId: expect.any(String) }],
        metadataApplied: true,
      });
      const recreated = await nova.getServer(restoredServer.serverId);
      expect(recreated).toMatchObject({
        name: `${unique}-web-restored`,
        status: "ACTIVE",
        metadata: { coffer_test: unique },
        flavor: { original_name: "coffer.tiny" },
      });
      const restoredVolumeId = restoredServer.volumes[0].volumeId as string;
      expect(restoredVolumeId).not.toBe(volumeId);
      const attached = await nova.listVolumeAttachments(restoredServer.serverId);
      expect(attached.map((a) => [a.volumeId, a.device])).toEqual([[restoredVolumeId, "/dev/vdb"]]);
      expect(await sha256Of(path.join(cloud!.volumesDir, `volume-${restoredVolumeId}`))).toBe(volumeSha256);
      // Its root disk, as nova-compute keeps it: the same bytes as the original's.
      const instanceDisk = path.join(cloud!.nova!.instancesDir!, restoredServer.serverId, "disk");
      const asRaw = path.join(tempDir(), "recreated-root.raw");
      await run("qemu-img", ["convert", "-U", "-q", "-O", "raw", instanceDisk, asRaw]);
      expect(await sha256Of(asRaw, MARKER_IMAGE_BYTES)).toBe(createHash("sha256").update(rootDisk).digest("hex"));
      // The images made for the restore are gone.
      const afterRestore = await collect(glance.listImages());
      expect(afterRestore.filter((i) => i.name?.startsWith("coffer restore of "))).toEqual([]);
      console.log(`nova source test timings: ${timings.join(", ")}`);
    });
  },
);
