/** Rule: an encrypted BackupPolicy escrows its passphrase, and every escrow Coffer uses needs N holders. */
import type { PolicyResource, ReportViolation, StackValidationPolicy } from "@pulumi/policy";
import { known, noteUnknown, relatedThrough } from "./resources";
import { COFFER_TYPES, RULE_NAMES } from "./types";

export interface EscrowThresholdConfig {
  /** The fewest recipients an escrowed secret may be recovered with. Default 2. */
  minThreshold: number;
}

/** Who escrows a secret in a SecretEscrow, e.g. `BackupPolicy "gold" (escrow)`. */
interface EscrowUse {
  escrow: PolicyResource;
  users: string[];
}

/**
 * Every SecretEscrow a policy (`escrow`) or set (`escrow`, `keyEscrow` for Cinder volume keys) names,
 * with who names it, in the order first named.
 */
export function escrowUses(resources: PolicyResource[]): EscrowUse[] {
  const uses = new Map<string, EscrowUse>();
  const links: [string, string, string[]][] = [
    [COFFER_TYPES.backupPolicy, "BackupPolicy", ["escrow"]],
    [COFFER_TYPES.backupSet, "EncryptedBackupSet", ["escrow", "keyEscrow"]],
  ];
  for (const [type, label, props] of links) {
    for (const resource of resources.filter((r) => r.type === type)) {
      for (const prop of props) {
        for (const escrow of relatedThrough(resource, prop, COFFER_TYPES.secretEscrow)) {
          const use = uses.get(escrow.urn) ?? { escrow, users: [] };
          const user = `${label} "${resource.name}" (${prop})`;
          if (!use.users.includes(user)) use.users.push(user);
          uses.set(escrow.urn, use);
        }
      }
    }
  }
  return [...uses.values()];
}

function checkEncryptedPoliciesHaveEscrow(resources: PolicyResource[], minThreshold: number, report: ReportViolation) {
  for (const policy of resources.filter((r) => r.type === COFFER_TYPES.backupPolicy)) {
    // Only whether it is set: the passphrase itself is a secret, here in the clear.
    const encrypted = known(() => policy.props.encryption !== undefined && policy.props.encryption !== null);
    if (encrypted === undefined) {
      noteUnknown(report, policy.urn, `Whether BackupPolicy "${policy.name}" encrypts`);
      continue;
    }
    if (!encrypted || relatedThrough(policy, "escrow", COFFER_TYPES.secretEscrow).length > 0) continue;
    report(
      `BackupPolicy "${policy.name}" is encrypted but escrows its passphrase nowhere: a lost passphrase loses ` +
        `every backup. Fix: create a coffer.SecretEscrow of the passphrase with threshold >= ${minThreshold} ` +
        `and pass it as the policy's \`escrow\` (requireEscrow: true makes the policy itself insist).`,
      policy.urn,
    );
  }
}

export const escrowThreshold: StackValidationPolicy = {
  name: RULE_NAMES.escrowThreshold,
  description:
    "An encrypted BackupPolicy escrows its passphrase in a SecretEscrow, and every SecretEscrow a policy or " +
    "set names (escrow, keyEscrow) needs at least N recipients to recover it.",
  enforcementLevel: "mandatory",
  configSchema: {
    properties: { minThreshold: { type: "integer", minimum: 1, default: 2 } },
  },
  validateStack: (args, report) => {
    const { minThreshold } = args.getConfig<EscrowThresholdConfig>();
    checkEncryptedPoliciesHaveEscrow(args.resources, minThreshold, report);
    for (const { escrow, users } of escrowUses(args.resources)) {
      // Absent is SecretEscrow's default, 1.
      const threshold = known(() => (escrow.props.threshold ?? 1) as number);
      if (threshold === undefined) {
        noteUnknown(report, escrow.urn, `SecretEscrow "${escrow.name}"'s threshold`);
      } else if (threshold < minThreshold) {
        report(
          `SecretEscrow "${escrow.name}" (escrow of ${users.join(", ")}) recovers with threshold ${threshold}; ` +
            `this stack requires at least ${minThreshold}. Fix: set \`threshold: ${minThreshold}\` (or more) on ` +
            `"${escrow.name}", with at least as many recipients.`,
          escrow.urn,
        );
      }
    }
  },
};
