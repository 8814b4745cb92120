/**
 * Nova on the loopback cloud, the groundwork of servers as backup sources: a raw image with marker
 * bytes boots a real server (libvirt, QEMU under TCG), Coffer's client reads it, and the server's
 * createImage snapshot, downloaded and converted to raw, holds the same bytes.
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { createWriteStream, promises as fs } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { cloudDeps, waitForServer, waitForServerDeleted, waitForStatus } from "../../provider/openstack";
import { cloudAs } from "../support/cloudAccess";
import { cloudMissingNote, loopbackCloud, loopbackCloudWithNova, novaMissingNote } from "../support/loopbackCloud";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(10 * 60_000);

const run = promisify(execFile);
const cloud = loopbackCloudWithNova();
const describeNova = cloud ? describe : describe.skip;
const unique = `coffer-nova-${randomUUID().slice(0, 8)}`;
const MiB = 1024 * 1024;
const imageBytes = 16 * MiB;
/** 4 KiB of random bytes at each of these offsets; the rest of the image is zeros. */
const markerOffsets = [0, 1 * MiB + 512, 7 * MiB + 4096, imageBytes - 4096];
const waits = { timeoutMs: 300_000, deps: cloudDeps() };

describeNova(
  cloud ? "a Nova server on the loopback cloud" : loopbackCloud() ? novaMissingNote : cloudMissingNote,
  () => {
    const tempDir = useTempDir("coffer-nova-");
    const demo = () => cloudAs(cloud!);
    const admin = () => cloudAs(cloud!, cloud!.admin);
    const servers: string[] = [];
    const images: string[] = [];

    afterAll(async () => {
      const { nova, glance } = demo();
      for (const id of servers) {
        await nova.deleteServer(id).catch(() => undefined);
        await waitForServerDeleted(nova, id, waits).catch(() => undefined);
      }
      for (const id of images) await glance.deleteImage(id).catch(() => undefined);
    });

    test("boots a server from a raw image; its createImage snapshot holds the image's bytes", async () => {
      const { nova, glance } = demo();
      const timings: string[] = [];
      let started = Date.now();
      const lap = (what: string) => {
        timings.push(`${what} ${((Date.now() - started) / 1000).toFixed(1)} s`);
        started = Date.now();
      };

      const raw = path.join(tempDir(), "disk.raw");
      const markers = markerOffsets.map(() => randomBytes(4096));
      const disk = Buffer.alloc(imageBytes);
      markerOffsets.forEach((offset, i) => markers[i].copy(disk, offset));
      await fs.writeFile(raw, disk);
      const image = await glance.createImage({ name: `${unique}-base`, diskFormat: "raw", containerFormat: "bare" });
      images.push(image.id);
      await glance.uploadImageData(image.id, raw);
      await waitForImageActive(image.id);
      lap("upload");

      const userData = `#cloud-config\n# ${unique}\n`;
      const { id } = await nova.createServer({
        name: `${unique}-server`,
        imageId: image.id,
        flavorId: cloud!.nova!.flavorId!,
        networks: "none",
        metadata: { coffer_test: unique },
        userData,
      });
      servers.push(id);
      const active = await waitForServer(nova, id, waits);
      lap("boot");
      expect(active).toMatchObject({
        name: `${unique}-server`,
        image: image.id,
        metadata: { coffer_test: unique },
        key_name: null,
        addresses: {},
        "os-extended-volumes:volumes_attached": [],
      });
      expect(active.flavor).toMatchObject({ original_name: "coffer.tiny", ram: 64, disk: 1, vcpus: 1 });
      // user_data is for admins (>= 2.3): the project member does not see it, the admin gets the base64.
      expect(active["OS-EXT-SRV-ATTR:user_data"]).toBeUndefined();
      const asAdmin = await admin().nova.getServer(id);
      expect(Buffer.from(asAdmin["OS-EXT-SRV-ATTR:user_data"] ?? "", "base64").toString()).toBe(userData);
      expect(await nova.listVolumeAttachments(id)).toEqual([]);
      const listed = [];
      for await (const server of nova.listServers({ filters: { name: unique } })) listed.push(server.id);
      expect(listed).toEqual([id]);

      const { imageId } = await nova.createImage(id, { name: `${unique}-snapshot`, metadata: { coffer_point: "1" } });
      images.push(imageId);
      const snapshot = await waitForImageActive(imageId);
      lap("createImage");
      expect(snapshot.properties).toMatchObject({ image_type: "snapshot", instance_uuid: id, coffer_point: "1" });

      const downloaded = path.join(tempDir(), "snapshot.img");
      await glance.downloadImageData(imageId, createWriteStream(downloaded));
      const converted = path.join(tempDir(), "snapshot.raw");
      await run("qemu-img", ["convert", "-q", "-O", "raw", downloaded, converted]);
      lap("download and convert");
      const info = JSON.parse((await run("qemu-img", ["info", "--output=json", converted])).stdout);
      expect(info["virtual-size"]).toBe(1024 * MiB); // the flavor's disk
      const file = await fs.open(converted, "r");
      try {
        const head = Buffer.alloc(imageBytes);
        await file.read(head, 0, imageBytes, 0);
        markerOffsets.forEach((offset, i) =>
          expect(head.subarray(offset, offset + 4096).equals(markers[i])).toBe(true),
        );
        expect(head.equals(disk)).toBe(true);
      } finally {
        await file.close();
      }

      await nova.deleteServer(id);
      await waitForServerDeleted(nova, id, waits);
      lap("delete");
      console.log(`nova test timings: ${timings.join(", ")}`);
    });

    async function waitForImageActive(id: string) {
      const { glance } = demo();
      return waitForStatus({
        ...waits,
        what: `glance image ${id}`,
        get: () => glance.getImage(id),
        status: (image) => image.status,
        until: ["active"],
        failed: ["killed", "deleted"],
      });
    }
  },
);
