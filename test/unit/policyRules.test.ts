import type { PolicyResource, StackValidationArgs, StackValidationPolicy } from "@pulumi/policy";
import { unknownCheckingProxy } from "@pulumi/policy";
import { mkdirSync, readFileSync, symlinkSync } from "node:fs";
import * as path from "node:path";
import {
  COFFER_TYPES,
  RULE_NAMES,
  cofferPolicies,
  FOREIGN_TYPES,
  escrowThreshold,
  finalStateCoverage,
  retentionDays,
  targetNotSourceStorage,
} from "../../policy";
import { useTempDir } from "../support/tempDir";

const repoRoot = path.resolve(__dirname, "../..");
// What the engine sends for a value unknown in a preview (internal to @pulumi/policy: not in its types).
const { unknownNumberValue, unknownObjectValue } = require("@pulumi/policy/proxy") as Record<string, string>;

/** A resource as @pulumi/policy hands it to a stack rule: props behind its unknown-checking proxy. */
function resource(
  type: string,
  name: string,
  props: Record<string, unknown>,
  propertyDependencies: Record<string, PolicyResource[]> = {},
): PolicyResource {
  const urn = `urn:pulumi:s::p::${type}::${name}`;
  return { type, name, urn, props: unknownCheckingProxy(props), propertyDependencies } as unknown as PolicyResource;
}

interface Report {
  message: string;
  urn?: string;
  advisory?: boolean;
}

/** Runs a stack rule over `resources` with `config` as getConfig's answer (defaults filled as the pack does). */
function run(rule: StackValidationPolicy, resources: PolicyResource[], config: object = {}): Report[] {
  const defaults = Object.fromEntries(
    Object.entries(rule.configSchema?.properties ?? {}).map(([key, schema]) => [key, (schema as any).default]),
  );
  const reports: Report[] = [];
  const args = { resources, getConfig: () => ({ ...defaults, ...config }) } as unknown as StackValidationArgs;
  rule.validateStack(args, ((message: string | { message: string; urn: string }, urn?: string) =>
    reports.push(
      typeof message === "string" ? { message, urn } : { message: message.message, urn: message.urn, advisory: true },
    )) as any);
  return reports;
}

const policyNamed = (name: string, props: Record<string, unknown>, deps: Record<string, PolicyResource[]> = {}) =>
  resource(COFFER_TYPES.backupPolicy, name, { target: { kind: "directory", path: "/srv/backups" }, ...props }, deps);
const setOf = (policy: PolicyResource, props: Record<string, unknown>, deps: Record<string, PolicyResource[]> = {}) =>
  resource(COFFER_TYPES.backupSet, "nightly", { sources: [], ...props }, { policy: [policy], ...deps });
const escrowWith = (threshold: unknown, name = "zone-passphrase") =>
  resource(COFFER_TYPES.secretEscrow, name, { threshold, secret: "S3CRET-passphrase" });

describe("the pack", () => {
  it("has Coffer's version (@pulumi/policy reads it from policy-pack/package.json) and each rule once", () => {
    const pack = JSON.parse(readFileSync(path.join(repoRoot, "policy-pack/package.json"), "utf8"));
    const coffer = JSON.parse(readFileSync(path.join(repoRoot, "package.json"), "utf8"));
    expect(pack.version).toBe(coffer.version);
    expect(cofferPolicies.map((rule) => rule.name)).toEqual(Object.values(RULE_NAMES));
  });
});

