/**
 * A Nova server as a source: each of its disks copied into the policy's target in Coffer's format,
 * its description (flavor, image, metadata, key name, block device mapping, security groups,
 * networks, user_data where Nova shows it) in the signed manifest. The root disk of an image-backed
 * server travels through a Glance image made by createImage; each attached volume (and the root of
 * a server booted from a volume) through a forced Cinder snapshot, as a Cinder volume's copy does.
 * Nothing is kept in the cloud: every image, snapshot, temporary volume and staged file is deleted.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { CofferError } from "../common/errors";
import type { Volume } from "../openstack/cinderSchemas";
import { waitForSnapshot, waitForSnapshotDeleted } from "../openstack/cinderWaits";
import type { Server, VolumeAttachment } from "../openstack/novaSchemas";
import { copyToTarget } from "./cinderCopy";
import { SNAPSHOT_TIMEOUT_MS, waitOptions } from "./cloudWaits";
import { stageImage, waitForImage } from "./glanceStage";
import type { CloudTakeContext, CloudTaken, SourceKind, SourceRules, StoredCopy } from "./kind";
import { kindInput } from "./kind";
import { removeStaged } from "./staging";
import { storedCopiesOf } from "./storedImage";

export interface NovaServerInput {
  novaServer: string;
}

const fields = {
  novaServer: z
    .string({ error: "novaServer must be a Nova server's id, e.g. server.id of an openstack.compute.Instance" })
    .regex(/^[A-Za-z0-9-]{1,64}$/, { message: "novaServer must be a Nova server's id (a UUID), not its name" })
    .optional(),
};

const rules: SourceRules = () => undefined;

/** The server as Nova described it when the point was taken: what `restore --to-nova` recreates. */
const serverDescription = z.object({
  name: z.string(),
  status: z.string(),
  /** From 2.47 Nova embeds the flavor's values and names it (original_name), without its id. */
  flavor: z.object({
    id: z.string().optional(),
    name: z.string().optional(),
    vcpus: z.number().optional(),
    ramMiB: z.number().optional(),
    diskGiB: z.number().optional(),
    ephemeralGiB: z.number().optional(),
    swapMiB: z.number().optional(),
    extraSpecs: z.record(z.string(), z.string()).optional(),
  }),
  /** The image it was built from; absent for a server booted from a volume. */
  imageId: z.string().optional(),
  bootedFromVolume: z.boolean(),
  metadata: z.record(z.string(), z.string()),
  keyName: z.string().optional(),
  availabilityZone: z.string().optional(),
  securityGroups: z.array(z.string()),
  /** Its addresses by network name (empty: a server without ports, networks "none"). */
  networks: z.array(
    z.object({
      name: z.string(),
      addresses: z.array(z.object({ addr: z.string(), version: z.number().optional(), type: z.string().optional() })),
    }),
  ),
  /** Its volumes as Nova maps them, and the item holding each one's copy. */
  blockDeviceMapping: z.array(
    z.object({
      volumeId: z.string(),
      device: z.string().optional(),
      boot: z.boolean(),
      deleteOnTermination: z.boolean().optional(),
      item: z.string(),
    }),
  ),
  /** Base64, as Nova shows it (to admins, microversion >= 2.3); absent where it is not shown. */
  userData: z.string().optional(),
});
export type NovaServerDescription = z.output<typeof serverDescription>;

