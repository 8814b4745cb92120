import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { agentClient } from "../../provider/backupSet/agentClient";
import type { SetHost } from "../../provider/backupSet/provider";
import { newPointId } from "../../provider/backupSet/state";
import type { CloudAccess } from "../../provider/backupSet/take";
import {
  Cloud,
  cloudConfig,
  cloudDeps,
  collect,
  openCloud,
  waitForBackupDeleted,
  waitForServerDeleted,
  waitForVolumeDeleted,
} from "../../provider/openstack";
import type { LoopbackCloud, LoopbackCloudUser } from "./loopbackCloud";

/** The loopback cloud as `user` (demo by default) sees it, through Coffer's own client. */
export function cloudAs(cloud: LoopbackCloud, user: LoopbackCloudUser = cloud.demo): Cloud {
  const config = cloudConfig({
    authUrl: cloud.authUrl,
    region: cloud.region,
    userName: user.username,
    password: user.password,
    projectName: user.projectName,
    userDomainName: user.userDomainName,
    projectDomainName: user.projectDomainName,
  });
  return openCloud(config, cloudDeps());
}

/** What the provider's `cloud()` gives: the cloud signed in as `user`, and its project. */
export async function cloudAccess(cloud: LoopbackCloud, user?: LoopbackCloudUser): Promise<CloudAccess> {
  const signedIn = cloudAs(cloud, user);
  const projectId = await signedIn.session.projectId();
  return { cloud: signedIn, project: { authUrl: cloud.authUrl, region: cloud.region, projectId }, waits: cloudDeps() };
}

/** A set's host as the provider process has it, with the loopback cloud; `notes` collects what it notes. */
export function cloudSetHost(cloud: LoopbackCloud, notes: string[] = []): SetHost {
  const access = cloudAccess(cloud);
  return {
    agent: agentClient,
    cloud: () => access,
    newSetId: (trigger) => `${trigger}-${randomBytes(4).toString("hex")}`,
    newPointId: (now) => newPointId(now, randomBytes(2).toString("hex")),
    now: () => new Date(),
    progress: () => undefined,
    note: (message) => notes.push(message),
  };
}

/** Writes `bytes` at `offset` into the file that holds volume `id`'s data (the loopback driver's). */
export async function writeVolumeBytes(cloud: LoopbackCloud, id: string, offset: number, bytes: Buffer) {
  const file = await fs.open(path.join(cloud.volumesDir, `volume-${id}`), "r+");
  try {
    await file.write(bytes, 0, bytes.length, offset);
  } finally {
    await file.close();
  }
}

/** Reads `length` bytes at `offset` of volume `id`'s data. */
export async function readVolumeBytes(cloud: LoopbackCloud, id: string, offset: number, length: number) {
  const file = await fs.open(path.join(cloud.volumesDir, `volume-${id}`), "r");
  try {
    const buffer = Buffer.alloc(length);
    await file.read(buffer, 0, length, offset);
    return buffer;
  } finally {
    await file.close();
  }
}

/** OS_* variables for `user`: how a person running `coffer` on a workstation signs in. */
export const osEnvFor = (cloud: LoopbackCloud, user: LoopbackCloudUser = cloud.demo): Record<string, string> => ({
  OS_AUTH_URL: cloud.authUrl,
  OS_REGION_NAME: cloud.region,
  OS_USERNAME: user.username,
  OS_PASSWORD: user.password,
  OS_PROJECT_NAME: user.projectName,
  OS_USER_DOMAIN_NAME: user.userDomainName,
  OS_PROJECT_DOMAIN_NAME: user.projectDomainName,
});

/**
 * Deletes, as demo, the servers `more.servers` and those whose name contains `unique` (first: they
 * hold volumes), the backups whose name contains `unique` (incrementals first: Cinder refuses a
 * backup one builds on), then `volumes` and `more.images`: what a test made.
 */
export async function deleteTestResources(
  cloud: LoopbackCloud,
  unique: string,
  volumes: readonly string[],
  more: { servers?: readonly string[]; images?: readonly string[] } = {},
) {
  const { cinder, nova, glance } = cloudAs(cloud);
  const waits = { timeoutMs: 300_000, deps: cloudDeps() };
  if (cloud.nova?.up) {
    const named = (await collect(nova.listServers())).filter((s) => s.name.includes(unique)).map((s) => s.id);
    for (const id of new Set([...(more.servers ?? []), ...named])) {
      await nova.deleteServer(id).catch(() => undefined);
      await waitForServerDeleted(nova, id, waits).catch(() => undefined);
    }
  }
  const backups = (await collect(cinder.listBackups())).filter((b) => b.name?.includes(unique));
  for (const backup of backups.sort((a, b) => Number(b.is_incremental) - Number(a.is_incremental))) {
    await cinder.deleteBackup(backup.id).catch(() => undefined);
    if (backup.is_incremental) await waitForBackupDeleted(cinder, backup.id, waits).catch(() => undefined);
  }
  for (const id of volumes) {
    await cinder.deleteVolume(id).catch(() => undefined);
    await waitForVolumeDeleted(cinder, id, waits).catch(() => undefined);
  }
  for (const id of more.images ?? []) await glance.deleteImage(id).catch(() => undefined);
}