describe(RULE_NAMES.escrowThreshold, () => {
  const encryption = { passphrase: "S3CRET-passphrase" };

  it("fails an escrow below the threshold, on the escrow, naming who uses it and the fix; never the secret", () => {
    const escrow = escrowWith(1);
    const policy = policyNamed("gold", { encryption }, { escrow: [escrow] });
    const reports = run(escrowThreshold, [escrow, policy]);
    expect(reports).toEqual([{ message: expect.any(String), urn: escrow.urn }]);
    expect(reports[0].message).toContain(
      'SecretEscrow "zone-passphrase" (escrow of BackupPolicy "gold" (escrow)) recovers with threshold 1; ' +
        "this stack requires at least 2. Fix: set `threshold: 2`",
    );
    expect(reports[0].message).not.toContain("S3CRET");
    expect(run(escrowThreshold, [escrow, policy], { minThreshold: 1 })).toEqual([]);
    expect(
      run(escrowThreshold, [escrowWith(3), policyNamed("gold", { encryption }, { escrow: [escrowWith(3)] })]),
    ).toEqual([]);
  });

  it("counts an absent threshold as SecretEscrow's default of 1", () => {
    const escrow = escrowWith(undefined);
    const reports = run(escrowThreshold, [escrow, policyNamed("gold", { encryption }, { escrow: [escrow] })]);
    expect(reports[0].message).toContain("threshold 1;");
  });

  it("fails an encrypted policy with no escrow, and passes an unencrypted one", () => {
    const reports = run(escrowThreshold, [policyNamed("gold", { encryption })]);
    expect(reports[0].message).toContain('BackupPolicy "gold" is encrypted but escrows its passphrase nowhere');
    expect(reports[0].message).toContain("Fix: create a coffer.SecretEscrow");
    expect(run(escrowThreshold, [policyNamed("plain", { encryption: null })])).toEqual([]);
  });

  it("checks the escrows sets name (escrow, keyEscrow) too, each escrow once", () => {
    const escrow = escrowWith(1, "volume-keys");
    const policy = policyNamed("plain", {});
    const set = setOf(policy, {}, { keyEscrow: [escrow], escrow: [escrow] });
    const reports = run(escrowThreshold, [escrow, policy, set]);
    expect(reports).toHaveLength(1);
    expect(reports[0].message).toContain(
      '(escrow of EncryptedBackupSet "nightly" (escrow), EncryptedBackupSet "nightly" (keyEscrow))',
    );
  });

  it("notes, without failing, an escrow whose threshold is unknown in the preview", () => {
    const escrow = escrowWith(unknownNumberValue);
    const reports = run(escrowThreshold, [escrow, policyNamed("gold", { encryption }, { escrow: [escrow] })]);
    expect(reports).toEqual([
      { message: expect.stringContaining("threshold can't be known in this preview"), urn: escrow.urn, advisory: true },
    ]);
  });
});

describe(RULE_NAMES.retentionDays, () => {
  it("fails a policy keeping fewer days than configured, with the rule that reaches furthest and the fix", () => {
    const policy = policyNamed("gold", { retention: { keepDaily: 3, keepHourly: 48 } });
    const reports = run(retentionDays, [policy]);
    expect(reports).toEqual([{ message: expect.any(String), urn: policy.urn }]);
    expect(reports[0].message).toContain('BackupPolicy "gold" keeps 3 d of points (keepDaily 3); this stack requires');
    expect(reports[0].message).toContain("Fix: set `keepDaily: 7` or `maxAgeDays: 7` in its retention");
    expect(run(retentionDays, [policy], { minDays: 3 })).toEqual([]);
  });

  it("passes no retention (every point kept), and weeks, months or maxAgeDays that reach far enough", () => {
    expect(run(retentionDays, [policyNamed("all", { retention: null })])).toEqual([]);
    expect(run(retentionDays, [policyNamed("w", { retention: { keepLast: 1, keepWeekly: 1 } })])).toEqual([]);
    expect(run(retentionDays, [policyNamed("m", { retention: { keepMonthly: 1 } })], { minDays: 28 })).toEqual([]);
    expect(run(retentionDays, [policyNamed("a", { retention: { maxAgeDays: 6 } })])).toHaveLength(1);
  });

  it("counts keepLast by each set's schedule, failing on the set that keeps least", () => {
    const policy = policyNamed("gold", { retention: { keepLast: 10 } });
    const daily = resource(COFFER_TYPES.backupSet, "daily", { schedule: { every: "24h" } }, { policy: [policy] });
    const twiceADay = resource(
      COFFER_TYPES.backupSet,
      "twice",
      { schedule: { cron: "0 3,15 * * *" } },
      { policy: [policy] },
    );
    expect(run(retentionDays, [policy, daily])).toEqual([]);
    const reports = run(retentionDays, [policy, daily, twiceADay]);
    expect(reports[0].message).toContain(
      'keeps 5 d of points for set "twice" (keepLast 10, a point at most every 12 h)',
    );
    const unscheduled = resource(COFFER_TYPES.backupSet, "manual", {}, { policy: [policy] });
    expect(run(retentionDays, [policy, unscheduled])[0].message).toContain("keepLast 10, without a schedule");
    // No set of it in the stack: keepLast has no pace to count by.
    expect(run(retentionDays, [policy])[0].message).toContain("keeps 0 h of points (keepLast 10, without a schedule)");
  });

  it("notes unknown retention or schedule in a preview instead of failing on it", () => {
    const unknownPolicy = policyNamed("gold", { retention: unknownObjectValue });
    expect(run(retentionDays, [unknownPolicy])).toEqual([
      { message: expect.stringContaining("retention can't be known"), urn: unknownPolicy.urn, advisory: true },
    ]);
    const policy = policyNamed("gold", { retention: { keepLast: 30, keepDaily: 7 } });
    const set = resource(COFFER_TYPES.backupSet, "nightly", { schedule: unknownObjectValue }, { policy: [policy] });
    // keepDaily 7 keeps 7 days whatever the schedule: only the note.
    expect(run(retentionDays, [policy, set])).toEqual([
      { message: expect.stringContaining("schedule (which keepLast counts on)"), urn: set.urn, advisory: true },
    ]);
  });
});

