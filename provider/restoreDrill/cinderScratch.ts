/**
 * A Cinder source's backup drilled in the cloud: restored into a scratch volume, waited for until
 * available (the check), then deleted, always. Runs in Pulumi's process, with the set's cloud.
 */
import type { CloudAccess } from "../backupSet/take";
import { isCofferError } from "../common/errors";
import { waitForVolumeDeleted } from "../openstack/cinderWaits";
import { SNAPSHOT_TIMEOUT_MS } from "../sources/cloudWaits";
import { restoreToCinder } from "../sources/cinderRestore";
import type { CinderVolumeItem } from "../sources/cinderVolume";

/** The scratch volume's name: what it is, for whoever finds it in the cloud. */
export const scratchVolumeName = (setId: string, pointId: string, source: string) =>
  `coffer-drill ${setId}/${pointId} ${source}`;

/**
 * Restores `item`'s backup into a scratch volume and deletes it: undefined when the volume became
 * available and is gone again, else what went wrong (the restore, or the deletion, with the
 * volume's id to delete by hand).
 */
export async function drillCinderBackup(
  item: CinderVolumeItem,
  access: CloudAccess,
  options: { name: string; progress(message: string): void; signal?: AbortSignal },
): Promise<string | undefined> {
  const { cinder } = access.cloud;
  const scratch: { volumeId?: string } = {};
  let problem: string | undefined;
  try {
    await restoreToCinder(item, access.cloud, {
      name: options.name,
      recreateType: false,
      applyMetadata: false,
      waits: access.waits,
      progress: options.progress,
      signal: options.signal,
      onCreated: (volumeId) => (scratch.volumeId = volumeId),
    });
    options.progress(`cinder backup ${item.backupId}: scratch volume ${scratch.volumeId} is available`);
  } catch (error) {
    problem = `cinder backup ${item.backupId}: ${isCofferError(error) ? error.shortMessage : (error as Error).message}`;
  } finally {
    if (scratch.volumeId !== undefined) {
      const volumeId = scratch.volumeId;
      const waits = { timeoutMs: SNAPSHOT_TIMEOUT_MS, deps: access.waits };
      // Not stopped by the engine's exit: a scratch volume left behind costs until someone notices.
      const deleted = await cinder
        .deleteVolume(volumeId)
        .then(() => waitForVolumeDeleted(cinder, volumeId, waits))
        .then(
          () => undefined,
          (error: unknown) => (isCofferError(error) ? error.shortMessage : (error as Error).message),
        );
      if (deleted !== undefined) {
        const left = `scratch volume ${volumeId} could not be deleted (${deleted}): delete it by hand`;
        problem = problem ? `${problem}; ${left}` : left;
      }
    }
  }
  return problem;
}
