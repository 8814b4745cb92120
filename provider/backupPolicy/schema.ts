import { z } from "zod";
import { isTimeZone } from "../history/calendar";
import { retentionRules } from "../history/retention";
import { directoryLocation } from "../common/directoryLocation";
import { checkEscrowLink, escrowLink } from "../escrow/schema";
import { signingKeyProblem } from "../common/signingKey";
import { swiftTargetSchema } from "../targets/swiftTarget";

/**
 * Bumped when the shape of state changes; readers accept every older one.
 * 2: `targetId` (state written by 1 has none) and the optional `owner` input.
 * 3: a Swift target (`target.kind: "swift"`), its key apart in `targetKey`; directory targets are as in 2.
 */
export const POLICY_SCHEMA_VERSION = 3;

export const COMPRESSIONS = ["none", "zstd", "zlib"] as const;
export const INTEGRITY_CHECKS = ["none", "metadata", "full"] as const;
export const MIN_PASSPHRASE_LENGTH = 12;

const ZONE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * An ssh destination ("kvm-07", "root@10.0.0.7", an alias of ~/.ssh/config). It can't start
 * with "-" (ssh would take it for an option) or hold spaces or shell characters.
 */
export const sshHost = (field: string) =>
  z
    .string({
      error: `${field} must be an ssh destination such as "kvm-07" or "root@kvm-07", or absent to run on this machine`,
    })
    .regex(/^[A-Za-z0-9_][A-Za-z0-9_.@:[\]-]{0,252}$/, {
      message: `${field} must be an ssh destination such as "kvm-07" or "root@kvm-07": letters, digits and . _ - @ : [ ] only, not starting with "-"`,
    });

const directoryTarget = directoryLocation("target", "/srv/backups");

/** A folder (a NAS mount) or a Swift container; the kind decides which fields apply. */
const target = z.discriminatedUnion("kind", [directoryTarget, swiftTargetSchema], {
  error: (issue) =>
    issue.input === undefined
      ? 'target is required: set it to { kind: "directory", path: "/srv/backups" } or { kind: "swift", ... }'
      : 'target.kind must be "directory" (a mounted NAS path or local folder) or "swift" ' +
        "(an OpenStack Swift container)",
});

const encryption = z
  .object(
    {
      passphrase: z
        .string({
          error:
            "encryption.passphrase is required when encryption is set: give it a pulumi.secret(...) value, or remove `encryption` to take unencrypted backups (Coffer never falls back to unencrypted silently)",
        })
        .min(MIN_PASSPHRASE_LENGTH, {
          message: `encryption.passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters: backups on a shared target can be attacked offline`,
        }),
    },
    { error: 'encryption must be an object like { passphrase: pulumi.secret("...") }, or absent for no encryption' },
  )
  .strict();

/** The operator's Ed25519 key: every manifest of the policy's sets is signed with it, in Pulumi's process. */
const signing = z
  .object(
    {
      privateKey: z.string({ error: signingKeyProblem(undefined, "signing.privateKey") }).superRefine((pem, ctx) => {
        const problem = signingKeyProblem(pem, "signing.privateKey");
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      }),
    },
    {
      error:
        "signing must be an object like { privateKey: pulumi.secret(pem) }, or absent for manifests with an HMAC only",
    },
  )
  .strict();

/** Retention rules, and the zone whose calendar their days, weeks, ... are counted in (default UTC). */
const retention = retentionRules.extend({
  timeZone: z
    .string({ error: 'retention.timeZone must be an IANA time zone such as "Europe/Berlin"' })
    .refine(isTimeZone, { message: 'retention.timeZone must be an IANA time zone such as "Europe/Berlin" or "UTC"' })
    .optional(),
});

const positiveHours = (field: string, example: string) =>
  z
    .number({ error: `${field} must be a number of ${example}` })
    .positive({ message: `${field} must be more than 0: leave it out for no limit` });

/**
 * The inputs of a BackupPolicy, validated and normalized: defaults filled in, so that an explicit
 * default and a left-out field are the same to `pulumi preview --diff`.
 */
