import { z } from "zod";
import { COMPRESSIONS, INTEGRITY_CHECKS, sshHost } from "../backupPolicy/schema";
import { parseRecipientKey } from "../escrow/envelope";
import { checkEscrowLink, escrowLink } from "../escrow/schema";
import { holds } from "../history/holds";
import { retentionRules } from "../history/retention";
import { schedule } from "../history/schedule";
import { copiesToTarget } from "../sources/cinderVolume";
import { sourceSchema } from "../sources/registry";
import { signingKeyProblem } from "../common/signingKey";
import { swiftTargetSchema } from "../targets/swiftTarget";

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** A source: its name, where it is, and the fields of its kind (see provider/sources/). */
const source = sourceSchema({
  name: z.string({ error: "name is required: it names the backup file" }).regex(NAME, {
    message:
      "name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (it names the backup file)",
  }),
  host: sshHost("host").optional(),
});

/** What the resource class passes from the BackupPolicy: its settings, as applied. */
export const appliedPolicy = z.object({
  id: z.string(),
  zone: z.string(),
  /** A folder, or a Swift container (checked by BackupPolicy; its key is in `keys.targetKey`). */
  target: z.discriminatedUnion("kind", [
    z.object({ kind: z.literal("directory"), path: z.string() }),
    swiftTargetSchema,
  ]),
  compression: z.enum(COMPRESSIONS),
  integrityCheck: z.enum(INTEGRITY_CHECKS),
  bandwidthLimitMiBps: z.number().int().min(0),
  encrypted: z.boolean(),
  host: z.string().optional(),
  /** Copy Cinder sources that don't say otherwise into the target; present only when true. */
  copyToTarget: z.boolean().optional(),
});

/**
 * The policy's history settings, checked by BackupPolicy. Apart from `policy`, so that one not
 * known during a preview (state written before they existed) leaves the rest of the policy known.
 */
const history = z.object({
  /** Absent or null: keep every point. */
  retention: retentionRules.extend({ timeZone: z.string().optional() }).nullish(),
  /** Refresh shows the set as overdue, and the next up takes a point, when its newest good point is older. */
  rpoHours: z.number().positive().nullish(),
  /** Refresh re-verifies points last checked longer ago than this (the newest point every time). */
  reverifyAfterDays: z.number().positive().nullish(),
});

/** A SecretEscrow's store and recipients, to seal volume keys for; each public key is checked at preview. */
const keyEscrow = z
  .object(
    {
      store: z.string(),
      recipients: z
        .array(
          z.object({
            name: z.string(),
            publicKey: z.string().superRefine((pem, ctx) => {
              const parsed = parseRecipientKey(pem);
              if (!parsed.ok) ctx.addIssue({ code: "custom", message: `publicKey ${parsed.reason}` });
            }),
          }),
        )
        .min(1),
      threshold: z.number().int().min(1),
    },
    { error: "keyEscrow must be a coffer.SecretEscrow" },
  )
  .strict()
  .refine((e) => e.threshold <= e.recipients.length, {
    message: "keyEscrow.threshold is more than its recipients: nobody could recover a key",
  });

