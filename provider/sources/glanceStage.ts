/**
 * Glance image data staged into a local file, for the agent to store in the target in Coffer's own
 * format: the image waited for until active, downloaded, and checked against Glance's hashes.
 */
import { createWriteStream } from "node:fs";
import type { DownloadResult, Image } from "../openstack";
import { waitForStatus } from "../openstack/poll";
import { waitOptions } from "./cloudWaits";
import type { CloudContext } from "./kind";
import { removeStaged } from "./staging";

/** An image is made (an upload from a volume) within this, or the wait gives up naming what to check. */
const IMAGE_TIMEOUT_MS = 6 * 3_600_000;

/** Waits until image `id` is active; an image that was killed or deleted fails at once. */
export function waitForImage(id: string, ctx: CloudContext): Promise<Image> {
  const what = `glance image ${id}`;
  return waitForStatus<Image>({
    ...waitOptions(ctx, what, IMAGE_TIMEOUT_MS),
    what,
    get: () => ctx.cloud.glance.getImage(id, ctx.signal),
    status: (image) => image.status,
    until: ["active"],
    failed: ["killed", "deleted", "pending_delete", "deactivated"],
    whatToCheck: "glance-api's log, and cinder-volume's log when the image comes from a volume",
  });
}

/**
 * Downloads active image `id` into a new file `file` (0600), checked against its os_hash_value and
 * checksum; a failed download's part is removed (scrubbed when the context asks).
 */
export async function stageImage(
  id: string,
  file: string,
  ctx: CloudContext & { scrubStaging?: boolean },
): Promise<DownloadResult> {
  const out = createWriteStream(file, { mode: 0o600, flags: "wx" });
  try {
    // The download's pipeline ends `out` and waits for it to finish writing.
    return await ctx.cloud.glance.downloadImageData(id, out, ctx.signal);
  } catch (error) {
    out.destroy();
    await removeStaged(file, ctx.scrubStaging);
    throw error;
  }
}
