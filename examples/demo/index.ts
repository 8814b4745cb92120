// The demo program: one zone's backup policy, and an encrypted, verified backup set of a disk
// image under it. Its defaults are in the repository's ignored work area: the target folder
// .work/demo/target and the disk .work/demo/disks/vm-1.raw, which tools/demo.sh generates
// (relative to the project root: Pulumi runs the program from its own folder).
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as coffer from "coffer";

const config = new pulumi.Config();
const work = path.join(pulumi.getRootDirectory(), ".work/demo");

const policy = new coffer.BackupPolicy("demo-zone", {
  zone: config.get("zone") ?? "demo-zone",
  target: { kind: "directory", path: config.get("targetPath") ?? path.join(work, "target") },
  compression: "zstd",
  encryption: { passphrase: config.requireSecret("passphrase") },
  bandwidthLimitMiBps: 50,
  integrityCheck: "full",
  retention: { keepLast: 7, maxAgeDays: 30 },
});

// Changing the trigger (e.g. to today's date) takes a new set; the old one is deleted after.
const nightly = new coffer.EncryptedBackupSet("demo-nightly", {
  policy,
  sources: [{ name: "vm-1-root", disk: config.get("diskPath") ?? path.join(work, "disks/vm-1.raw") }],
  trigger: config.get("trigger") ?? "demo-1",
});

export const policyDocument = policy.documentPath;
export const backupManifest = nightly.manifestPath;
export const backupVerification = nightly.verification;
export const policyRevision = policy.revision;
export const policySettings = policy.settings;
