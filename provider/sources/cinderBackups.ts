/** What the cloud holds of a set's points: their Cinder backups, checked, deleted and their keys looked for. */
import { CofferError, isCofferError } from "../common/errors";
import { waitForBackupDeleted } from "../openstack/cinderWaits";
import { BACKUP_TIMEOUT_MS, waitOptions } from "./cloudWaits";
import type { CloudBackupRef, CloudContext, CloudProblem, CloudProject } from "./kind";

/** Checks backups with one listing of the project's backups, not one request per backup. */
async function checkBackups(refs: readonly CloudBackupRef[], ctx: CloudContext): Promise<CloudProblem[]> {
  if (refs.length === 0) return [];
  const listed = new Map<string, { status: string; fail_reason?: string | null }>();
  for await (const backup of ctx.cloud.cinder.listBackups({ signal: ctx.signal })) listed.set(backup.id, backup);
  const problems: CloudProblem[] = [];
  for (const ref of refs) {
    const backup = listed.get(ref.id);
    if (!backup) {
      problems.push({ id: ref.id, status: "missing", message: `cinder backup ${ref.id} is gone from the cloud` });
    } else if (backup.status.startsWith("error")) {
      const reason = backup.fail_reason ? `: ${backup.fail_reason}` : "";
      problems.push({ id: ref.id, status: "failed", message: `cinder backup ${ref.id} is ${backup.status}${reason}` });
    }
  }
  return problems;
}

/**
 * Deletes backups, each incremental before the backup it builds on (Cinder refuses the other
 * order); one already gone is no error. Throws naming every backup that could not be deleted.
 */
async function removeBackups(refs: readonly CloudBackupRef[], ctx: CloudContext): Promise<void> {
  const failures: string[] = [];
  const pending = [...refs];
  // Each round deletes the backups no pending backup builds on: children before their parents.
  while (pending.length > 0) {
    const needed = new Set(pending.flatMap((r) => (r.parent ? [r.parent] : [])));
    const ready = pending.filter((r) => !needed.has(r.id));
    if (ready.length === 0) break;
    for (const ref of ready) {
      pending.splice(pending.indexOf(ref), 1);
      try {
        await ctx.cloud.cinder.deleteBackup(ref.id, ctx.signal);
        await waitForBackupDeleted(ctx.cloud.cinder, ref.id, waitOptions(ctx, `backup ${ref.id}`, BACKUP_TIMEOUT_MS));
      } catch (error) {
        if (isCofferError(error) && error.code === "CLOUD_NOT_FOUND") continue;
        failures.push(`cinder backup ${ref.id}: ${(error as Error).message}`);
        // Its parents stay: Cinder refuses to delete a backup an incremental still builds on.
        const keep = (id?: string) => {
          const parent = pending.find((r) => r.id === id);
          if (!parent) return;
          pending.splice(pending.indexOf(parent), 1);
          failures.push(`cinder backup ${parent.id}: kept, an incremental built on it was not deleted`);
          keep(parent.parent);
        };
        keep(ref.parent);
      }
    }
  }
  if (failures.length > 0) throw new CofferError("IO_FAILED", failures.join("; "));
}

/**
 * The escrowed keys among `refs` whose Barbican original is gone, with one listing of the
 * project's secrets. Not a failure: the escrow is why such a backup's copy stays restorable.
 */
async function keysGone(refs: readonly CloudBackupRef[], ctx: CloudContext): Promise<CloudBackupRef[]> {
  const withKeys = refs.filter((ref) => ref.key !== undefined);
  if (withKeys.length === 0) return [];
  const present = new Set<string>();
  for await (const secret of ctx.cloud.barbican.listSecrets({}, { signal: ctx.signal })) present.add(secret.id);
  return withKeys.filter((ref) => !present.has(ref.key!));
}

/** What the cloud holds of points, by the kind of its refs. */
export const cinderBackups = { check: checkBackups, remove: removeBackups, keysGone };

/** A cloud signed in to one project: what deleting and checking backups works with. */
export type CloudProjectAccess = Pick<CloudContext, "cloud" | "project" | "waits">;

/** The error for credentials of another project than the one that holds a location's backups. */
export function projectMismatch(wanted: CloudProject | undefined, access: CloudProjectAccess): CofferError | undefined {
  if (!wanted || wanted.projectId === access.project.projectId) return undefined;
  const message =
    `the set's cloud backups are in project ${wanted.projectId} (${wanted.authUrl}), ` +
    `but the credentials given are for project ${access.project.projectId}: use that project's credentials`;
  return new CofferError("CLOUD_CONFIG_INVALID", message);
}

/** A point whose cloud backups are to be deleted with it. */
export interface PointBackups {
  id: string;
  /** The project that holds them (absent in state from before it was recorded: the credentials' own). */
  project?: CloudProject;
  refs: readonly CloudBackupRef[];
  /** The points among those deleted whose backups these build on. */
  dependsOn?: readonly string[];
}

/**
 * Deletes the cloud backups of `points`, given newest first, so that an incremental goes before
 * what it builds on. A point whose backups could not all be deleted, or whose dependent's could
 * not, keeps its record: returns the error of each such point.
 */
export async function removePointsBackups(
  points: readonly PointBackups[],
  deps: { access(): Promise<CloudProjectAccess>; progress(message: string): void },
): Promise<Map<string, Error>> {
  const failed = new Map<string, Error>();
  for (const point of points) {
    if (point.refs.length === 0) continue;
    const blocked = points.filter((p) => failed.has(p.id) && (p.dependsOn ?? []).includes(point.id));
    if (blocked.length > 0) {
      const names = blocked.map((p) => p.id).join(", ");
      failed.set(point.id, new CofferError("IO_FAILED", `kept: point ${names} builds on it and was not deleted`));
      continue;
    }
    try {
      const access = await deps.access();
      const mismatch = projectMismatch(point.project, access);
      if (mismatch) throw mismatch;
      await removeBackups(point.refs, { ...access, subject: `point ${point.id}`, progress: deps.progress });
    } catch (error) {
      failed.set(point.id, error as Error);
    }
  }
  return failed;
}
