/**
 * The module and type names Coffer's resource classes pass to `dynamic.Resource`, and the type token
 * the engine makes of them: one place for the SDK and for the policy rules that look for them.
 */
export const COFFER_MODULE = "coffer";

export const COFFER_RESOURCE_NAMES = {
  backupPolicy: "BackupPolicy",
  backupSet: "EncryptedBackupSet",
  secretEscrow: "SecretEscrow",
  finalStateBackup: "FinalStateBackup",
  restoreDrill: "RestoreDrill",
} as const;

/** A Coffer resource's type as the engine reports it, e.g. `pulumi-nodejs:dynamic/coffer:BackupPolicy`. */
export const cofferResourceType = (name: string) => `pulumi-nodejs:dynamic/${COFFER_MODULE}:${name}`;
