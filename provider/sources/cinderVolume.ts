import { z } from "zod";
import { CofferError, isCofferError } from "../common/errors";
import { escrowVolumeKey } from "../escrow/record";
import type { Volume } from "../openstack/cinderSchemas";
import { collect } from "../openstack/paginate";
import { waitForBackup, waitForBackupDeleted, waitForSnapshot, waitForSnapshotDeleted } from "../openstack/cinderWaits";
import { copyToTarget } from "./cinderCopy";
import { BACKUP_TIMEOUT_MS, SNAPSHOT_TIMEOUT_MS, waitOptions } from "./cloudWaits";
import type { CloudBackupRef, CloudContext, CloudTakeContext, KeyEscrow, SourceKind, SourceRules } from "./kind";
import { incrementalField, kindInput } from "./kind";
import { storedCopiesOf } from "./storedImage";

/** A Cinder volume, backed up by Cinder's own backup service (cinder-backup) into the cloud's backup store. */
export interface CinderVolumeInput {
  cinderVolume: string;
  incremental?: boolean;
  force?: boolean;
  fromSnapshot?: boolean;
  copyToTarget?: boolean;
}

const flag = (field: string, meaning: string) =>
  z.boolean({ error: `${field} must be true or false: ${meaning}` }).optional();

const fields = {
  cinderVolume: z
    .string({ error: "cinderVolume must be a Cinder volume's id, e.g. volume.id of an openstack.blockstorage.Volume" })
    .regex(/^[A-Za-z0-9-]{1,64}$/, { message: "cinderVolume must be a Cinder volume's id (a UUID), not its name" })
    .optional(),
  incremental: incrementalField,
  force: flag("force", "back up the volume while it is attached (in-use)"),
  fromSnapshot: flag("fromSnapshot", "back up a snapshot taken for the purpose, deleted afterwards"),
  copyToTarget: flag("copyToTarget", "also keep a copy of the volume's data in the policy's target"),
};

const rules: SourceRules = () => undefined;

/**
 * Whether a source's data is also copied into the target: a Cinder source's own `copyToTarget`
 * (true or false) wins, else the policy's. Other kinds have no copy.
 */
export function copiesToTarget(source: object, policyCopyToTarget: boolean | undefined): boolean {
  const { cinderVolume, copyToTarget } = source as Partial<CinderVolumeInput>;
  return cinderVolume !== undefined && (copyToTarget ?? policyCopyToTarget ?? false);
}

/** The type a volume had: enough to recreate it where it is gone (its encryption spec, when readable). */
const volumeType = z.object({
  id: z.string().optional(),
  name: z.string(),
  /** Absent: the type has no encryption, or (`encryptionReadable` false) it could not be read. */
  encryption: z
    .object({
      provider: z.string(),
      cipher: z.string().optional(),
      keySize: z.number().int().optional(),
      controlLocation: z.string(),
    })
    .optional(),
  /** False when the credentials could not read the type's encryption (an admin API). */
  encryptionReadable: z.boolean(),
});

const item = z.object({
  kind: z.literal("cinderVolume"),
  cloud: z.object({ authUrl: z.string(), region: z.string().optional(), projectId: z.string() }),
  volumeId: z.string(),
  backupId: z.string(),
  /** The backup an incremental builds on (Cinder's choice: the volume's newest backup). */
  parentBackupId: z.string().optional(),
  incremental: z.boolean(),
  force: z.boolean(),
  /** The snapshot the backup was made from, deleted since. */
  snapshotId: z.string().optional(),
  volume: z.object({
    name: z.string().optional(),
    sizeGiB: z.number().int(),
    bootable: z.boolean(),
    availabilityZone: z.string().optional(),
    type: volumeType,
    metadata: z.record(z.string(), z.string()),
    /** Glance metadata (image properties, licensing data) of a volume made from an image. */
    imageMetadata: z.record(z.string(), z.string()),
    encrypted: z.boolean(),
    encryptionKeyId: z.string().optional(),
  }),
  /** The Barbican secret of the backup's own clone of the volume's key. */
  backupKeyId: z.string().optional(),
  /** Escrow records of the keys its data needs (the backup's), for when Barbican loses them. */
  escrowedKeys: z.array(z.object({ barbicanSecret: z.string(), record: z.string(), store: z.string() })).optional(),
  /**
   * The copy in the target (copyToTarget): the Glance image it was streamed through and its hash as
   * Glance had it. An encrypted volume's copy holds its LUKS container: its key is escrowed.
   */
  copy: z
    .object({
      via: z.enum(["volume", "snapshot"]),
      hashAlgo: z.string(),
      hashValue: z.string(),
      sizeBytes: z.number().int(),
    })
    .optional(),
});
export type CinderVolumeItem = z.output<typeof item>;