describe(RULE_NAMES.targetNotSourceStorage, () => {
  const tempDir = useTempDir();
  const check = (policyProps: Record<string, unknown>, sources: object[], config: object = {}) => {
    const policy = policyNamed("gold", policyProps);
    const set = setOf(policy, { sources });
    return run(targetNotSourceStorage, [policy, set], config).map((r) => ({ ...r, urn: r.urn === set.urn }));
  };
  const target = (p: string) => ({ target: { kind: "directory", path: p } });

  it("fails a disk file inside the target, and a target inside a disk's folder, on the set with the fix", () => {
    const inTarget = check(target("/srv/backups"), [{ name: "root", disk: "/srv/backups/vm/root.raw" }]);
    expect(inTarget).toEqual([{ message: expect.any(String), urn: true }]);
    expect(inTarget[0].message).toContain(
      'EncryptedBackupSet "nightly" under BackupPolicy "gold": disk "root": ' +
        "its file /srv/backups/vm/root.raw lies in the target /srv/backups; " +
        "losing that storage loses the VM and its backups. Fix: give the policy a target",
    );
    const backingFile = check(target("/srv/backups"), [
      { name: "root", disk: "/var/lib/vm/root.qcow2", format: "qcow2", backingFiles: ["/srv/backups/base.qcow2"] },
    ]);
    expect(backingFile[0].message).toContain("its file /srv/backups/base.qcow2 lies in the target");
    const targetInPool = check(target("/var/lib/libvirt/images/backups"), [
      { name: "root", disk: "/var/lib/libvirt/images/vm.raw" },
    ]);
    expect(targetInPool[0].message).toContain(
      "the target /var/lib/libvirt/images/backups lies in /var/lib/libvirt/images, the folder of its file",
    );
  });

  it("passes disks elsewhere, running VMs and Glance images", () => {
    const elsewhere = [
      { name: "a", disk: "/srv/backups-old/root.raw" },
      { name: "b", disk: "/var/lib/libvirt/images/vm.raw" },
      { name: "c", qmpSocket: "/srv/backups/vm.qmp", device: "vda" },
      { name: "d", glanceImage: "0b6e9c1e-5a1f-4d8e-9f3c-2f1e8b7a6d5c" },
    ];
    expect(check(target("/srv/backups"), elsewhere)).toEqual([]);
  });

  it("compares real paths on this machine: a symlinked target into the disks' folder fails", () => {
    const disks = path.join(tempDir(), "disks");
    mkdirSync(path.join(disks, "backups"), { recursive: true });
    const link = path.join(tempDir(), "backups");
    symlinkSync(path.join(disks, "backups"), link);
    const reports = check(target(link), [{ name: "root", disk: path.join(disks, "vm.raw") }]);
    expect(reports[0].message).toContain(`the target ${link} (really ${path.join(disks, "backups")}) lies in ${disks}`);
    // Through a host, paths are compared as written.
    expect(check({ ...target(link), host: "kvm-07" }, [{ name: "root", disk: path.join(disks, "vm.raw") }])).toEqual(
      [],
    );
  });

  it("fails a Cinder volume without a copy in the target, unless copyToTarget or allowCinderBackupStore", () => {
    const volume = { name: "data", cinderVolume: "5f0c2a4e-8d2b-4c1e-9a7f-3b6d1e2c4a5b" };
    const reports = check(target("/srv/backups"), [volume]);
    expect(reports[0].message).toContain(
      'Cinder volume "data" is backed up only into the cloud\'s backup store (cinder-backup)',
    );
    expect(reports[0].message).toContain("Fix: set `copyToTarget: true` on the source (or the BackupPolicy)");
    expect(check(target("/srv/backups"), [{ ...volume, copyToTarget: true }])).toEqual([]);
    expect(check({ ...target("/srv/backups"), copyToTarget: true }, [volume])).toEqual([]);
    expect(check({ ...target("/srv/backups"), copyToTarget: true }, [{ ...volume, copyToTarget: false }])).toHaveLength(
      1,
    );
    expect(check(target("/srv/backups"), [volume], { allowCinderBackupStore: true })).toEqual([]);
  });

  it("notes sources unknown in the preview", () => {
    const policy = policyNamed("gold", target("/srv/backups"));
    const set = setOf(policy, { sources: unknownObjectValue });
    expect(run(targetNotSourceStorage, [policy, set])).toEqual([
      { message: expect.stringContaining("can't be known"), urn: set.urn, advisory: true },
    ]);
  });
});

