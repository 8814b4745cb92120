/**
 * Restoring a Cinder source's copy (copyToTarget) into a new volume, for when Cinder's own backup
 * can't be restored (its key or the backup is gone). An encrypted volume's copy is its LUKS
 * container: it is opened with the escrowed key and sealed again with a new key stored in
 * Barbican, then handed to Cinder as an encrypted image (cinder_encryption_key_id), which Cinder
 * copies into a volume of the recorded encrypted type as it is, cloning the key (the volume gets
 * its own). No dm-crypt: qemu-img's luks driver does both steps.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { sealLuks, openLuks } from "../agent/image";
import { withSecretFd } from "../agent/tempFiles";
import type { Cloud } from "../openstack";
import { waitForVolume } from "../openstack/cinderWaits";
import { applyRecordedMetadata } from "./cinderRestore";
import type { CinderVolumeItem } from "./cinderVolume";
import { BACKUP_TIMEOUT_MS, waitOptions } from "./cloudWaits";
import { waitForImage } from "./glanceStage";
import type { CloudContext } from "./kind";

export interface CopyRestoreOptions {
  name?: string;
  /** The volume's key in hex (escrow recover --format hex), for an encrypted volume's copy. */
  volumeKeyHex?: string;
  applyMetadata: boolean;
  waits: CloudContext["waits"];
  progress(message: string): void;
}

/**
 * `file`: the copy's data as the target held it (checked against the manifest by the caller), in
 * a folder of its own that this may write next to. Returns the new volume.
 */
export async function restoreCopyToCinder(
  item: CinderVolumeItem,
  file: string,
  cloud: Cloud,
  options: CopyRestoreOptions,
) {
  const { cinder, glance, barbican } = cloud;
  const ctx: CloudContext = {
    cloud,
    project: item.cloud,
    waits: options.waits,
    subject: `item ${item.volumeId}`,
    progress: options.progress,
  };
  const dir = path.dirname(file);
  const made: { image?: string; key?: string } = {};
  try {
    let upload = file;
    let properties: Record<string, string> = {};
    if (item.volume.encrypted) {
      if (!options.volumeKeyHex) throw new Error("an encrypted volume's copy needs its key (--volume-key-file)");
      const plain = path.join(dir, "plain.raw");
      await withSecretFd(options.volumeKeyHex, (key) =>
        openLuks({ file, key, to: plain, format: "raw", subject: ctx.subject }),
      );
      // A new key, as Cinder's key manager makes one: 256 random bits, AES.
      const keyBytes = randomBytes(32);
      const stored = await barbican.storeSecret({
        name: `coffer restore of ${item.volumeId}`,
        payload: keyBytes,
        secretType: "symmetric",
        algorithm: "aes",
        bitLength: 256,
      });
      made.key = stored.id;
      upload = path.join(dir, "sealed.luks");
      await withSecretFd(keyBytes.toString("hex"), (key) =>
        sealLuks({ file: plain, key, to: upload, spec: item.volume.type.encryption, subject: ctx.subject }),
      );
      await fs.rm(plain, { force: true });
      properties = { cinder_encryption_key_id: stored.id, cinder_encryption_key_deletion_policy: "on_image_deletion" };
    }
    const image = await glance.createImage({
      name: `coffer restore of ${item.volumeId}`,
      diskFormat: "raw",
      containerFormat: "bare",
      properties,
    });
    made.image = image.id;
    options.progress(`image ${image.id}: uploading the copy of volume ${item.volumeId}`);
    await glance.uploadImageData(image.id, upload);
    await waitForImage(image.id, ctx);
    const volume = await cinder.createVolume({
      size: item.volume.sizeGiB,
      name: options.name ?? `${item.volume.name ?? item.volumeId}-restored`,
      volumeType: item.volume.type.name,
      imageId: image.id,
    });
    options.progress(`volume ${volume.id}: copying the image in (type ${item.volume.type.name})`);
    await waitForVolume(cinder, volume.id, waitOptions(ctx, `volume ${volume.id}`, BACKUP_TIMEOUT_MS));
    if (options.applyMetadata) await applyRecordedMetadata(cinder, volume.id, item);
    return {
      volumeId: volume.id,
      typeName: item.volume.type.name,
      fromCopy: true,
      metadataApplied: options.applyMetadata,
    };
  } finally {
    // The volume has its own clone of the key: the image and the key made for it go.
    if (made.image) await glance.deleteImage(made.image).catch(() => undefined);
    if (made.key) await barbican.deleteSecret(made.key).catch(() => undefined);
  }
}
