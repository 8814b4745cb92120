export { BackupPolicy } from "./backupPolicy";
export type { BackupPolicyArgs, Compression, DirectoryTarget, IntegrityCheck, PolicySettings } from "./backupPolicy";