/** The volume's type as the manifest records it; the encryption spec needs an admin API, so it may be unreadable. */
async function typeOf(volume: Volume, ctx: CloudContext) {
  const { cinder } = ctx.cloud;
  const byName = volume.volume_type_id
    ? undefined
    : (await cinder.listVolumeTypes(ctx.signal)).find((t) => t.name === volume.volume_type);
  const id = volume.volume_type_id ?? byName?.id;
  const name = volume.volume_type ?? byName?.name ?? "";
  if (!id) return { name, encryptionReadable: false };
  try {
    const spec = await cinder.getVolumeTypeEncryption(id, ctx.signal);
    const encryption = spec && {
      provider: spec.provider,
      ...(spec.cipher ? { cipher: spec.cipher } : {}),
      ...(spec.key_size ? { keySize: spec.key_size } : {}),
      controlLocation: spec.control_location,
    };
    return { id, name, ...(encryption ? { encryption } : {}), encryptionReadable: true };
  } catch (error) {
    if (isCofferError(error) && (error.code === "CLOUD_FORBIDDEN" || error.code === "CLOUD_NOT_FOUND"))
      return { id, name, encryptionReadable: false };
    throw error;
  }
}

/**
 * The backup an incremental of `volumeId` would build on: Cinder takes the volume's newest
 * available backup. Undefined when that is not one of this set's (another tool's backup, or
 * one pruned): then a full backup is taken, so that the set's retention protects every chain.
 */
async function parentFor(volumeId: string, ctx: CloudTakeContext): Promise<string | undefined> {
  const backups = await collect(ctx.cloud.cinder.listBackups({ filters: { volume_id: volumeId }, signal: ctx.signal }));
  const newest = backups
    .filter((b) => b.status === "available")
    .sort((a, b) => Date.parse(b.data_timestamp ?? b.created_at) - Date.parse(a.data_timestamp ?? a.created_at))[0];
  if (!newest) return undefined;
  if (ctx.earlier.some((ref) => ref.id === newest.id)) return newest.id;
  ctx.progress(`${ctx.subject}: the volume's newest backup ${newest.id} is not this set's: taking a full backup`);
  return undefined;
}

/** An encrypted volume's backup is only taken when its key can be escrowed. */
function refuseWithoutEscrow(volume: Volume, ctx: CloudTakeContext): KeyEscrow {
  if (ctx.keyEscrow) return ctx.keyEscrow;
  const message =
    `volume ${volume.id} is encrypted: its key must be escrowed, or its backups are lost with Barbican's copy; ` +
    "give the set (keyEscrow or escrow) or its policy a coffer.SecretEscrow";
  throw new CofferError("INVALID_INPUT", `${ctx.subject}: ${message}`);
}

/** Escrows the keys the backup's data needs, each in its own record. */
async function escrowKeys(keyIds: string[], escrow: KeyEscrow, ctx: CloudTakeContext) {
  const escrowed = [];
  for (const barbicanSecret of keyIds) {
    const bytes = await ctx.cloud.barbican.getSecretPayload(barbicanSecret, ctx.signal);
    const record = await escrowVolumeKey(escrow.store, { barbicanSecret, bytes }, escrow.recipients, escrow.threshold);
    escrowed.push({ barbicanSecret, record, store: escrow.store });
  }
  return escrowed;
}

const backupName = (label: CloudTakeContext["label"]) => `coffer ${label.setId}/${label.pointId} ${label.source}`;

