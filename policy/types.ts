/**
 * Every resource type and rule name the pack knows, in one place: the rules match on type strings
 * because the engine hands a policy plain objects (`isType(coffer.X)` can't tell dynamic resources apart).
 */
import { COFFER_RESOURCE_NAMES, cofferResourceType } from "../sdk/resourceTypes";

export const COFFER_TYPES = {
  backupPolicy: cofferResourceType(COFFER_RESOURCE_NAMES.backupPolicy),
  backupSet: cofferResourceType(COFFER_RESOURCE_NAMES.backupSet),
  secretEscrow: cofferResourceType(COFFER_RESOURCE_NAMES.secretEscrow),
  finalStateBackup: cofferResourceType(COFFER_RESOURCE_NAMES.finalStateBackup),
  restoreDrill: cofferResourceType(COFFER_RESOURCE_NAMES.restoreDrill),
} as const;

/** Other packages' types the rules relate to (the FinalStateBackup rule checks these instances). */
export const FOREIGN_TYPES = {
  openstackInstance: "openstack:compute/instance:Instance",
} as const;

export const RULE_NAMES = {
  escrowThreshold: "coffer-escrow-threshold",
  retentionDays: "coffer-retention-min-days",
  targetNotSourceStorage: "coffer-target-not-source-storage",
  finalStateCoverage: "coffer-final-state-backup",
} as const;
