/** Restoring a Glance image source: its bytes uploaded as a new image with the recorded formats and properties. */
import { CofferError } from "../common/errors";
import type { Cloud } from "../openstack";
import { waitForImage } from "./glanceStage";
import type { GlanceImageItem } from "./glanceImage";
import type { CloudContext } from "./kind";

/** Properties Glance sets itself (where the data is stored, its import state): never given back. */
const reserved = (key: string) => key === "stores" || key.startsWith("os_glance") || key === "direct_url";

export interface GlanceRestoreOptions {
  name?: string;
  /** Give the new image the recorded properties and tags (only from an authentic manifest). */
  applyMetadata: boolean;
  waits: CloudContext["waits"];
  progress(message: string): void;
}

/**
 * Uploads `file` (the image's bytes, restored from the target and checked) as a new image, and
 * checks that Glance computed the recorded hash; a mismatch deletes the new image.
 */
export async function restoreToGlance(
  item: GlanceImageItem,
  file: string,
  cloud: Cloud,
  options: GlanceRestoreOptions,
) {
  const { glance } = cloud;
  const properties = Object.fromEntries(Object.entries(item.properties).filter(([key]) => !reserved(key)));
  const created = await glance.createImage({
    name: options.name ?? `${item.name ?? item.imageId}-restored`,
    diskFormat: item.diskFormat,
    containerFormat: item.containerFormat,
    ...(options.applyMetadata ? { properties, tags: item.tags, minDisk: item.minDiskGiB, minRam: item.minRamMiB } : {}),
  });
  options.progress(`image ${created.id}: uploading ${item.sizeBytes} bytes`);
  try {
    await glance.uploadImageData(created.id, file);
    const ctx = {
      cloud,
      project: item.cloud,
      waits: options.waits,
      subject: `image ${created.id}`,
      progress: options.progress,
    };
    const image = await waitForImage(created.id, ctx);
    if (image.os_hash_value && image.os_hash_value !== item.hashValue) {
      throw new CofferError(
        "VERIFY_FAILED",
        `glance computed ${image.os_hash_algo} ${image.os_hash_value} for the restored image, not the recorded ${item.hashValue}`,
      );
    }
    return { imageId: created.id, name: created.name ?? undefined, metadataApplied: options.applyMetadata };
  } catch (error) {
    await glance.deleteImage(created.id).catch(() => undefined);
    throw error;
  }
}
