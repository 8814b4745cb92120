/** Rule: a set's target is not the storage of what it backs up (see ./sourceStorage.ts per source kind). */
import type { StackValidationPolicy } from "@pulumi/policy";
import { noteUnknown, plainCopy, readKnown, relatedThrough } from "./resources";
import { type SourceFacts, type StorageOptions, sourceStorageProblem } from "./sourceStorage";
import { COFFER_TYPES, RULE_NAMES } from "./types";

export type TargetNotSourceStorageConfig = StorageOptions;

export const targetNotSourceStorage: StackValidationPolicy = {
  name: RULE_NAMES.targetNotSourceStorage,
  description:
    "An EncryptedBackupSet's target is not the storage of its sources: no disk file inside the target, no " +
    "target inside a disk's folder (same filesystem; real paths on this machine); a Cinder volume has a copy " +
    "in the target (copyToTarget), as cinder-backup keeps its backups in the same cloud. Running VMs' disks " +
    "are learned at backup time and not checked.",
  enforcementLevel: "mandatory",
  configSchema: {
    properties: { allowCinderBackupStore: { type: "boolean", default: false } },
  },
  validateStack: (args, report) => {
    const options = args.getConfig<TargetNotSourceStorageConfig>();
    for (const set of args.resources.filter((r) => r.type === COFFER_TYPES.backupSet)) {
      // The set's own `policy` value is unknown in a first preview; the policy resource's inputs are not.
      for (const policy of relatedThrough(set, "policy", COFFER_TYPES.backupPolicy)) {
        const read = readKnown(() => ({
          target: policy.props.target?.path as string | undefined,
          copyToTarget: policy.props.copyToTarget as boolean | undefined,
          sources: (plainCopy(set.props.sources) ?? []) as (SourceFacts & { host?: string })[],
          anyHost: Boolean(policy.props.host ?? set.props.host),
        }));
        if (read === undefined) {
          noteUnknown(report, set.urn, `EncryptedBackupSet "${set.name}"'s sources or its policy's target`);
          continue;
        }
        const { target, copyToTarget, sources, anyHost } = read.value;
        if (typeof target !== "string") continue;
        for (const source of sources) {
          const local = !anyHost && source.host === undefined;
          const found = sourceStorageProblem(source, { path: target, local, copyToTarget }, options);
          if (!found) continue;
          report(
            `EncryptedBackupSet "${set.name}" under BackupPolicy "${policy.name}": ${found.problem}. ` +
              `Fix: ${found.fix}.`,
            set.urn,
          );
        }
      }
    }
  },
};
