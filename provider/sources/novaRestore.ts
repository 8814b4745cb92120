/**
 * Restoring a Nova server source into a new server: its volumes first (each copy uploaded as a
 * Glance image, then a Cinder volume made from it), its root disk as a Glance image (or, for a
 * server booted from a volume, as its boot volume), then a server with the recorded flavor, key
 * name, metadata, security groups and networks, with the volumes attached. The images made for the
 * transfer are deleted afterwards; a restore that fails deletes what it made.
 */
import { CofferError, isCofferError } from "../common/errors";
import type { Cloud } from "../openstack";
import type { Flavor } from "../openstack/novaSchemas";
import { waitForVolume, waitForVolumeDeleted } from "../openstack/cinderWaits";
import { waitForServer, waitForServerDeleted } from "../openstack/novaWaits";
import { BACKUP_TIMEOUT_MS, SNAPSHOT_TIMEOUT_MS, waitOptions } from "./cloudWaits";
import { waitForImage } from "./glanceStage";
import type { CloudContext } from "./kind";
import type { NovaServerDescription, NovaServerItem } from "./novaServer";

const SERVER_TIMEOUT_MS = 30 * 60_000;

/** One disk of the server to restore: its item's source, and how to get its data into a local file. */
export interface NovaDisk {
  /** The manifest item's name. */
  name: string;
  source: NovaServerItem;
  /** Restores the disk's data into a local file in `format`, runs `work` on it, then removes it. */
  withFile<T>(format: "raw" | "qcow2", work: (file: string) => Promise<T>): Promise<T>;
}

export interface NovaRestoreOptions {
  /** The new server's name (default: the recorded name with -restored). */
  name?: string;
  /** A flavor's id or name, in place of the recorded one. */
  flavor?: string;
  /** Network ids, or ["none"]; default: "none" when the server had no network. */
  networks?: string[];
  /** Give the server its recorded metadata, key name, security groups and user_data (an authentic manifest). */
  applyMetadata: boolean;
  waits: CloudContext["waits"];
  progress(message: string): void;
}

export interface NovaPreflight {
  ok: boolean;
  checks: { check: string; ok: boolean; detail: string }[];
  flavorId?: string;
  networks?: "none" | { uuid: string }[];
}

/** Whether the restore can succeed, decided before anything is made: the flavor, the networks, every disk's item. */
export async function novaPreflight(
  root: NovaDisk,
  volumes: NovaDisk[],
  cloud: Cloud,
  options: Pick<NovaRestoreOptions, "flavor" | "networks">,
  missingItems: string[],
): Promise<NovaPreflight> {
  const server = root.source.server!;
  const checks: NovaPreflight["checks"] = [];
  const flavors = await cloud.nova.listFlavors();
  const flavor = flavorFor(server, flavors, options.flavor);
  checks.push(
    flavor
      ? { check: "flavor", ok: true, detail: `${flavor.name} (${flavor.id}): ${flavor.vcpus} vCPU, ${flavor.ram} MiB` }
      : {
          check: "flavor",
          ok: false,
          detail: options.flavor
            ? `no flavor ${options.flavor} in this cloud: give --flavor with one of ${names(flavors)}`
            : `the recorded flavor ${server.flavor.name ?? server.flavor.id ?? "(unnamed)"} is not in this cloud: ` +
              `give --flavor with one of ${names(flavors)}`,
        },
  );
  const networks = networksFor(server, options.networks);
  checks.push(
    typeof networks === "string" && networks !== "none"
      ? { check: "networks", ok: false, detail: networks }
      : {
          check: "networks",
          ok: true,
          detail: networks === "none" ? "none" : (networks as { uuid: string }[]).map((n) => n.uuid).join(", "),
        },
  );
  checks.push(
    missingItems.length === 0
      ? { check: "disks", ok: true, detail: [root, ...volumes].map((d) => d.name).join(", ") }
      : {
          check: "disks",
          ok: false,
          detail: `the manifest has no item ${missingItems.join(", ")}: restore another point`,
        },
  );
  const ok = checks.every((c) => c.ok);
  return {
    ok,
    checks,
    ...(flavor ? { flavorId: flavor.id } : {}),
    ...(typeof networks !== "string" || networks === "none" ? { networks } : {}),
  };
}

const names = (flavors: Flavor[]) => flavors.map((f) => f.name).join(", ") || "(none visible)";

function flavorFor(server: NovaServerDescription, flavors: Flavor[], asked?: string): Flavor | undefined {
  if (asked) return flavors.find((f) => f.id === asked) ?? flavors.find((f) => f.name === asked);
  const { id, name } = server.flavor;
  return (id ? flavors.find((f) => f.id === id) : undefined) ?? flavors.find((f) => f.name === name);
}

/** The networks to create the server on; a string saying what to give when they can't be told. */
function networksFor(server: NovaServerDescription, asked?: string[]): "none" | { uuid: string }[] | string {
  if (asked && asked.length > 0) return asked.includes("none") ? "none" : asked.map((uuid) => ({ uuid }));
  if (server.networks.length === 0) return "none";
  const had = server.networks.map((n) => n.name).join(", ");
  return `the server was on network(s) ${had}: give --network <id> for each (its id in this cloud), or --network none`;
}

