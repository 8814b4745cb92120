export { BackupPolicy } from "./backupPolicy";
export type {
  BackupPolicyArgs,
  Compression,
  DirectoryTarget,
  IntegrityCheck,
  PolicySettings,
  Retention,
  RetentionArgs,
  SigningPublicKey,
  SwiftTarget,
  SwiftTargetArgs,
} from "./backupPolicy";
export { EncryptedBackupSet } from "./encryptedBackupSet";
export type {
  BackupItem,
  BackupSourceArgs,
  EncryptedBackupSetArgs,
  HoldArgs,
  PointLocation,
  RecoveryPoint,
  ScheduleArgs,
  Verification,
} from "./encryptedBackupSet";
export { SecretEscrow } from "./secretEscrow";
export type { EscrowLink, EscrowRecipientArgs, RecipientKeyInfo, RecordStatus, SecretEscrowArgs } from "./secretEscrow";
export { FinalStateBackup } from "./finalStateBackup";
export type { FinalStateBackupArgs, NovaServerVmArgs, RunningVmArgs, StoppedVmArgs } from "./finalStateBackup";
export { RestoreDrill } from "./restoreDrill";
export type { DrillBootArgs, DrillCheckStatus, DrillChecks, DrillResult, RestoreDrillArgs } from "./restoreDrill";
