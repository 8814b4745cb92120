import { z } from "zod";
import { directoryLocation } from "../common/directoryLocation";
import { parseRecipientKey } from "./envelope";

/** Bumped when the shape of SecretEscrow's state changes; readers accept every older one. */
export const ESCROW_SCHEMA_VERSION = 1;
export const RECORD_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._ -]{0,62}$/;

const recipient = z
  .object({
    name: z.string({ error: 'name is required: who holds this key, e.g. "dr-team"' }).regex(NAME, {
      message: "name must be 1-63 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit",
    }),
    publicKey: z.string({
      error:
        "publicKey is required: the recipient's PEM public key (-----BEGIN PUBLIC KEY-----), RSA of 3072 bits or more, or X25519",
    }),
  })
  .strict();

/** Who may open a secret: the holders of these private keys (each parsed by checkRecipients). */
export const recipientList = z
  .array(recipient, { error: "recipients must be a list of { name, publicKey }" })
  .min(1, {
    message: "recipients must name at least one holder of a private key, or nobody can recover the secret",
  })
  .max(255, { message: "recipients can be at most 255 (Shamir's sharing over GF(256))" });

/** How many recipients are needed to open it. */
export const recipientThreshold = z
  .number({
    error:
      "threshold must be a whole number: how many recipients are needed to recover (1 to the number of recipients)",
  })
  .int({ message: "threshold must be a whole number: how many recipients are needed to recover" })
  .min(1, { message: "threshold must be at least 1: how many recipients are needed to recover" })
  .default(1);

/**
 * The inputs of a SecretEscrow, validated. Every key is parsed here, at preview: a weak,
 * unsupported or malformed key fails before anything is written, naming the recipient.
 */
export const secretEscrowInputs = z
  .object({
    secret: z
      .string({ error: "secret is required: the value to escrow, e.g. the policy's passphrase as a pulumi secret" })
      .min(1, {
        message: "secret must not be empty: escrow the value backups depend on, e.g. the policy's passphrase",
      }),
    recipients: recipientList,
    threshold: recipientThreshold,
    store: directoryLocation("store", "/srv/escrow"),
    /** The record's stable name in the store; the resource class defaults it to the resource's name. */
    recordId: z.string({ error: "recordId is required: the record's name in the store" }).regex(RECORD_ID_PATTERN, {
      message:
        "recordId must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (it names a folder in the store)",
    }),
    forceDelete: z.boolean({ error: "forceDelete must be true or false" }).default(false),
    /**
     * Declared "ok" by the resource class; refresh hands back what it found, so that
     * `pulumi preview --diff` shows drift as `recordStatus: "missing" => "ok"`.
     */
    recordStatus: z
      .literal("ok", { error: 'recordStatus is set by Coffer (always "ok" as declared): leave it out' })
      .default("ok"),
  })
  .strict()
  .superRefine((inputs, ctx) => checkRecipients(inputs, ctx, "secret"));

export type SecretEscrowInputs = z.output<typeof secretEscrowInputs>;

/**
 * Every recipient's key parsed (a weak, unsupported or malformed one fails at preview, named), no
 * name or key twice, and a threshold they can meet; `what` names what they open, for messages.
 */
export function checkRecipients(
  inputs: { recipients: { name: string; publicKey: string }[]; threshold: number },
  ctx: z.RefinementCtx,
  what: string,
): void {
  const names = new Map<string, number>();
  const fingerprints = new Map<string, number>();
  inputs.recipients.forEach((r, i) => {
    if (names.has(r.name)) {
      ctx.addIssue({
        code: "custom",
        path: ["recipients", i, "name"],
        message: `recipients[${i}].name "${r.name}" is used twice (also recipients[${names.get(r.name)}]): give each recipient its own name`,
      });
    }
    names.set(r.name, i);
    const parsed = parseRecipientKey(r.publicKey);
    if (!parsed.ok) {
      ctx.addIssue({
        code: "custom",
        path: ["recipients", i, "publicKey"],
        message: `recipients[${i}].publicKey (${r.name}) ${parsed.reason}`,
      });
      return;
    }
    const twin = fingerprints.get(parsed.key.fingerprint);
    if (twin !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["recipients", i, "publicKey"],
        message: `recipients[${i}].publicKey is the same key as recipients[${twin}]: each recipient needs its own key pair`,
      });
    }
    fingerprints.set(parsed.key.fingerprint, i);
  });
  if (inputs.recipients.length > 0 && inputs.threshold > inputs.recipients.length) {
    ctx.addIssue({
      code: "custom",
      path: ["threshold"],
      message: `threshold ${inputs.threshold} is more than the ${inputs.recipients.length} recipient(s): nobody could recover the ${what}; use 1 to ${inputs.recipients.length}`,
    });
  }
}

/**
 * What a BackupPolicy or EncryptedBackupSet is told of its escrow: which record, where, and
 * whether it holds the policy's passphrase (compared in the user's program, where both secrets
 * are known, so neither has to reach the other resource). No version: it is not known during the
 * preview of an escrow's update, and would show every policy and set as about to change. A set
 * takes the record's current version from the store when it is made.
 */
export const escrowLink = z
  .object(
    {
      recordId: z.string().regex(RECORD_ID_PATTERN),
      store: z.string(),
      escrowsPassphrase: z.boolean(),
    },
    { error: "escrow must be a coffer.SecretEscrow" },
  )
  .strict();
export type EscrowLink = z.output<typeof escrowLink>;

/**
 * The rules of an `escrow` input, for a policy or a set: it needs a passphrase to escrow, and
 * must escrow exactly that. Run with `when: () => true`, so that a field not known yet during
 * preview (which fails the link's own parsing) does not hide a wrong secret; hence the guards.
 */
export function checkEscrowLink(escrow: unknown, encrypted: boolean, ctx: z.RefinementCtx, noPassphrase: string): void {
  if (typeof escrow !== "object" || escrow === null) return;
  if (!encrypted) {
    ctx.addIssue({ code: "custom", path: ["escrow"], message: noPassphrase });
  } else if ((escrow as { escrowsPassphrase?: unknown }).escrowsPassphrase === false) {
    ctx.addIssue({
      code: "custom",
      path: ["escrow", "escrowsPassphrase"],
      message:
        "escrow holds another secret than the policy's passphrase (encryption.passphrase): give the SecretEscrow the passphrase as its secret, or backups can't be recovered from it",
    });
  }
}
