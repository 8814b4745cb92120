/**
 * Restoring a Cinder source's backup into a new volume: a preflight that says, before any work,
 * whether it can succeed and what to do otherwise; then the volume, of the recorded type, with the
 * recorded metadata, Glance metadata and bootable flag.
 */
import { promises as fs } from "node:fs";
import { CofferError, isCofferError } from "../common/errors";
import { recordVersions } from "../escrow/record";
import type { Cloud } from "../openstack";
import type { CinderClient } from "../openstack/cinder";
import type { CloudDeps } from "../openstack/deps";
import { waitForVolume } from "../openstack/cinderWaits";
import type { CinderVolumeItem } from "./cinderVolume";

export interface PreflightCheck {
  check: "project" | "backup" | "volume type" | "key" | "escrow";
  /** ok: nothing to do; fixable: the restore does it when asked (--recreate-type); blocked: it can't succeed. */
  status: "ok" | "fixable" | "blocked";
  message: string;
}

export interface Preflight {
  ok: boolean;
  checks: PreflightCheck[];
  /** The type a restore creates the volume with; absent when it is gone. */
  typeName?: string;
}

const notFound = (error: unknown) => isCofferError(error) && error.code === "CLOUD_NOT_FOUND";

/** The spec as `openstack volume type create` takes it, for messages to an admin. */
function describeSpec(item: CinderVolumeItem): string {
  const { type } = item.volume;
  const spec = type.encryption;
  if (!spec) return `openstack volume type create ${type.name}`;
  const options = [
    `--encryption-provider ${spec.provider}`,
    spec.cipher ? `--encryption-cipher ${spec.cipher}` : "",
    spec.keySize ? `--encryption-key-size ${spec.keySize}` : "",
    `--encryption-control-location ${spec.controlLocation}`,
  ].filter(Boolean);
  return `openstack volume type create ${options.join(" ")} ${type.name}`;
}

async function checkType(item: CinderVolumeItem, cloud: Cloud, signal?: AbortSignal) {
  const { type } = item.volume;
  if (type.id) {
    const byId = await cloud.cinder.getVolumeType(type.id, signal).catch((error) => {
      if (notFound(error)) return undefined;
      throw error;
    });
    if (byId) return { check: ok("volume type", `type ${byId.name} (${byId.id}) exists`), typeName: byId.name };
  }
  const byName = (await cloud.cinder.listVolumeTypes(signal)).find((t) => t.name === type.name);
  if (byName) {
    const message = `type ${type.name} exists (${byName.id}, not the recorded ${type.id ?? "id"}: recreated since)`;
    return { check: ok("volume type", message), typeName: byName.name };
  }
  const gone = `type ${type.name} (${type.id ?? "no id recorded"}) is gone`;
  if (item.volume.encrypted && !type.encryption) {
    const why = "its encryption spec was not readable with the credentials that took the backup (an admin API)";
    const message = `${gone}, and ${why}: an admin must create a type named ${type.name} with the volume's encryption`;
    return { check: blocked("volume type", message) };
  }
  const message = `${gone}: --recreate-type creates it (needs an admin) as: ${describeSpec(item)}`;
  return { check: { check: "volume type" as const, status: "fixable" as const, message } };
}

const ok = (check: PreflightCheck["check"], message: string): PreflightCheck => ({ check, status: "ok", message });
const blocked = (check: PreflightCheck["check"], message: string): PreflightCheck => ({
  check,
  status: "blocked",
  message,
});

/** Whether restoring `item` into a new volume can succeed with `cloud`'s credentials, and what blocks it. */
export async function preflight(item: CinderVolumeItem, cloud: Cloud, signal?: AbortSignal): Promise<Preflight> {
  const checks: PreflightCheck[] = [];
  const projectId = await cloud.session.projectId();
  if (projectId !== item.cloud.projectId) {
    const message =
      `the backup is in project ${item.cloud.projectId} (${item.cloud.authUrl}), these credentials are for ` +
      `project ${projectId}: sign in to the backup's project (OS_PROJECT_ID=${item.cloud.projectId})`;
    return { ok: false, checks: [blocked("project", message)] };
  }
  checks.push(ok("project", `project ${projectId}`));
  const backup = await cloud.cinder.getBackup(item.backupId, signal).catch((error) => {
    if (notFound(error)) return undefined;
    throw error;
  });
  if (!backup) {
    checks.push(blocked("backup", `cinder backup ${item.backupId} is gone from the cloud`));
  } else if (backup.status !== "available") {
    const reason = backup.fail_reason ? ` (${backup.fail_reason})` : "";
    checks.push(blocked("backup", `cinder backup ${item.backupId} is ${backup.status}${reason}, not available`));
  } else {
    checks.push(ok("backup", `cinder backup ${item.backupId} is available`));
  }
  const type = await checkType(item, cloud, signal);
  checks.push(type.check);
  if (item.volume.encrypted && item.backupKeyId) {
    const key = await cloud.barbican.getSecret(item.backupKeyId, signal).catch((error) => {
      if (notFound(error)) return undefined;
      throw error;
    });
    const gone =
      `the backup's key ${item.backupKeyId} is gone from Barbican, and Cinder restores only with it: ` +
      "--from-copy restores the copy in the target (copyToTarget) with the escrowed key instead";
    checks.push(key ? ok("key", `the backup's key ${item.backupKeyId} is in Barbican`) : blocked("key", gone));
    for (const escrowed of item.escrowedKeys ?? []) checks.push(await checkEscrow(escrowed));
  }
  return { ok: checks.every((c) => c.status === "ok"), checks, typeName: type.typeName };
}

