import type { z } from "zod";
import * as s from "./cinderSchemas";
import { paginate, nextLink, withQuery } from "./paginate";
import type { CloudSession, ServiceCall } from "./session";

export type { Backup, Snapshot, Volume, VolumeType, VolumeTypeEncryption } from "./cinderSchemas";

/** The microversion every call sends unless told otherwise: 3.64 shows encryption_key_id. */
export const defaultCinderMicroversion = "3.64";

export interface CreateVolumeOptions {
  readonly size: number;
  readonly name?: string;
  readonly description?: string;
  readonly volumeType?: string;
  readonly availabilityZone?: string;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly snapshotId?: string;
  readonly sourceVolumeId?: string;
  /** Creates the volume from a backup; with `volumeType`, needs microversion 3.47 (sent automatically). */
  readonly backupId?: string;
  /** Creates the volume from a Glance image (its data copied in; an encrypted image's key cloned). */
  readonly imageId?: string;
}

export interface CreateBackupOptions {
  readonly volumeId: string;
  readonly name?: string;
  readonly description?: string;
  readonly incremental?: boolean;
  /** Back up an in-use volume. */
  readonly force?: boolean;
  readonly snapshotId?: string;
  readonly container?: string;
  /** Microversion 3.43. */
  readonly metadata?: Readonly<Record<string, string>>;
}

export interface CreateSnapshotOptions {
  readonly volumeId: string;
  readonly name?: string;
  readonly description?: string;
  readonly force?: boolean;
  readonly metadata?: Readonly<Record<string, string>>;
}

export interface UploadToImageOptions {
  readonly imageName: string;
  readonly diskFormat?: string;
  readonly containerFormat?: string;
  readonly force?: boolean;
  readonly visibility?: "private" | "shared" | "community" | "public";
}

export interface ListOptions {
  /** Page size. */
  readonly limit?: number;
  readonly signal?: AbortSignal;
  /** The API's list filters, e.g. Cinder's { volume_id: "..." } or Nova's { name: "^web" }. */
  readonly filters?: Readonly<Record<string, string>>;
}

/** Cinder's block-storage API v3, with microversions. */
export class CinderClient {
  constructor(
    private readonly session: CloudSession,
    private readonly microversion = defaultCinderMicroversion,
  ) {}

  async getVolume(id: string, signal?: AbortSignal): Promise<s.Volume> {
    return (await this.call("GET", `/volumes/${enc(id)}`, `volume ${id}`, s.volumeBody, { signal })).volume;
  }

  /** Every volume of the project (GET /volumes/detail, page by page). */
  listVolumes(options: ListOptions = {}): AsyncGenerator<s.Volume> {
    return paginate(async (query) => {
      const path = withQuery("/volumes/detail", query ?? { limit: options.limit });
      const page = await this.call("GET", path, "volumes", s.volumePage, { signal: options.signal });
      return { items: page.volumes, next: nextLink(page.volumes_links) };
    }, "cinder volumes");
  }

  async createVolume(options: CreateVolumeOptions, signal?: AbortSignal): Promise<s.Volume> {
    const volume = {
      size: options.size,
      name: options.name,
      description: options.description,
      volume_type: options.volumeType,
      availability_zone: options.availabilityZone,
      metadata: options.metadata,
      snapshot_id: options.snapshotId,
      source_volid: options.sourceVolumeId,
      backup_id: options.backupId,
      imageRef: options.imageId,
    };
    const resource = options.backupId
      ? `volume from backup ${options.backupId}`
      : `volume ${options.name ?? ""}`.trim();
    const minimum = options.backupId ? "3.47" : undefined;
    return (await this.call("POST", "/volumes", resource, s.volumeBody, { json: { volume }, signal }, minimum)).volume;
  }

  async deleteVolume(id: string, signal?: AbortSignal): Promise<void> {
    await this.call("DELETE", `/volumes/${enc(id)}`, `volume ${id}`, s.anyBody, { signal });
  }

  async setBootable(id: string, bootable: boolean, signal?: AbortSignal): Promise<void> {
    await this.action(id, { "os-set_bootable": { bootable } }, signal);
  }

  /** Copies a volume into a new Glance image; returns the image's id (the image becomes active later). */
  async uploadToImage(id: string, options: UploadToImageOptions, signal?: AbortSignal): Promise<{ imageId: string }> {
    const body = {
      "os-volume_upload_image": {
        image_name: options.imageName,
        disk_format: options.diskFormat ?? "raw",
        container_format: options.containerFormat ?? "bare",
        force: options.force ?? false,
        ...(options.visibility ? { visibility: options.visibility } : {}),
      },
    };
    const reply = await this.action(id, body, signal, s.uploadImageBody);
    return { imageId: reply["os-volume_upload_image"].image_id };
  }

