import type { CinderClient } from "./cinder";
import type { Backup, Snapshot, Volume } from "./cinderSchemas";
import { type StatusWaitOptions, waitForDeletion, waitForStatus } from "./poll";

export type CinderWaitOptions = StatusWaitOptions;

const backupCheck = "cinder-backup's log and `openstack volume service list` (is cinder-backup up?)";
const volumeCheck = "cinder-volume's and cinder-scheduler's logs and `openstack volume service list`";

/** Waits for a volume to become `until` (default "available"); an error status fails at once. */
export function waitForVolume(
  cinder: CinderClient,
  id: string,
  options: CinderWaitOptions,
  until: readonly string[] = ["available"],
): Promise<Volume> {
  return waitForStatus<Volume>({
    ...options,
    what: `cinder volume ${id}`,
    get: () => cinder.getVolume(id, options.signal),
    status: (volume) => volume.status,
    failReason: () => newestMessage(cinder, id, options.signal),
    until,
    whatToCheck: volumeCheck,
  });
}

/** Waits for a backup to become available; "error" fails at once with the backup's fail_reason. */
export function waitForBackup(cinder: CinderClient, id: string, options: CinderWaitOptions): Promise<Backup> {
  return waitForStatus<Backup>({
    ...options,
    what: `cinder backup ${id}`,
    get: () => cinder.getBackup(id, options.signal),
    status: (backup) => backup.status,
    failReason: async (backup) => backup.fail_reason || (await newestMessage(cinder, id, options.signal)),
    until: ["available"],
    whatToCheck: backupCheck,
  });
}

export function waitForSnapshot(cinder: CinderClient, id: string, options: CinderWaitOptions): Promise<Snapshot> {
  return waitForStatus<Snapshot>({
    ...options,
    what: `cinder snapshot ${id}`,
    get: () => cinder.getSnapshot(id, options.signal),
    status: (snapshot) => snapshot.status,
    failReason: () => newestMessage(cinder, id, options.signal),
    until: ["available"],
    whatToCheck: volumeCheck,
  });
}

export function waitForBackupDeleted(cinder: CinderClient, id: string, options: CinderWaitOptions): Promise<void> {
  return waitForDeletion<Backup>({
    ...options,
    what: `cinder backup ${id}`,
    get: () => cinder.getBackup(id, options.signal),
    status: (backup) => backup.status,
    failReason: (backup) => backup.fail_reason,
    whatToCheck: backupCheck,
  });
}

export function waitForVolumeDeleted(cinder: CinderClient, id: string, options: CinderWaitOptions): Promise<void> {
  return waitForDeletion<Volume>({
    ...options,
    what: `cinder volume ${id}`,
    get: () => cinder.getVolume(id, options.signal),
    status: (volume) => volume.status,
    whatToCheck: volumeCheck,
  });
}

export function waitForSnapshotDeleted(cinder: CinderClient, id: string, options: CinderWaitOptions): Promise<void> {
  return waitForDeletion<Snapshot>({
    ...options,
    what: `cinder snapshot ${id}`,
    get: () => cinder.getSnapshot(id, options.signal),
    status: (snapshot) => snapshot.status,
    whatToCheck: volumeCheck,
  });
}

/** Cinder's newest user message about a resource: for a volume that went to "error", often the only reason given. */
async function newestMessage(cinder: CinderClient, id: string, signal?: AbortSignal): Promise<string | undefined> {
  const [newest] = await cinder.listMessages(id, signal);
  return newest?.user_message;
}
