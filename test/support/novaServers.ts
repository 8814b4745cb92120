import { createHash, randomBytes } from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import * as path from "node:path";
import { type Cloud, waitForServer, waitForStatus, waitForVolume } from "../../provider/openstack";
import type { LoopbackCloud } from "./loopbackCloud";

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
/** The raw image a marker server boots from; its flavor's disk is 1 GiB. */
export const MARKER_IMAGE_BYTES = 16 * MiB;
/** 4 KiB of random bytes at each of these offsets of the image. */
const markerOffsets = [0, 1 * MiB + 512, 7 * MiB + 4096, MARKER_IMAGE_BYTES - 4096];

export const novaWaits = {
  timeoutMs: 300_000,
  deps: { now: () => Date.now(), sleep: (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)) },
};

/** SHA-256 of a file's first `length` bytes (all of it without). */
export async function sha256Of(file: string, length?: number): Promise<string> {
  const hash = createHash("sha256");
  const stream = createReadStream(file, length === undefined ? {} : { start: 0, end: length - 1 });
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * A server of the loopback cloud's tiny flavor (TCG, no network) booted from a 16 MiB raw image with
 * random markers; its id and image are pushed to `made` for the test's cleanup. Returns the image's bytes.
 */
export async function bootMarkerServer(
  cloud: LoopbackCloud,
  client: Cloud,
  options: { name: string; dir: string; metadata?: Record<string, string> },
  made: { servers: string[]; images: string[] },
): Promise<{ serverId: string; imageId: string; rootDisk: Buffer }> {
  const { glance, nova } = client;
  const rootDisk = Buffer.alloc(MARKER_IMAGE_BYTES);
  for (const offset of markerOffsets) randomBytes(4096).copy(rootDisk, offset);
  const raw = path.join(options.dir, `${options.name}-root.raw`);
  await fs.writeFile(raw, rootDisk);
  const image = await glance.createImage({ name: `${options.name}-base`, diskFormat: "raw", containerFormat: "bare" });
  made.images.push(image.id);
  await glance.uploadImageData(image.id, raw);
  await waitForStatus({
    ...novaWaits,
    what: `glance image ${image.id}`,
    get: () => glance.getImage(image.id),
    status: (found) => found.status,
    until: ["active"],
    failed: ["killed", "deleted"],
  });
  const { id: serverId } = await nova.createServer({
    name: options.name,
    imageId: image.id,
    flavorId: cloud.nova!.flavorId!,
    networks: "none",
    ...(options.metadata ? { metadata: options.metadata } : {}),
  });
  made.servers.push(serverId);
  await waitForServer(nova, serverId, novaWaits);
  return { serverId, imageId: image.id, rootDisk };
}

/**
 * A 1 GiB Cinder volume with random 4 KiB markers across it, attached to `serverId` (in-use). The markers are
 * written to the loopback driver's file before the attach. Returns the volume and the SHA-256 of its whole disk.
 */
export async function attachMarkerVolume(
  cloud: LoopbackCloud,
  client: Cloud,
  options: { name: string; serverId: string },
  volumes: string[],
): Promise<{ volumeId: string; sha256: string }> {
  const { cinder, nova } = client;
  const created = await cinder.createVolume({ size: 1, name: options.name });
  volumes.push(created.id);
  await waitForVolume(cinder, created.id, novaWaits);
  const file = path.join(cloud.volumesDir, `volume-${created.id}`);
  const handle = await fs.open(file, "r+");
  try {
    for (const offset of [0, 300 * MiB + 512, GiB - 4096]) await handle.write(randomBytes(4096), 0, 4096, offset);
  } finally {
    await handle.close();
  }
  const sha256 = await sha256Of(file);
  await nova.attachVolume(options.serverId, created.id);
  await waitForVolume(cinder, created.id, novaWaits, ["in-use"]);
  return { volumeId: created.id, sha256 };
}