async function checkEscrow(escrowed: NonNullable<CinderVolumeItem["escrowedKeys"]>[number]): Promise<PreflightCheck> {
  const reachable = await fs.stat(escrowed.store).then(
    () => true,
    () => false,
  );
  if (!reachable) return blocked("escrow", `the escrow store ${escrowed.store} can't be read here: mount it`);
  const versions = await recordVersions(escrowed.store, escrowed.record);
  return versions.length > 0
    ? ok("escrow", `escrow record ${escrowed.record} in ${escrowed.store}`)
    : blocked("escrow", `escrow record ${escrowed.record} is missing from ${escrowed.store}`);
}

export interface CinderRestoreOptions {
  /** The new volume's name; default: the recorded name with "-restored". */
  name?: string;
  /** Create the recorded type when it is gone (needs an admin). */
  recreateType: boolean;
  /** Apply the recorded metadata, Glance metadata and bootable flag (only for an authentic manifest). */
  applyMetadata: boolean;
  waits: Pick<CloudDeps, "now" | "sleep">;
  progress(message: string): void;
  signal?: AbortSignal;
  /** Told the new volume's id as soon as it exists, before the wait: a caller that deletes it needs it. */
  onCreated?(volumeId: string): void;
}

const RESTORE_TIMEOUT_MS = 6 * 3_600_000;

/** Restores `item`'s backup into a new volume; refuses before any work when the preflight says it can't. */
export async function restoreToCinder(item: CinderVolumeItem, cloud: Cloud, options: CinderRestoreOptions) {
  const { cinder } = cloud;
  const checked = await preflight(item, cloud, options.signal);
  const stops = checked.checks.filter(
    (c) => c.status === "blocked" || (c.status === "fixable" && !options.recreateType),
  );
  if (stops.length > 0) {
    throw new CofferError("SOURCE_MISSING", `restore can't succeed: ${stops.map((c) => c.message).join("; ")}`);
  }
  let typeName = checked.typeName;
  if (!typeName) typeName = await recreateType(item, cloud, options);
  const name = options.name ?? `${item.volume.name ?? item.volumeId}-restored`;
  const created = await cinder.createVolume(
    { size: item.volume.sizeGiB, name, volumeType: typeName, backupId: item.backupId },
    options.signal,
  );
  options.onCreated?.(created.id);
  options.progress(`volume ${created.id}: restoring cinder backup ${item.backupId} into type ${typeName}`);
  let shown = 0;
  await waitForVolume(cinder, created.id, {
    timeoutMs: RESTORE_TIMEOUT_MS,
    deps: options.waits,
    signal: options.signal,
    onProgress: ({ status, elapsedMs }) => {
      if (elapsedMs - shown < 30_000) return;
      shown = elapsedMs;
      options.progress(`volume ${created.id}: ${status} (${Math.round(elapsedMs / 1000)} s)`);
    },
  });
  if (options.applyMetadata) await applyRecordedMetadata(cinder, created.id, item, options.signal);
  return { volumeId: created.id, name, typeName, metadataApplied: options.applyMetadata };
}

/**
 * Gives restored volume `volumeId` `item`'s recorded metadata, Glance metadata and bootable flag.
 * Cinder restores the metadata its backup store kept, which nothing protects (Cinder bug 1137908):
 * the signed record replaces it. Only for an authentic manifest.
 */
export async function applyRecordedMetadata(
  cinder: CinderClient,
  volumeId: string,
  item: CinderVolumeItem,
  signal?: AbortSignal,
): Promise<void> {
  const { metadata, imageMetadata, bootable } = item.volume;
  await cinder.replaceVolumeMetadata(volumeId, metadata, signal);
  if (Object.keys(imageMetadata).length > 0) await cinder.setImageMetadata(volumeId, imageMetadata, signal);
  await cinder.setBootable(volumeId, bootable, signal);
}

/** Creates the recorded type (and its encryption) again; needs an admin, and says what to create otherwise. */
async function recreateType(item: CinderVolumeItem, cloud: Cloud, options: CinderRestoreOptions): Promise<string> {
  const { type } = item.volume;
  try {
    const created = await cloud.cinder.createVolumeType({ name: type.name }, options.signal);
    if (type.encryption) {
      const spec = type.encryption;
      const controlLocation = spec.controlLocation === "back-end" ? "back-end" : "front-end";
      await cloud.cinder.createVolumeTypeEncryption(
        created.id,
        { provider: spec.provider, cipher: spec.cipher, keySize: spec.keySize, controlLocation },
        options.signal,
      );
    }
    options.progress(`volume type ${type.name}: recreated as ${created.id} from the recorded spec`);
    return created.name;
  } catch (error) {
    if (isCofferError(error) && error.code === "CLOUD_FORBIDDEN") {
      const message = `type ${type.name} is gone and these credentials can't create it: an admin can, with ${describeSpec(item)}`;
      throw new CofferError("CLOUD_FORBIDDEN", message, { cause: error });
    }
    throw error;
  }
}