async function take(input: CinderVolumeInput, ctx: CloudTakeContext) {
  const { cinder } = ctx.cloud;
  const volumeId = input.cinderVolume;
  const volume = await cinder.getVolume(volumeId, ctx.signal);
  const keyEscrow = volume.encrypted ? refuseWithoutEscrow(volume, ctx) : undefined;
  const type = await typeOf(volume, ctx);
  const parent = input.incremental ? await parentFor(volumeId, ctx) : undefined;
  const made: { snapshot?: string; backup?: string; snapshotDeleted?: string } = {};
  const discard = async () => {
    const waits = waitOptions({ ...ctx, signal: undefined }, "cleanup", SNAPSHOT_TIMEOUT_MS);
    if (made.backup) {
      await cinder.deleteBackup(made.backup).catch(() => undefined);
      await waitForBackupDeleted(cinder, made.backup, waits).catch(() => undefined);
    }
    if (made.snapshot) {
      await cinder.deleteSnapshot(made.snapshot).catch(() => undefined);
      await waitForSnapshotDeleted(cinder, made.snapshot, waits).catch(() => undefined);
    }
  };
  try {
    const metadata = {
      "coffer-set": ctx.label.setId,
      "coffer-point": ctx.label.pointId,
      "coffer-source": ctx.label.source,
    };
    if (input.fromSnapshot) {
      const name = backupName(ctx.label);
      const snapshot = await cinder.createSnapshot({ volumeId, name, force: input.force, metadata }, ctx.signal);
      made.snapshot = snapshot.id;
      await waitForSnapshot(cinder, snapshot.id, waitOptions(ctx, `snapshot ${snapshot.id}`, SNAPSHOT_TIMEOUT_MS));
    }
    const created = await cinder.createBackup(
      {
        volumeId,
        name: backupName(ctx.label),
        description: "taken by Coffer; deleted only by the set's retention or an explicit request",
        incremental: parent !== undefined,
        force: input.force,
        snapshotId: made.snapshot,
        metadata,
      },
      ctx.signal,
    );
    made.backup = created.id;
    ctx.progress(
      `${ctx.subject}: cinder backup ${created.id} started (${parent ? `incremental on ${parent}` : "full"})`,
    );
    const backup = await waitForBackup(cinder, created.id, waitOptions(ctx, `backup ${created.id}`, BACKUP_TIMEOUT_MS));
    const copied = input.copyToTarget ? await copyToTarget(volume, made.snapshot, ctx) : undefined;
    if (made.snapshot) {
      const snapshot = made.snapshot;
      await cinder.deleteSnapshot(snapshot, ctx.signal);
      await waitForSnapshotDeleted(cinder, snapshot, waitOptions(ctx, `snapshot ${snapshot}`, SNAPSHOT_TIMEOUT_MS));
      made.snapshot = undefined;
      made.snapshotDeleted = snapshot;
    }
    // The backup's data is encrypted with its own clone of the volume's key: that one restores it.
    const keyIds = [backup.encryption_key_id].filter((k): k is string => !!k);
    if (keyEscrow && keyIds.length === 0) {
      const message = `cinder backup ${backup.id} of encrypted volume ${volumeId} names no key (encryption_key_id)`;
      throw new CofferError("CLOUD_BAD_RESPONSE", `${ctx.subject}: ${message}: is Cinder's API older than 3.64?`);
    }
    const escrowedKeys = keyEscrow ? await escrowKeys(keyIds, keyEscrow, ctx) : undefined;
    const source: CinderVolumeItem = {
      kind: "cinderVolume",
      cloud: ctx.project,
      volumeId,
      backupId: backup.id,
      ...(parent ? { parentBackupId: parent } : {}),
      incremental: parent !== undefined,
      force: input.force ?? false,
      ...(made.snapshotDeleted ? { snapshotId: made.snapshotDeleted } : {}),
      volume: {
        ...(volume.name ? { name: volume.name } : {}),
        sizeGiB: volume.size,
        bootable: volume.bootable,
        ...(volume.availability_zone ? { availabilityZone: volume.availability_zone } : {}),
        type,
        metadata: volume.metadata ?? {},
        imageMetadata: volume.volume_image_metadata ?? {},
        encrypted: volume.encrypted ?? false,
        ...(volume.encryption_key_id ? { encryptionKeyId: volume.encryption_key_id } : {}),
      },
      ...(backup.encryption_key_id ? { backupKeyId: backup.encryption_key_id } : {}),
      ...(escrowedKeys ? { escrowedKeys } : {}),
      ...(copied ? { copy: copied.copy } : {}),
    };
    const ref: CloudBackupRef = {
      source: ctx.label.source,
      kind: "cinder-backup",
      id: backup.id,
      ...(parent ? { parent } : {}),
      ...(escrowedKeys && backup.encryption_key_id ? { key: backup.encryption_key_id } : {}),
    };
    return { source, refs: [ref], discard, ...(copied ? { stored: copied.stored } : {}) };
  } catch (error) {
    await discard();
    throw error;
  }
}

export const cinderVolumeSource: SourceKind<CinderVolumeInput, CinderVolumeItem, typeof fields> = {
  kind: "cinderVolume",
  label: "a Cinder volume",
  selectors: ["cinderVolume"],
  fields,
  rules,
  input: kindInput<CinderVolumeInput>(fields, rules),
  item,
  runsOn: "provider",
  cloud: { take },

  // What the target holds of it: nothing, or a copy (a stored image).
  ...storedCopiesOf("a Cinder volume"),
};