/** Uploads a disk's data as a Glance image in `format`; returns the active image's id. */
async function uploadImage(disk: NovaDisk, format: "raw" | "qcow2", cloud: Cloud, ctx: CloudContext) {
  const image = await cloud.glance.createImage({
    name: `coffer restore of ${disk.name}`,
    diskFormat: format,
    containerFormat: "bare",
  });
  try {
    await disk.withFile(format, async (file) => {
      ctx.progress(`image ${image.id}: uploading ${disk.name}`);
      await cloud.glance.uploadImageData(image.id, file);
    });
    await waitForImage(image.id, ctx);
    return image.id;
  } catch (error) {
    await cloud.glance.deleteImage(image.id).catch(() => undefined);
    throw error;
  }
}

/**
 * Recreates the server of `root` (the root disk's item, with the server's description) and its
 * `volumes`, after `novaPreflight` said ok. Returns the new server and volumes.
 */
export async function restoreToNova(
  root: NovaDisk,
  volumes: NovaDisk[],
  cloud: Cloud,
  checked: NovaPreflight,
  options: NovaRestoreOptions,
) {
  const { nova, cinder, glance } = cloud;
  const server = root.source.server!;
  const ctx: CloudContext = {
    cloud,
    project: root.source.cloud,
    waits: options.waits,
    subject: `item ${root.name}`,
    progress: options.progress,
  };
  const made: { images: string[]; volumes: string[]; server?: string } = { images: [], volumes: [] };
  const volumeWaits = (id: string) => waitOptions(ctx, `volume ${id}`, BACKUP_TIMEOUT_MS);
  /** A volume made from a disk's data (through a raw image), of its recorded size and type. */
  const restoreVolume = async (disk: NovaDisk) => {
    const imageId = await uploadImage(disk, "raw", cloud, ctx);
    made.images.push(imageId);
    const recorded = disk.source.disk.volume;
    const volume = await cinder.createVolume({
      size: recorded?.sizeGiB ?? Math.ceil(disk.source.disk.sizeBytes / 2 ** 30),
      name: `${recorded?.name ?? disk.name}-restored`,
      ...(recorded?.type ? { volumeType: recorded.type } : {}),
      ...(options.applyMetadata && recorded ? { metadata: recorded.metadata } : {}),
      imageId,
    });
    made.volumes.push(volume.id);
    options.progress(`volume ${volume.id}: copying ${disk.name} in`);
    await waitForVolume(cinder, volume.id, volumeWaits(volume.id));
    return volume.id;
  };
  try {
    const restoredVolumes: { item: string; volumeId: string; device?: string }[] = [];
    for (const disk of volumes) {
      const volumeId = await restoreVolume(disk);
      restoredVolumes.push({
        item: disk.name,
        volumeId,
        ...(disk.source.disk.device ? { device: disk.source.disk.device } : {}),
      });
    }
    const bootVolumeId = server.bootedFromVolume ? await restoreVolume(root) : undefined;
    const imageId = bootVolumeId ? undefined : await uploadImage(root, "qcow2", cloud, ctx);
    if (imageId) made.images.push(imageId);
    const networks = checked.networks!;
    const metadataApplied = options.applyMetadata
      ? {
          metadata: server.metadata,
          ...(server.keyName ? { keyName: server.keyName } : {}),
          // A server without ports has no security groups to be in.
          ...(networks !== "none" && server.securityGroups.length > 0 ? { securityGroups: server.securityGroups } : {}),
          ...(server.userData ? { userData: Buffer.from(server.userData, "base64").toString() } : {}),
        }
      : {};
    const created = await nova.createServer({
      name: options.name ?? `${server.name}-restored`,
      ...(imageId ? { imageId } : { bootVolumeId }),
      flavorId: checked.flavorId!,
      networks,
      ...metadataApplied,
    });
    made.server = created.id;
    options.progress(`server ${created.id}: building (flavor ${checked.flavorId})`);
    await waitForServer(nova, created.id, waitOptions(ctx, `server ${created.id}`, SERVER_TIMEOUT_MS));
    for (const volume of restoredVolumes) {
      options.progress(`server ${created.id}: attaching volume ${volume.volumeId} (${volume.item})`);
      await nova.attachVolume(created.id, volume.volumeId);
      await waitForVolume(cinder, volume.volumeId, volumeWaits(volume.volumeId), ["in-use"]);
    }
    return {
      serverId: created.id,
      flavorId: checked.flavorId!,
      ...(imageId ? {} : { bootVolumeId }),
      volumes: restoredVolumes,
      metadataApplied: options.applyMetadata,
    };
  } catch (error) {
    // Nothing half-made stays: the server first (it holds the volumes), then the volumes.
    const cleanup = waitOptions({ ...ctx, signal: undefined }, "cleanup", SNAPSHOT_TIMEOUT_MS);
    if (made.server) {
      await nova.deleteServer(made.server).catch(() => undefined);
      await waitForServerDeleted(nova, made.server, cleanup).catch(() => undefined);
    }
    for (const id of made.volumes) {
      await cinder.deleteVolume(id).catch(() => undefined);
      await waitForVolumeDeleted(cinder, id, cleanup).catch(() => undefined);
    }
    const what = isCofferError(error) ? error.message : (error as Error).message;
    const code = isCofferError(error) ? error.code : "IO_FAILED";
    throw new CofferError(code, `restore --to-nova failed, and what it had made was deleted: ${what}`);
  } finally {
    for (const id of made.images) await glance.deleteImage(id).catch(() => undefined);
  }
}