const item = z.object({
  kind: z.literal("novaServer"),
  cloud: z.object({ authUrl: z.string(), region: z.string().optional(), projectId: z.string() }),
  serverId: z.string(),
  /** Which of the server's disks this item holds, and how its data came out of the cloud. */
  disk: z.object({
    /** "root": the disk it boots from; "volume": an attached volume. */
    role: z.enum(["root", "volume"]),
    device: z.string().optional(),
    /** The volume's id: an attached volume, or the root of a server booted from a volume. */
    volumeId: z.string().optional(),
    volume: z
      .object({
        name: z.string().optional(),
        sizeGiB: z.number().int(),
        bootable: z.boolean(),
        type: z.string().optional(),
        metadata: z.record(z.string(), z.string()),
      })
      .optional(),
    /** "image": a createImage snapshot of the root disk (deleted since); "snapshot": a Cinder snapshot's. */
    via: z.enum(["image", "snapshot"]),
    /** The format of the data as it was stored (the image's disk format, or raw for a volume). */
    format: z.enum(["raw", "qcow2"]),
    /** The transfer image's hash as Glance had it. */
    hashAlgo: z.string(),
    hashValue: z.string(),
    sizeBytes: z.number().int(),
  }),
  /** The server's description: in the root disk's item. */
  server: serverDescription.optional(),
});
export type NovaServerItem = z.output<typeof item>;

/** The name of the item that holds `attachment`'s copy: `<source>.<device basename>` ("web.vdb"). */
export function volumeItemName(source: string, attachment: Pick<VolumeAttachment, "device" | "volumeId">): string {
  const device = attachment.device ? path.basename(attachment.device) : attachment.volumeId.slice(0, 8);
  return `${source}.${device.replace(/[^A-Za-z0-9._-]/g, "-")}`;
}

/** The attachment a server booted from a volume boots from: its root device's, else the first device. */
function rootAttachment(server: Server, attachments: VolumeAttachment[]): VolumeAttachment | undefined {
  const root = server["OS-EXT-SRV-ATTR:root_device_name"];
  const named = root ? attachments.find((a) => a.device === root) : undefined;
  return named ?? [...attachments].sort((a, b) => (a.device ?? "~").localeCompare(b.device ?? "~"))[0];
}

function descriptionOf(server: Server, disks: NovaServerDescription["blockDeviceMapping"]): NovaServerDescription {
  const { flavor } = server;
  const optional = <T>(value: T | null | undefined) => value ?? undefined;
  const defined = (record: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(record).filter(([, v]) => v !== undefined));
  return serverDescription.parse({
    name: server.name,
    status: server.status,
    flavor: defined({
      id: optional(flavor.id),
      name: optional(flavor.original_name),
      vcpus: optional(flavor.vcpus),
      ramMiB: optional(flavor.ram),
      diskGiB: optional(flavor.disk),
      ephemeralGiB: optional(flavor.ephemeral),
      swapMiB: optional(flavor.swap),
      extraSpecs: optional(flavor.extra_specs),
    }),
    ...(server.image ? { imageId: server.image } : {}),
    bootedFromVolume: !server.image,
    metadata: server.metadata ?? {},
    ...(server.key_name ? { keyName: server.key_name } : {}),
    ...(server["OS-EXT-AZ:availability_zone"] ? { availabilityZone: server["OS-EXT-AZ:availability_zone"] } : {}),
    securityGroups: [...new Set((server.security_groups ?? []).map((g) => g.name))],
    networks: Object.entries(server.addresses ?? {}).map(([name, addresses]) => ({
      name,
      addresses: addresses.map((a) =>
        defined({ addr: a.addr, version: optional(a.version), type: optional(a["OS-EXT-IPS:type"]) }),
      ),
    })),
    blockDeviceMapping: disks,
    ...(server["OS-EXT-SRV-ATTR:user_data"] ? { userData: server["OS-EXT-SRV-ATTR:user_data"] } : {}),
  });
}

/** What the cloud holds for a while during a take: all of it is deleted before take returns. */
interface Temporary {
  image?: string;
  snapshots: string[];
  files: string[];
}

const volumeRecord = (volume: Volume) => ({
  ...(volume.name ? { name: volume.name } : {}),
  sizeGiB: volume.size,
  bootable: volume.bootable,
  ...(volume.volume_type ? { type: volume.volume_type } : {}),
  metadata: volume.metadata ?? {},
});

