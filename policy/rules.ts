/**
 * Coffer's policy rules (@pulumi/policy), apart from the pack that serves them (./index.ts), so that
 * tests call them as plain functions and a team can put them in a pack of its own.
 *
 * What a policy sees of Coffer's resources (dynamic-provider resources):
 * - type: `pulumi-nodejs:dynamic/coffer:<Class>` (the module and type Coffer passes to
 *   `dynamic.Resource`), not `pulumi-nodejs:dynamic:Resource`;
 * - props: the inputs as the provider's `check` returned them; `__provider` is not among them (the
 *   engine drops internal `__` keys before it asks a policy), and secrets arrive in the clear: a
 *   rule must never put a prop into its message or a log;
 * - in a preview, a value that comes from another resource's output is unknown: reading it throws
 *   UnknownValueError, and @pulumi/policy turns that into an advisory "can't run policy during
 *   preview", which does not fail the preview. Rules here read only what is known in a first
 *   preview, and relate resources through `propertyDependencies` rather than through values.
 */
import {
  type PolicyResource,
  type ReportViolation,
  type ResourceValidationPolicy,
  type StackValidationArgs,
  type StackValidationPolicy,
  UnknownValueError,
} from "@pulumi/policy";
import * as path from "node:path";

export const TYPES = {
  backupPolicy: "pulumi-nodejs:dynamic/coffer:BackupPolicy",
  backupSet: "pulumi-nodejs:dynamic/coffer:EncryptedBackupSet",
  secretEscrow: "pulumi-nodejs:dynamic/coffer:SecretEscrow",
} as const;

/** A value that is unknown (in a preview) reads as undefined instead of stopping the rule. */
function known<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch (error) {
    if (error instanceof UnknownValueError) return undefined;
    throw error;
  }
}

export interface EscrowThresholdConfig {
  minThreshold: number;
}

/** Every encrypted BackupPolicy has an `escrow` whose threshold is at least `minThreshold`. */
export const encryptedPolicyEscrow: StackValidationPolicy = {
  name: "coffer-encrypted-policy-escrow",
  description: "An encrypted BackupPolicy escrows its passphrase in a SecretEscrow with a threshold of at least N.",
  enforcementLevel: "mandatory",
  configSchema: {
    properties: { minThreshold: { type: "integer", minimum: 1, default: 2 } },
  },
  validateStack: (args: StackValidationArgs, reportViolation: ReportViolation) => {
    const { minThreshold } = args.getConfig<EscrowThresholdConfig>();
    for (const policy of args.resources.filter((r) => r.type === TYPES.backupPolicy)) {
      // Only whether it is set: the passphrase itself is a secret, seen here in the clear.
      const encrypted = known(() => policy.props.encryption !== undefined && policy.props.encryption !== null);
      if (encrypted !== true) continue;
      const escrows = (policy.propertyDependencies.escrow ?? []).filter((r) => r.type === TYPES.secretEscrow);
      if (escrows.length === 0) {
        reportViolation(
          `BackupPolicy "${policy.name}" is encrypted but has no escrow: a lost passphrase loses every backup. ` +
            `Fix: create a coffer.SecretEscrow of the passphrase with threshold >= ${minThreshold} ` +
            `and pass it as the policy's \`escrow\`.`,
          policy.urn,
        );
        continue;
      }
      for (const escrow of escrows) {
        const threshold = known(() => escrow.props.threshold as number | undefined);
        if (threshold === undefined || threshold >= minThreshold) continue;
        reportViolation(
          `BackupPolicy "${policy.name}" escrows its passphrase in SecretEscrow "${escrow.name}" with threshold ` +
            `${threshold}; this stack requires at least ${minThreshold}. Fix: set \`threshold: ${minThreshold}\` ` +
            `(or more) on "${escrow.name}", with at least as many recipients.`,
          escrow.urn,
        );
      }
    }
  },
};

export interface RetentionConfig {
  minDays: number;
}

/**
 * The number of days back a policy's retention is sure to keep a point for (about: a weekly rule
 * counts 7 days a point, monthly 28, yearly 365); Infinity without retention (every point is kept).
 */
export function retentionDays(retention: Record<string, number | string | undefined> | null | undefined): number {
  if (retention === null || retention === undefined) return Infinity;
  const n = (key: string) => (typeof retention[key] === "number" ? (retention[key] as number) : 0);
  return Math.max(n("maxAgeDays"), n("keepDaily"), 7 * n("keepWeekly"), 28 * n("keepMonthly"), 365 * n("keepYearly"));
}

/** Every BackupPolicy's retention keeps at least `minDays` days of points. */
export const retentionMinimum: ResourceValidationPolicy = {
  name: "coffer-retention-min-days",
  description: "A BackupPolicy's retention keeps at least N days of recovery points.",
  enforcementLevel: "mandatory",
  configSchema: {
    properties: { minDays: { type: "integer", minimum: 1, default: 7 } },
  },
  validateResource: (args, reportViolation) => {
    if (args.type !== TYPES.backupPolicy) return;
    const { minDays } = args.getConfig<RetentionConfig>();
    const days = known(() => retentionDays(args.props.retention));
    if (days === undefined || days >= minDays) return;
    reportViolation(
      `BackupPolicy "${args.name}" keeps ${days} day(s) of points; this stack requires at least ${minDays}. ` +
        `Fix: set \`retention: { keepDaily: ${minDays} }\` or \`maxAgeDays: ${minDays}\` (or more).`,
    );
  },
};

/**
 * A set's disk sources do not live in its policy's target: a backup on the storage it protects is
 * lost with it. Relates each set to its BackupPolicy through the set's `policy` input, whose value
 * is unknown in a first preview but whose dependency is not.
 */
export const targetNotSourceStorage: StackValidationPolicy = {
  name: "coffer-target-not-source-storage",
  description: "An EncryptedBackupSet's target is not the storage of the disks it backs up.",
  enforcementLevel: "mandatory",
  validateStack: (args, reportViolation) => {
    for (const set of args.resources.filter((r) => r.type === TYPES.backupSet)) {
      const policies: PolicyResource[] = (set.propertyDependencies.policy ?? []).filter(
        (r) => r.type === TYPES.backupPolicy,
      );
      for (const policy of policies) {
        const target = known(() => policy.props.target?.path as string | undefined);
        if (target === undefined) continue;
        const sources = known(() => (set.props.sources ?? []) as { name?: string; disk?: string }[]) ?? [];
        for (const source of sources) {
          const disk = known(() => source.disk);
          if (typeof disk !== "string") continue;
          const relative = path.relative(path.resolve(target), path.resolve(disk));
          if (relative.startsWith("..") || path.isAbsolute(relative)) continue;
          reportViolation(
            `EncryptedBackupSet "${set.name}" backs up disk "${known(() => source.name)}" that lies in its policy ` +
              `"${policy.name}"'s target (${target}): losing that storage loses the VM and its backups. ` +
              `Fix: give "${policy.name}" a target on other storage, or use a policy whose target is elsewhere.`,
            set.urn,
          );
        }
      }
    }
  },
};

export const cofferPolicies = [encryptedPolicyEscrow, retentionMinimum, targetNotSourceStorage];