export const backupSetInputs = z
  .object({
    policy: appliedPolicy,
    history: history.optional(),
    /** Secret: the policy's passphrase (encrypted sets) and manifest key, and its signing key when it has one. */
    keys: z.object({
      passphrase: z.string().optional(),
      manifestKey: z.string().min(1).optional(),
      /** The PEM of the policy's Ed25519 private key: every point's manifest is signed with it. */
      signingKey: z
        .string()
        .superRefine((pem, ctx) => {
          const problem = signingKeyProblem(pem, "the policy's signing.privateKey");
          if (problem) ctx.addIssue({ code: "custom", message: problem });
        })
        .optional(),
      /** A Swift target's key: agents sign in to the container with it. */
      targetKey: z.string().min(1).optional(),
    }),
    sources: z
      .array(source, { error: "sources must be a list of disks, running VMs and Cinder volumes to back up" })
      .min(1, { message: "sources must name at least one disk, running VM or Cinder volume" }),
    trigger: z
      .string({ error: 'trigger is required: a value whose change takes a new set, e.g. "2026-11-24"' })
      .min(1, {
        message: 'trigger must not be empty: a value whose change takes a new set, e.g. "2026-11-24"',
      }),
    host: sshHost("host").optional(),
    concurrency: z
      .number({ error: "concurrency must be a whole number from 1 to 16" })
      .int({ message: "concurrency must be a whole number from 1 to 16" })
      .min(1, { message: "concurrency must be a whole number from 1 to 16" })
      .max(16, { message: "concurrency must be a whole number from 1 to 16" })
      .default(2),
    /**
     * The escrow of the passphrase, as it was when the set was taken: the manifest names that
     * version of the record, and a later rotation does not touch the set.
     */
    escrow: escrowLink.optional(),
    /**
     * Where the keys of encrypted Cinder volumes are escrowed: a SecretEscrow's store, recipients
     * and threshold (the resource class passes them for sets with Cinder sources).
     */
    keyEscrow: keyEscrow.optional(),
    /** When a point is due besides a new trigger: `{ every: "24h" }` or `{ cron, timeZone? }`. */
    schedule: schedule.optional(),
    /** Points kept whatever retention says (a legal hold), by the CLI too. */
    holds: holds.optional(),
    /** `pulumi destroy` keeps the set's points unless this is true; held points are always kept. */
    deleteBackupsOnDestroy: z
      .boolean({ error: "deleteBackupsOnDestroy must be true or false (default false: destroy keeps the points)" })
      .optional(),
  })
  .strict()
  .superRefine((inputs, ctx) => {
    const seen = new Map<string, number>();
    // A copy is staged on the machine that runs Pulumi: the target must be mounted there.
    const remote = inputs.host ?? inputs.policy.host;
    const staged =
      "stages the volume's data on the machine that runs Pulumi, but the set's target is reached " +
      `through ${remote}: run Pulumi where the target is mounted (no host)`;
    const inherited: string[] = [];
    inputs.sources.forEach((s, i) => {
      if (remote !== undefined && copiesToTarget(s, inputs.policy.copyToTarget)) {
        if ((s as { copyToTarget?: boolean }).copyToTarget === undefined) {
          inherited.push(`sources[${i}] ("${s.name}")`);
        } else {
          const message = `copyToTarget ${staged}, or remove copyToTarget`;
          ctx.addIssue({ code: "custom", path: ["sources", i, "copyToTarget"], message });
        }
      }
      if (seen.has(s.name))
        ctx.addIssue({
          code: "custom",
          path: ["sources", i, "name"],
          message: `name "${s.name}" is used twice (also sources[${seen.get(s.name)}]): each source needs its own`,
        });
      seen.set(s.name, i);
    });
    if (inherited.length > 0) {
      ctx.addIssue({
        code: "custom",
        path: ["policy", "copyToTarget"],
        message:
          `the BackupPolicy's copyToTarget applies to the Cinder volume of ${inherited.join(", ")}: it ${staged}, ` +
          "set copyToTarget: false on the source, or remove copyToTarget from the BackupPolicy",
      });
    }
    if (inputs.policy.target.kind === "swift") checkOnSwift(inputs, ctx);
    if (inputs.policy.encrypted && !inputs.keys.passphrase) {
      ctx.addIssue({
        code: "custom",
        path: ["keys", "passphrase"],
        message: "the policy encrypts backups but no passphrase reached the backup set",
      });
    }
    if (!inputs.policy.encrypted && !inputs.keys.manifestKey) {
      ctx.addIssue({
        code: "custom",
        path: ["keys", "manifestKey"],
        message: "the policy's manifest key did not reach the backup set: pass the BackupPolicy resource as policy",
      });
    }
    checkEscrowLink(
      inputs.escrow,
      inputs.policy.encrypted,
      ctx,
      "escrow is set but the policy does not encrypt: there is no passphrase to escrow; remove escrow",
    );
  });

/** What a set on a Swift target can't do (yet), each named with its field and the fix. */
function checkOnSwift(inputs: Pick<BackupSetInputs, "keys" | "sources">, ctx: z.core.$RefinementCtx): void {
  if (!inputs.keys.targetKey) {
    const message = "the policy's Swift key did not reach the backup set: pass the BackupPolicy resource as policy";
    ctx.addIssue({ code: "custom", path: ["keys", "targetKey"], message });
  }
  inputs.sources.forEach((s, i) => {
    if ((s as { incremental?: boolean }).incremental !== true || (s as { cinderVolume?: string }).cinderVolume) return;
    const message =
      `incremental (sources[${i}], "${s.name}") is not supported on a Swift target yet: a link is read over its ` +
      "base points' backups, which QEMU needs as local files; remove incremental (full points), " +
      "or use a directory target";
    ctx.addIssue({ code: "custom", path: ["sources", i, "incremental"], message });
  });
}

export type BackupSetInputs = z.output<typeof backupSetInputs>;
export type SourceInput = BackupSetInputs["sources"][number];