async function take(input: NovaServerInput, ctx: CloudTakeContext): Promise<CloudTaken<NovaServerItem>> {
  const { nova, cinder, glance } = ctx.cloud;
  const server = await nova.getServer(input.novaServer, ctx.signal);
  const attachments = await nova.listVolumeAttachments(server.id, ctx.signal);
  const bootVolume = server.image ? undefined : rootAttachment(server, attachments);
  if (!server.image && !bootVolume) {
    const message = `nova server ${server.id} has no image and no volume to boot from: nothing to back up`;
    throw new CofferError("SOURCE_MISSING", `${ctx.subject}: ${message}`);
  }
  const source = ctx.label.source;
  const itemOf = (a: VolumeAttachment) => (a === bootVolume ? source : volumeItemName(source, a));
  const names = attachments.map(itemOf);
  const repeated = names.find((n, i) => names.indexOf(n) !== i);
  if (repeated) {
    const message = `two of server ${server.id}'s volumes would both be item ${repeated} (same device name)`;
    throw new CofferError("INVALID_INPUT", `${ctx.subject}: ${message}`);
  }
  const volumes = new Map<string, Volume>();
  for (const a of attachments) {
    const volume = await cinder.getVolume(a.volumeId, ctx.signal);
    if (volume.encrypted) {
      const message =
        `volume ${volume.id} is encrypted: its copy would need its key escrowed; back it up as a cinderVolume ` +
        "source with the set's keyEscrow, and the server without it";
      throw new CofferError("INVALID_INPUT", `${ctx.subject}: ${message}`);
    }
    volumes.set(a.volumeId, volume);
  }
  const description = descriptionOf(
    server,
    attachments.map((a) => ({
      volumeId: a.volumeId,
      ...(a.device ? { device: a.device } : {}),
      boot: a === bootVolume,
      ...(typeof a.delete_on_termination === "boolean" ? { deleteOnTermination: a.delete_on_termination } : {}),
      item: itemOf(a),
    })),
  );
  const name = `coffer-copy ${ctx.label.setId}/${ctx.label.pointId} ${source}`;
  const metadata = { "coffer-set": ctx.label.setId, "coffer-point": ctx.label.pointId, "coffer-source": source };
  const temporary: Temporary = { snapshots: [], files: [] };
  const cloud = { cloud: ctx.project, serverId: server.id };
  try {
    // Every disk's point in time is taken before any copy starts: the disks are consistent with each other.
    if (server.image) {
      ctx.progress(`${ctx.subject}: snapshotting server ${server.id}'s root disk (createImage)`);
      temporary.image = (await nova.createImage(server.id, { name, metadata }, ctx.signal)).imageId;
    }
    const snapshots = new Map<string, string>();
    for (const a of attachments) {
      const snapshot = await cinder.createSnapshot({ volumeId: a.volumeId, name, force: true, metadata }, ctx.signal);
      temporary.snapshots.push(snapshot.id);
      snapshots.set(a.volumeId, snapshot.id);
    }
    for (const id of temporary.snapshots) {
      await waitForSnapshot(cinder, id, waitOptions(ctx, `snapshot ${id}`, SNAPSHOT_TIMEOUT_MS));
    }
    const copies: CloudTaken<NovaServerItem>["copies"] = [];
    if (temporary.image) {
      const copied = await copyRootImage(temporary.image, temporary, ctx);
      // The transfer image goes as soon as its copy is stored and verified: it is the owner's data.
      await glance.deleteImage(temporary.image);
      temporary.image = undefined;
      const disk = { role: "root" as const, via: "image" as const, ...copied.disk };
      copies.push({ source: { kind: "novaServer", ...cloud, disk, server: description }, stored: copied.stored });
    }
    for (const a of attachments) {
      const itemName = itemOf(a);
      const volume = volumes.get(a.volumeId)!;
      const copyCtx: CloudTakeContext = {
        ...ctx,
        label: { ...ctx.label, source: itemName },
        storeCopy: (file) => ctx.storeCopy(file, { name: itemName, format: "raw" }),
      };
      ctx.progress(`${ctx.subject}: copying volume ${a.volumeId} (${a.device ?? "no device"}) as ${itemName}`);
      const copied = await copyToTarget(volume, snapshots.get(a.volumeId), copyCtx);
      const isRoot = a === bootVolume;
      const disk = {
        role: isRoot ? ("root" as const) : ("volume" as const),
        ...(a.device ? { device: a.device } : {}),
        volumeId: a.volumeId,
        volume: volumeRecord(volume),
        via: "snapshot" as const,
        format: "raw" as const,
        hashAlgo: copied.copy.hashAlgo,
        hashValue: copied.copy.hashValue,
        sizeBytes: copied.copy.sizeBytes,
      };
      const item: NovaServerItem = { kind: "novaServer", ...cloud, disk, ...(isRoot ? { server: description } : {}) };
      copies.push({ source: item, stored: copied.stored });
    }
    // The root disk's item first: it names the server.
    copies.sort((a, b) => Number(b.source.disk.role === "root") - Number(a.source.disk.role === "root"));
    return { source: copies[0].source, refs: [], copies, discard: async () => undefined };
  } finally {
    await removeTemporary(temporary, ctx);
  }
}