  /** Sets a volume's Glance metadata (image properties a volume made from an image carries). */
  async setImageMetadata(id: string, metadata: Readonly<Record<string, string>>, signal?: AbortSignal): Promise<void> {
    await this.action(id, { "os-set_image_metadata": { metadata } }, signal);
  }

  /** Replaces a volume's metadata with exactly `metadata` (PUT /volumes/{id}/metadata: other keys go). */
  async replaceVolumeMetadata(id: string, metadata: Readonly<Record<string, string>>, signal?: AbortSignal) {
    const path = `/volumes/${enc(id)}/metadata`;
    return (await this.call("PUT", path, `volume ${id}`, s.metadataBody, { json: { metadata }, signal })).metadata;
  }

  /** Adds or updates metadata keys (POST /volumes/{id}/metadata; other keys stay). */
  async setVolumeMetadata(id: string, metadata: Readonly<Record<string, string>>, signal?: AbortSignal) {
    const path = `/volumes/${enc(id)}/metadata`;
    return (await this.call("POST", path, `volume ${id}`, s.metadataBody, { json: { metadata }, signal })).metadata;
  }

  async getVolumeType(id: string, signal?: AbortSignal): Promise<s.VolumeType> {
    return (await this.call("GET", `/types/${enc(id)}`, `volume type ${id}`, s.volumeTypeBody, { signal })).volume_type;
  }

  async listVolumeTypes(signal?: AbortSignal): Promise<s.VolumeType[]> {
    return (await this.call("GET", "/types", "volume types", s.volumeTypeList, { signal })).volume_types;
  }

  /** Needs an admin role. */
  async createVolumeType(
    options: { name: string; description?: string; isPublic?: boolean; extraSpecs?: Readonly<Record<string, string>> },
    signal?: AbortSignal,
  ): Promise<s.VolumeType> {
    const volume_type = {
      name: options.name,
      description: options.description,
      "os-volume-type-access:is_public": options.isPublic ?? true,
      extra_specs: options.extraSpecs,
    };
    const json = { volume_type };
    return (await this.call("POST", "/types", `volume type ${options.name}`, s.volumeTypeBody, { json, signal }))
      .volume_type;
  }

  /** The type's encryption, or undefined for a type without. */
  async getVolumeTypeEncryption(typeId: string, signal?: AbortSignal): Promise<s.VolumeTypeEncryption | undefined> {
    const path = `/types/${enc(typeId)}/encryption`;
    return this.call("GET", path, `encryption of volume type ${typeId}`, s.encryptionOrEmpty, { signal });
  }

  /** Needs an admin role; Cinder refuses while a volume has the type. */
  async deleteVolumeType(id: string, signal?: AbortSignal): Promise<void> {
    await this.call("DELETE", `/types/${enc(id)}`, `volume type ${id}`, s.anyBody, { signal });
  }

  /** Needs an admin role. E.g. { provider: "luks", cipher: "aes-xts-plain64", keySize: 256 }. */
  async createVolumeTypeEncryption(
    typeId: string,
    options: { provider: string; cipher?: string; keySize?: number; controlLocation?: "front-end" | "back-end" },
    signal?: AbortSignal,
  ) {
    const encryption = {
      provider: options.provider,
      cipher: options.cipher,
      key_size: options.keySize,
      control_location: options.controlLocation ?? "front-end",
    };
    const path = `/types/${enc(typeId)}/encryption`;
    const reply = await this.call("POST", path, `encryption of volume type ${typeId}`, s.encryptionBody, {
      json: { encryption },
      signal,
    });
    return reply.encryption;
  }

  /** Starts a backup; returns its id at once (poll getBackup until "available"). */
  async createBackup(options: CreateBackupOptions, signal?: AbortSignal): Promise<{ id: string }> {
    const backup = {
      volume_id: options.volumeId,
      name: options.name,
      description: options.description,
      incremental: options.incremental ?? false,
      force: options.force ?? false,
      snapshot_id: options.snapshotId,
      container: options.container,
      metadata: options.metadata,
    };
    const resource = `backup of volume ${options.volumeId}`;
    const reply = await this.call("POST", "/backups", resource, s.backupCreated, { json: { backup }, signal }, "3.43");
    return { id: reply.backup.id };
  }

  async getBackup(id: string, signal?: AbortSignal): Promise<s.Backup> {
    return (await this.call("GET", `/backups/${enc(id)}`, `backup ${id}`, s.backupBody, { signal })).backup;
  }

