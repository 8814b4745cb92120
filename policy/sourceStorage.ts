/**
 * Whether a source's backups end up on the storage the source lives on, per source kind:
 * - disk: the storage is the folder holding the disk's files (disk, backingFiles, dataFile). A file
 *   inside the target, or the target inside that folder, is the same storage, unless (on this
 *   machine) the two are on different filesystems, as a NAS mounted there is. Paths on this machine
 *   are compared as real paths (symlinks resolved); paths reached through a host as written;
 * - running VM (qmpSocket): its disk file is learned from QEMU when the backup runs: not known at
 *   preview, not checked;
 * - cinderVolume: Cinder's backups live in the cloud's backup store, in the cloud that holds the
 *   volume (often the same Ceph cluster); only `copyToTarget` (the source's, else the policy's) puts
 *   a copy off the cloud, in the target. Without it the source fails, unless allowCinderBackupStore;
 * - glanceImage: the image's data is copied into the target, off the cloud: nothing to compare;
 * - novaServer: every disk of the server is copied into the target, off the cloud: nothing to compare.
 */
import { existsSync, realpathSync, statSync } from "node:fs";
import * as path from "node:path";
import { copiesToTarget } from "../provider/sources/cinderVolume";

export interface SourceFacts {
  name: string;
  disk?: string;
  backingFiles?: string[];
  dataFile?: string;
  qmpSocket?: string;
  cinderVolume?: string;
  glanceImage?: string;
  novaServer?: string;
  copyToTarget?: boolean;
}

export interface TargetFacts {
  path: string;
  /** Target and source are on the machine that runs Pulumi (no host anywhere): real paths apply. */
  local: boolean;
  /** The policy's copyToTarget, as declared. */
  copyToTarget?: boolean;
}

export interface StorageOptions {
  /** Accept a Cinder volume whose only backup is in the cloud's backup store. Default false. */
  allowCinderBackupStore: boolean;
}

/** What is wrong, and the fix, for one source. */
export interface StorageProblem {
  problem: string;
  fix: string;
}

const isWithin = (folder: string, inner: string) => {
  const relative = path.relative(folder, inner);
  return relative === "" || (!relative.startsWith("..") && !path.isAbsolute(relative));
};

/** The real path of `file`, resolved through its nearest existing folder (the file may not exist yet). */
function realPathOf(file: string): string {
  let existing = path.resolve(file);
  const rest: string[] = [];
  while (!existsSync(existing) && path.dirname(existing) !== existing) {
    rest.unshift(path.basename(existing));
    existing = path.dirname(existing);
  }
  return path.join(realpathSync(existing), ...rest);
}

/** The filesystem `file` (or its nearest existing folder) is on. */
function deviceOf(file: string): number {
  let existing = file;
  while (!existsSync(existing) && path.dirname(existing) !== existing) existing = path.dirname(existing);
  return statSync(existing).dev;
}

function diskFileProblem(file: string, target: TargetFacts): string | undefined {
  const [real, targetPath] = target.local ? [realPathOf(file), realPathOf(target.path)] : [file, target.path];
  const folder = path.dirname(real);
  const sameFilesystem = !target.local || deviceOf(real) === deviceOf(targetPath);
  const shown = (p: string, given: string) => (p === given ? given : `${given} (really ${p})`);
  if (isWithin(targetPath, real) && sameFilesystem) {
    return `its file ${shown(real, file)} lies in the target ${shown(targetPath, target.path)}`;
  }
  if (folder !== path.dirname(folder) && isWithin(folder, targetPath) && sameFilesystem) {
    return `the target ${shown(targetPath, target.path)} lies in ${folder}, the folder of its file ${file}`;
  }
  return undefined;
}

/** Whether `source`'s backups land on the storage it lives on; undefined when they don't (or can't be told). */
export function sourceStorageProblem(
  source: SourceFacts,
  target: TargetFacts,
  options: StorageOptions,
): StorageProblem | undefined {
  if (source.disk !== undefined) {
    const files = [source.disk, ...(source.backingFiles ?? []), source.dataFile];
    for (const file of files.filter((f): f is string => typeof f === "string")) {
      const problem = diskFileProblem(file, target);
      if (problem) {
        return {
          problem: `disk "${source.name}": ${problem}; losing that storage loses the VM and its backups`,
          fix: "give the policy a target on other storage (another disk, a NAS), or keep the VM's disks elsewhere",
        };
      }
    }
    return undefined;
  }
  if (source.cinderVolume !== undefined && !options.allowCinderBackupStore) {
    if (copiesToTarget(source, target.copyToTarget)) return undefined;
    return {
      problem:
        `Cinder volume "${source.name}" is backed up only into the cloud's backup store (cinder-backup), ` +
        "in the cloud that holds the volume",
      fix:
        "set `copyToTarget: true` on the source (or the BackupPolicy) so a copy lives in the target, or set " +
        "allowCinderBackupStore in the pack's config if that store is separate storage",
    };
  }
  return undefined;
}
