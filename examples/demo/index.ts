// The demo program: one zone's backup policy, written where host agents would read it.
// Its default target is a folder in the repository's ignored work area, .work/demo/target
// (relative to the project root: Pulumi runs the program from its own folder).
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as coffer from "coffer";

const config = new pulumi.Config();

const policy = new coffer.BackupPolicy("demo-zone", {
  zone: config.get("zone") ?? "demo-zone",
  target: { kind: "directory", path: config.get("targetPath") ?? path.join(pulumi.getRootDirectory(), ".work/demo/target") },
  compression: "zstd",
  encryption: { passphrase: config.requireSecret("passphrase") },
  bandwidthLimitMiBps: 50,
  integrityCheck: "full",
  retention: { keepLast: 7, maxAgeDays: 30 },
});

export const policyDocument = policy.documentPath;
export const policyRevision = policy.revision;
export const policySettings = policy.settings;
