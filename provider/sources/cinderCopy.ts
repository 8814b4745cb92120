/** copyToTarget: a Cinder volume's data, copied into the policy's target through a Glance image. */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import type { Volume } from "../openstack/cinderSchemas";
import { waitForSnapshot, waitForSnapshotDeleted, waitForVolume, waitForVolumeDeleted } from "../openstack/cinderWaits";
import { BACKUP_TIMEOUT_MS, SNAPSHOT_TIMEOUT_MS, waitOptions } from "./cloudWaits";
import { stageImage, waitForImage } from "./glanceStage";
import type { CloudTakeContext } from "./kind";
import { removeStaged } from "./staging";

/**
 * The volume's data, copied into the target in Coffer's format: uploaded to a Glance image (from
 * `snapshot` through a temporary volume when there is one, as an in-use volume needs; from the volume
 * itself otherwise), staged here with its hash checked, and stored by the agent. Every temporary
 * volume, image and staged file is deleted, whatever happens.
 */
export async function copyToTarget(volume: Volume, snapshot: string | undefined, ctx: CloudTakeContext) {
  const { cinder, glance } = ctx.cloud;
  const name = `coffer-copy ${ctx.label.setId}/${ctx.label.pointId} ${ctx.label.source}`;
  const temporary: { snapshot?: string; volume?: string; image?: string; file?: string } = {};
  const waits = waitOptions(ctx, "the copy", BACKUP_TIMEOUT_MS);
  const viaSnapshot = snapshot !== undefined || volume.status !== "available";
  try {
    let from = volume.id;
    if (viaSnapshot) {
      if (!snapshot) temporary.snapshot = (await takeSnapshot(volume.id, name, ctx)).id;
      const volumeType = volume.volume_type ?? undefined;
      const snapshotId = snapshot ?? temporary.snapshot;
      const made = await cinder.createVolume({ size: volume.size, name, snapshotId, volumeType }, ctx.signal);
      temporary.volume = made.id;
      await waitForVolume(cinder, made.id, waits);
      from = made.id;
    }
    ctx.progress(`${ctx.subject}: copying volume ${from} into a Glance image`);
    const { imageId } = await cinder.uploadToImage(from, { imageName: name, diskFormat: "raw" }, ctx.signal);
    temporary.image = imageId;
    await waitForImage(imageId, ctx);
    await waitForVolume(cinder, from, waits);
    await fs.mkdir(ctx.stagingDir, { recursive: true, mode: 0o700 });
    const file = `${ctx.label.pointId}-${ctx.label.source}-${randomBytes(4).toString("hex")}.raw`;
    temporary.file = path.join(ctx.stagingDir, file);
    ctx.progress(`${ctx.subject}: downloading glance image ${imageId}`);
    const staged = await stageImage(imageId, temporary.file, ctx);
    const stored = await ctx.storeCopy(temporary.file);
    const via = viaSnapshot ? ("snapshot" as const) : ("volume" as const);
    return {
      stored,
      copy: { via, hashAlgo: staged.hashAlgo, hashValue: staged.hashValue, sizeBytes: staged.sizeBytes },
    };
  } finally {
    const cleanup = waitOptions({ ...ctx, signal: undefined }, "cleanup", SNAPSHOT_TIMEOUT_MS);
    if (temporary.file) await removeStaged(temporary.file, ctx.scrubStaging);
    if (temporary.image) await glance.deleteImage(temporary.image).catch(() => undefined);
    if (temporary.volume) {
      await cinder.deleteVolume(temporary.volume).catch(() => undefined);
      await waitForVolumeDeleted(cinder, temporary.volume, cleanup).catch(() => undefined);
    }
    if (temporary.snapshot) {
      await cinder.deleteSnapshot(temporary.snapshot).catch(() => undefined);
      await waitForSnapshotDeleted(cinder, temporary.snapshot, cleanup).catch(() => undefined);
    }
  }
}

async function takeSnapshot(volumeId: string, name: string, ctx: CloudTakeContext) {
  const snapshot = await ctx.cloud.cinder.createSnapshot({ volumeId, name, force: true }, ctx.signal);
  await waitForSnapshot(
    ctx.cloud.cinder,
    snapshot.id,
    waitOptions(ctx, `snapshot ${snapshot.id}`, SNAPSHOT_TIMEOUT_MS),
  );
  return snapshot;
}
