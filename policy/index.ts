/**
 * Coffer's policy rules (@pulumi/policy), importable as `coffer/policy` to build a pack of one's own:
 *   new PolicyPack("backups", { policies: [...cofferPolicies, myRule] })
 * Importing this module starts nothing; ./pack.ts is the pack `policy-pack/` runs.
 */
import { escrowThreshold } from "./escrowThreshold";
import { finalStateCoverage } from "./finalStateCoverage";
import { retentionDays } from "./retentionDays";
import { targetNotSourceStorage } from "./targetNotSourceStorage";

export { escrowThreshold, escrowUses, type EscrowThresholdConfig } from "./escrowThreshold";
export { finalStateCoverage, type FinalStateCoverageConfig } from "./finalStateCoverage";
export { retentionDays, setsOf, type RetentionDaysConfig } from "./retentionDays";
export {
  formatDays,
  retentionReach,
  shortestScheduleGapMs,
  type RetentionInput,
  type RetentionReach,
} from "./retentionReach";
export { known, noteUnknown, readKnown, relatedThrough } from "./resources";
export {
  sourceStorageProblem,
  type SourceFacts,
  type StorageOptions,
  type StorageProblem,
  type TargetFacts,
} from "./sourceStorage";
export { targetNotSourceStorage, type TargetNotSourceStorageConfig } from "./targetNotSourceStorage";
export { COFFER_TYPES, FOREIGN_TYPES, RULE_NAMES } from "./types";

/** Every rule of Coffer's pack, in the order the pack lists them. */
export const cofferPolicies = [escrowThreshold, retentionDays, targetNotSourceStorage, finalStateCoverage];
