import { z } from "zod";

/** Cinder v3 response bodies, as the API reference spells them (fields Coffer reads; others dropped). */
const metadata = z.record(z.string(), z.string());
const links = z.array(z.object({ rel: z.string(), href: z.string() })).nullish();

export const volumeSchema = z.object({
  id: z.string(),
  name: z.string().nullish(),
  description: z.string().nullish(),
  status: z.string(),
  size: z.number(),
  volume_type: z.string().nullish(),
  /** Microversion 3.63. */
  volume_type_id: z.string().nullish(),
  /** The Glance metadata a volume made from an image carries (image properties, licensing data). */
  volume_image_metadata: metadata.nullish(),
  /** Cinder sends "true"/"false". */
  bootable: z.union([z.boolean(), z.string()]).transform((value) => value === true || value === "true"),
  encrypted: z.boolean().nullish(),
  /** Microversion 3.64. */
  encryption_key_id: z.string().nullish(),
  metadata: metadata.nullish(),
  availability_zone: z.string().nullish(),
  snapshot_id: z.string().nullish(),
  source_volid: z.string().nullish(),
  attachments: z.array(z.object({ server_id: z.string().nullish(), attachment_id: z.string().nullish() })).nullish(),
  created_at: z.string(),
  updated_at: z.string().nullish(),
});
export type Volume = z.infer<typeof volumeSchema>;

export const backupSchema = z.object({
  id: z.string(),
  name: z.string().nullish(),
  description: z.string().nullish(),
  status: z.string(),
  fail_reason: z.string().nullish(),
  volume_id: z.string(),
  snapshot_id: z.string().nullish(),
  size: z.number(),
  object_count: z.number().nullish(),
  is_incremental: z.boolean(),
  has_dependent_backups: z.boolean().nullish(),
  container: z.string().nullish(),
  availability_zone: z.string().nullish(),
  data_timestamp: z.string().nullish(),
  /** Microversion 3.43. */
  metadata: metadata.nullish(),
  /** Microversion 3.64: the backup's own clone of the volume's key. */
  encryption_key_id: z.string().nullish(),
  created_at: z.string(),
  updated_at: z.string().nullish(),
});
export type Backup = z.infer<typeof backupSchema>;

export const snapshotSchema = z.object({
  id: z.string(),
  name: z.string().nullish(),
  description: z.string().nullish(),
  status: z.string(),
  volume_id: z.string(),
  size: z.number(),
  metadata: metadata.nullish(),
  created_at: z.string(),
  updated_at: z.string().nullish(),
});
export type Snapshot = z.infer<typeof snapshotSchema>;

export const volumeTypeSchema = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string().nullish(),
  is_public: z.boolean().nullish(),
  extra_specs: z.record(z.string(), z.string()).nullish(),
});
export type VolumeType = z.infer<typeof volumeTypeSchema>;

export const encryptionSchema = z.object({
  volume_type_id: z.string(),
  encryption_id: z.string().nullish(),
  provider: z.string(),
  cipher: z.string().nullish(),
  key_size: z.number().nullish(),
  control_location: z.string(),
});
export type VolumeTypeEncryption = z.infer<typeof encryptionSchema>;

/** A user message (microversion 3.3): Cinder's own account of why an asynchronous request failed. */
export const messageSchema = z.object({
  user_message: z.string(),
  resource_uuid: z.string().nullish(),
  created_at: z.string(),
});
export type Message = z.infer<typeof messageSchema>;

export const volumeBody = z.object({ volume: volumeSchema });
export const volumePage = z.object({ volumes: z.array(volumeSchema), volumes_links: links });
export const backupBody = z.object({ backup: backupSchema });
export const backupCreated = z.object({ backup: z.object({ id: z.string(), name: z.string().nullish() }) });
export const backupPage = z.object({ backups: z.array(backupSchema), backups_links: links });
export const restoreBody = z.object({
  restore: z.object({ backup_id: z.string(), volume_id: z.string(), volume_name: z.string().nullish() }),
});
export const snapshotBody = z.object({ snapshot: snapshotSchema });
export const snapshotPage = z.object({ snapshots: z.array(snapshotSchema), snapshots_links: links });
export const volumeTypeBody = z.object({ volume_type: volumeTypeSchema });
export const volumeTypeList = z.object({ volume_types: z.array(volumeTypeSchema) });
/** GET /types/{id}/encryption answers {} for a type without encryption. */
export const encryptionOrEmpty = z.union([encryptionSchema, z.object({}).transform(() => undefined)]);
export const encryptionBody = z.object({ encryption: encryptionSchema.partial({ volume_type_id: true }) });
export const uploadImageBody = z.object({
  "os-volume_upload_image": z.object({
    id: z.string(),
    image_id: z.string(),
    image_name: z.string().nullish(),
    disk_format: z.string().nullish(),
    container_format: z.string().nullish(),
    status: z.string().nullish(),
  }),
});
export const metadataBody = z.object({ metadata });
export const messageList = z.object({ messages: z.array(messageSchema) });
export const anyBody = z.unknown();