/** The root disk's createImage snapshot, staged (hash checked) and stored as the source's own item. */
async function copyRootImage(
  imageId: string,
  temporary: Temporary,
  ctx: CloudTakeContext,
): Promise<{ stored: StoredCopy; disk: Omit<NovaServerItem["disk"], "role" | "via"> }> {
  const image = await waitForImage(imageId, ctx);
  const diskFormat = image.disk_format ?? "raw";
  if (diskFormat !== "raw" && diskFormat !== "qcow2") {
    const message = `the server's snapshot (glance image ${imageId}) is ${diskFormat}: Coffer stores raw or qcow2`;
    throw new CofferError("SOURCE_MISSING", `${ctx.subject}: ${message}`);
  }
  const format: "raw" | "qcow2" = diskFormat;
  await fs.mkdir(ctx.stagingDir, { recursive: true, mode: 0o700 });
  const file = path.join(ctx.stagingDir, `${ctx.label.pointId}-${ctx.label.source}-${randomBytes(4).toString("hex")}`);
  temporary.files.push(file);
  ctx.progress(`${ctx.subject}: downloading glance image ${imageId} (the root disk)`);
  const staged = await stageImage(imageId, file, ctx);
  // A qcow2 snapshot is stored as the guest's data (its backing chain refused: it must be self-contained).
  const stored = await ctx.storeCopy(file, { name: ctx.label.source, format });
  await removeStaged(file, ctx.scrubStaging);
  const disk = { format, hashAlgo: staged.hashAlgo, hashValue: staged.hashValue, sizeBytes: staged.sizeBytes };
  return { stored, disk };
}

/** Deletes what a take made, whatever happened; a failure to delete one thing does not stop the others. */
async function removeTemporary(temporary: Temporary, ctx: CloudTakeContext): Promise<void> {
  const { cinder, glance } = ctx.cloud;
  const cleanup = waitOptions({ ...ctx, signal: undefined }, "cleanup", SNAPSHOT_TIMEOUT_MS);
  for (const file of temporary.files) await removeStaged(file, ctx.scrubStaging).catch(() => undefined);
  if (temporary.image) {
    // An image still being made can't always be deleted at once: wait for it to settle, then delete.
    const imageId = temporary.image;
    await glance.deleteImage(imageId).catch(async () => {
      await waitForImage(imageId, { ...ctx, signal: undefined }).catch(() => undefined);
      await glance.deleteImage(imageId).catch(() => undefined);
    });
  }
  for (const id of temporary.snapshots) await cinder.deleteSnapshot(id).catch(() => undefined);
  for (const id of temporary.snapshots) await waitForSnapshotDeleted(cinder, id, cleanup).catch(() => undefined);
}

export const novaServerSource: SourceKind<NovaServerInput, NovaServerItem, typeof fields> = {
  kind: "novaServer",
  label: "a Nova server",
  selectors: ["novaServer"],
  fields,
  rules,
  input: kindInput<NovaServerInput>(fields, rules),
  item,
  runsOn: "provider",
  cloud: { take },

  // What the target holds of it: a copy of each disk (a stored image).
  ...storedCopiesOf("a Nova server"),
};
