import type { PolicyResource, StackValidationArgs } from "@pulumi/policy";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { TYPES, encryptedPolicyEscrow, retentionDays, targetNotSourceStorage } from "../../policy/rules";

const repoRoot = path.resolve(__dirname, "../..");

/** A resource as @pulumi/policy hands it to a stack rule (only what the rules read). */
function resource(
  type: string,
  name: string,
  props: Record<string, unknown>,
  propertyDependencies: Record<string, PolicyResource[]> = {},
): PolicyResource {
  return { type, name, urn: `urn:pulumi:s::p::${type}::${name}`, props, propertyDependencies } as PolicyResource;
}

function runStack(
  rule: { validateStack: (args: StackValidationArgs, report: (message: string, urn?: string) => void) => unknown },
  resources: PolicyResource[],
  config: object = {},
) {
  const reports: { message: string; urn?: string }[] = [];
  rule.validateStack({ resources, getConfig: () => config } as unknown as StackValidationArgs, (message, urn) =>
    reports.push({ message, urn }),
  );
  return reports;
}

describe("Coffer's policy rules as plain functions", () => {
  it("the pack's version is Coffer's (@pulumi/policy reads it from policy-pack/package.json)", () => {
    const pack = JSON.parse(readFileSync(path.join(repoRoot, "policy-pack/package.json"), "utf8"));
    const coffer = JSON.parse(readFileSync(path.join(repoRoot, "package.json"), "utf8"));
    expect(pack.version).toBe(coffer.version);
  });

  it("counts the days a retention is sure to keep", () => {
    expect(retentionDays(undefined)).toBe(Infinity);
    expect(retentionDays(null)).toBe(Infinity);
    expect(retentionDays({ keepLast: 30 })).toBe(0);
    expect(retentionDays({ keepDaily: 3, maxAgeDays: 10 })).toBe(10);
    expect(retentionDays({ keepWeekly: 2, timeZone: "UTC" })).toBe(14);
  });

  it("relates an encrypted policy to its escrow through propertyDependencies", () => {
    const escrow = resource(TYPES.secretEscrow, "e", { threshold: 1, secret: "S3CRET" });
    const policy = resource(TYPES.backupPolicy, "gold", { encryption: { passphrase: "S3CRET" } }, { escrow: [escrow] });
    const reports = runStack(encryptedPolicyEscrow, [escrow, policy], { minThreshold: 2 });
    expect(reports).toHaveLength(1);
    expect(reports[0].urn).toBe(escrow.urn);
    expect(reports[0].message).toContain("threshold 1; this stack requires at least 2");
    expect(reports[0].message).not.toContain("S3CRET");
    expect(runStack(encryptedPolicyEscrow, [escrow, policy], { minThreshold: 1 })).toEqual([]);
    const alone = resource(TYPES.backupPolicy, "gold", { encryption: { passphrase: "S3CRET" } });
    expect(runStack(encryptedPolicyEscrow, [alone], { minThreshold: 2 })[0].message).toContain("has no escrow");
    const plain = resource(TYPES.backupPolicy, "plain", { encryption: null });
    expect(runStack(encryptedPolicyEscrow, [plain], { minThreshold: 2 })).toEqual([]);
  });

  it("finds a set's disk inside its policy's target, and only there", () => {
    const policy = resource(TYPES.backupPolicy, "gold", { target: { kind: "directory", path: "/srv/backups" } });
    const set = (disk: string) =>
      resource(TYPES.backupSet, "nightly", { sources: [{ name: "root", disk }] }, { policy: [policy] });
    expect(runStack(targetNotSourceStorage, [policy, set("/srv/backups/vm/root.raw")])).toHaveLength(1);
    expect(runStack(targetNotSourceStorage, [policy, set("/srv/backups-old/root.raw")])).toEqual([]);
    expect(runStack(targetNotSourceStorage, [policy, set("/var/lib/libvirt/root.raw")])).toEqual([]);
  });
});