describe("coffer-final-state-backup", () => {
  const policy = policyNamed("forensics", { host: "kvm-07" });
  const runningSource = { name: "web-1-vda", qmpSocket: "/run/qemu/web-1.qmp", device: "vda" };
  const finalFor = (vm: unknown, deps: Record<string, PolicyResource[]> = {}) =>
    resource(COFFER_TYPES.finalStateBackup, "web-1-final", { vm, policy: { host: "kvm-07" } }, deps);
  const instance = resource(FOREIGN_TYPES.openstackInstance, "web-1", { name: "web-1" });

  it("fails a running VM source and a compute instance without one, naming the resource and the fix", () => {
    const reports = run(finalStateCoverage, [
      policy,
      setOf(policy, { policy: { host: "kvm-07" }, sources: [runningSource] }),
      instance,
    ]);
    expect(reports).toEqual([
      {
        message: expect.stringMatching(
          /^Compute instance "web-1" has no FinalStateBackup: .* Fix: add new coffer\.FinalStateBackup\("web-1-final", \{ vm: \{ novaServer: web-1\.id \}/,
        ),
        urn: instance.urn,
      },
      {
        message:
          'EncryptedBackupSet "nightly" backs up the running VM of /run/qemu/web-1.qmp on kvm-07 (source "web-1-vda"), ' +
          "which has no FinalStateBackup: deleting that VM would keep nothing of its last state. Fix: add " +
          'new coffer.FinalStateBackup("web-1-vda-final", { vm: { qmpSocket: "/run/qemu/web-1.qmp", devices: ["vda"], ' +
          'host: "kvm-07" }, policy, recipients, holdDays, reason }), or list "web-1-vda" in this rule\'s exempt.',
        urn: "urn:pulumi:s::p::pulumi-nodejs:dynamic/coffer:EncryptedBackupSet::nightly",
      },
    ]);
  });

  it("passes once each has one: by socket and host, or by the resource both were built from", () => {
    const set = setOf(policy, { policy: { host: "kvm-07" }, sources: [runningSource] });
    expect(
      run(finalStateCoverage, [policy, set, finalFor({ qmpSocket: "/run/qemu/web-1.qmp", devices: ["vda"] })]),
    ).toEqual([]);
    // Another host's VM with the same socket path is another VM.
    const elsewhere = finalFor({ qmpSocket: "/run/qemu/web-1.qmp", devices: ["vda"], host: "kvm-08" });
    expect(run(finalStateCoverage, [policy, set, elsewhere])).toHaveLength(1);
    // In a preview the socket may be unknown: the VM resource both depend on relates them.
    const vmResource = resource("coffer-test:index:Vm", "web-1-vm", {});
    const unknownSet = setOf(
      policy,
      { policy: { host: "kvm-07" }, sources: unknownObjectValue },
      { sources: [vmResource] },
    );
    const byOrigin = finalFor(unknownObjectValue, { vm: [vmResource] });
    expect(run(finalStateCoverage, [policy, unknownSet, byOrigin])).toEqual([]);
    expect(run(finalStateCoverage, [instance, finalFor(unknownObjectValue, { vm: [instance] })])).toEqual([]);
  });

  it("leaves disk sources alone unless includeDiskSources; exempt names need none; unknown sources are noted", () => {
    const disks = setOf(policy, { policy: { host: "kvm-07" }, sources: [{ name: "db-root", disk: "/vms/db.raw" }] });
    expect(run(finalStateCoverage, [policy, disks])).toEqual([]);
    expect(run(finalStateCoverage, [policy, disks], { includeDiskSources: true })).toEqual([
      expect.objectContaining({
        message: expect.stringContaining('the VM disk /vms/db.raw on kvm-07 (source "db-root")'),
      }),
    ]);
    const covered = finalFor({ disks: [{ disk: "/vms/db.raw" }] });
    expect(run(finalStateCoverage, [policy, disks, covered], { includeDiskSources: true })).toEqual([]);
    const set = setOf(policy, { policy: { host: "kvm-07" }, sources: [runningSource] });
    expect(run(finalStateCoverage, [policy, set, instance], { exempt: ["web-1", "web-1-vda"] })).toEqual([]);
    const unknown = run(finalStateCoverage, [
      policy,
      setOf(policy, { policy: { host: "kvm-07" }, sources: unknownObjectValue }),
    ]);
    expect(unknown).toEqual([expect.objectContaining({ advisory: true })]);
  });
});