  /** Every backup of the project (GET /backups/detail, page by page). */
  listBackups(options: ListOptions = {}): AsyncGenerator<s.Backup> {
    return paginate(async (query) => {
      const path = withQuery("/backups/detail", query ?? { ...options.filters, limit: options.limit });
      const page = await this.call("GET", path, "backups", s.backupPage, { signal: options.signal });
      return { items: page.backups, next: nextLink(page.backups_links) };
    }, "cinder backups");
  }

  /** Explicit only: Coffer never deletes a backup implicitly. Cinder refuses while incrementals depend on it. */
  async deleteBackup(id: string, signal?: AbortSignal): Promise<void> {
    await this.call("DELETE", `/backups/${enc(id)}`, `backup ${id}`, s.anyBody, { signal });
  }

  /** Restores into `volumeId` (overwritten), or into a new volume when it is absent. */
  async restoreBackup(id: string, to: { volumeId?: string; name?: string } = {}, signal?: AbortSignal) {
    const json = { restore: { volume_id: to.volumeId, name: to.name } };
    const path = `/backups/${enc(id)}/restore`;
    const reply = await this.call("POST", path, `backup ${id}`, s.restoreBody, { json, signal });
    return { backupId: reply.restore.backup_id, volumeId: reply.restore.volume_id };
  }

  async createSnapshot(options: CreateSnapshotOptions, signal?: AbortSignal): Promise<s.Snapshot> {
    const snapshot = {
      volume_id: options.volumeId,
      name: options.name,
      description: options.description,
      force: options.force ?? false,
      metadata: options.metadata,
    };
    const resource = `snapshot of volume ${options.volumeId}`;
    return (await this.call("POST", "/snapshots", resource, s.snapshotBody, { json: { snapshot }, signal })).snapshot;
  }

  /** The project's snapshots (GET /snapshots/detail, page by page), e.g. filtered by `volume_id`. */
  listSnapshots(options: ListOptions = {}): AsyncGenerator<s.Snapshot> {
    return paginate(async (query) => {
      const path = withQuery("/snapshots/detail", query ?? { ...options.filters, limit: options.limit });
      const page = await this.call("GET", path, "snapshots", s.snapshotPage, { signal: options.signal });
      return { items: page.snapshots, next: nextLink(page.snapshots_links) };
    }, "cinder snapshots");
  }

  async getSnapshot(id: string, signal?: AbortSignal): Promise<s.Snapshot> {
    return (await this.call("GET", `/snapshots/${enc(id)}`, `snapshot ${id}`, s.snapshotBody, { signal })).snapshot;
  }

  async deleteSnapshot(id: string, signal?: AbortSignal): Promise<void> {
    await this.call("DELETE", `/snapshots/${enc(id)}`, `snapshot ${id}`, s.anyBody, { signal });
  }

  /** The user messages Cinder recorded about a resource, newest first (microversion 3.3). */
  async listMessages(resourceId: string, signal?: AbortSignal): Promise<s.Message[]> {
    const path = withQuery("/messages", { resource_uuid: resourceId, sort: "created_at:desc" });
    const reply = await this.call("GET", path, `messages about ${resourceId}`, s.messageList, { signal }, "3.5");
    return reply.messages;
  }

  private async action<T = unknown>(id: string, body: object, signal?: AbortSignal, schema?: z.ZodType<T>) {
    const path = `/volumes/${enc(id)}/action`;
    return this.call("POST", path, `volume ${id}`, schema ?? (s.anyBody as z.ZodType<T>), { json: body, signal });
  }

  private async call<T>(
    method: ServiceCall["method"],
    path: string,
    resource: string,
    schema: z.ZodType<T>,
    extra: { json?: unknown; signal?: AbortSignal },
    minimumMicroversion?: string,
  ): Promise<T> {
    const version = newerVersion(this.microversion, minimumMicroversion);
    const headers = { "OpenStack-API-Version": `volume ${version}` };
    const call: ServiceCall = { service: "cinder", method, path, resource, headers, ...extra };
    return (await this.session.request(call, schema)).body;
  }
}

/** The newer of two "N.M" microversions (Cinder's 3.N, Nova's 2.N). */
export function newerVersion(a: string, b: string | undefined): string {
  if (!b) return a;
  const [aMajor, aMinor] = a.split(".").map(Number);
  const [bMajor, bMinor] = b.split(".").map(Number);
  return aMajor > bMajor || (aMajor === bMajor && aMinor >= bMinor) ? a : b;
}

function enc(id: string): string {
  return encodeURIComponent(id);
}