export const backupPolicyInputs = z
  .object({
    zone: z.string({ error: 'zone is required: set it to the zone\'s name, e.g. "zone-a"' }).regex(ZONE_PATTERN, {
      message:
        "zone must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (it names a folder under the target)",
    }),
    target,
    /** A Swift target's key (secret; the BackupPolicy class takes it from `target.key`). */
    targetKey: z.string({ error: "target.key must be text: the Swift user's key" }).min(1).optional(),
    compression: z
      .enum(COMPRESSIONS, { error: `compression must be one of ${COMPRESSIONS.map((c) => `"${c}"`).join(", ")}` })
      .default("none"),
    encryption: encryption.optional(),
    signing: signing.optional(),
    bandwidthLimitMiBps: z
      .number({ error: "bandwidthLimitMiBps must be a whole number of MiB/s: 0 or absent means unlimited" })
      .int({
        message: "bandwidthLimitMiBps must be a whole number of MiB/s (no fractions): 0 or absent means unlimited",
      })
      .min(0, { message: "bandwidthLimitMiBps must not be negative: use 0 or leave it out for unlimited" })
      .default(0),
    integrityCheck: z
      .enum(INTEGRITY_CHECKS, {
        error: `integrityCheck must be one of ${INTEGRITY_CHECKS.map((c) => `"${c}"`).join(", ")}`,
      })
      .default("none"),
    // Absent becomes null, as host does: known while a policy update is previewed (a set builds on it).
    retention: retention.nullable().default(null),
    /** Recovery point objective: a set whose newest good point is older is overdue, and its next up takes one. */
    rpoHours: positiveHours("rpoHours", "hours, e.g. 24").nullable().default(null),
    /** Refresh re-verifies points whose last check is older (the newest point every time). Default 30. */
    reverifyAfterDays: positiveHours("reverifyAfterDays", "days, e.g. 30").nullable().default(null),
    /** Where the host agent runs, over ssh; absent: on the machine that runs Pulumi. */
    // Absent becomes null (as escrow does): a checked input is known while an update is
    // previewed, and EncryptedBackupSet builds on it; an absent one would be unknown. Not so for
    // encryption: refresh shows it switched off as removed, and an unencrypted policy's sets
    // depend on its generated manifest key, unknown in such a preview anyway.
    host: sshHost("host").nullable().default(null),
    /** The SecretEscrow of the passphrase; the manifests of this policy's sets name it. */
    escrow: escrowLink.nullable().default(null),
    /**
     * Copy every Cinder volume of the policy's sets into the target too, unless its source says
     * otherwise (its own copyToTarget wins). Absent stays absent: state written before it reads the same.
     */
    copyToTarget: z
      .boolean({
        error: "copyToTarget must be true or false: whether the sets' Cinder volumes are also copied into the target",
      })
      .optional(),
    /** An encrypted policy must name its escrow: a passphrase lost with nothing escrowed loses every backup. */
    requireEscrow: z.boolean({ error: "requireEscrow must be true or false" }).default(false),
    /**
     * "<project>/<stack>/<name>", set by the BackupPolicy class: a document with this owner is this
     * resource's own (an earlier incarnation's), not another policy's. Absent in older programs.
     */
    owner: z
      .string({ error: "owner must be text: the BackupPolicy class sets it to <project>/<stack>/<name>" })
      .min(1, { message: "owner must not be empty: the BackupPolicy class sets it to <project>/<stack>/<name>" })
      .optional(),
  })
  .strict()
  .superRefine(
    (inputs, ctx) => {
      if (inputs.target?.kind === "swift" && inputs.targetKey === undefined) {
        const message =
          "target.key is required for a Swift target: the tempauth user's key, e.g. " +
          'config.requireSecret("swiftKey") (it is kept as a Pulumi secret)';
        ctx.addIssue({ code: "custom", path: ["target", "key"], message });
      }
      if (inputs.target?.kind !== "swift" && inputs.targetKey !== undefined) {
        const message = "target.key applies to a Swift target only: remove it from a directory target";
        ctx.addIssue({ code: "custom", path: ["target", "key"], message });
      }
      checkEscrowLink(
        inputs.escrow,
        !!inputs.encryption,
        ctx,
        "escrow is set but encryption is not: there is no passphrase to escrow; add encryption or remove escrow",
      );
      if (inputs.requireEscrow === true && inputs.encryption && !inputs.escrow) {
        ctx.addIssue({
          code: "custom",
          path: ["escrow"],
          message:
            "escrow is required (requireEscrow: true) for an encrypted policy: create a coffer.SecretEscrow of the passphrase and pass it as escrow, or set requireEscrow: false",
        });
      }
    },
    { when: () => true },
  );

export type BackupPolicyInputs = z.output<typeof backupPolicyInputs>;
export type Compression = (typeof COMPRESSIONS)[number];
export type IntegrityCheck = (typeof INTEGRITY_CHECKS)[number];
