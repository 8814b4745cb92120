import { createHmac, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { canonicalJson } from "../common/canonicalJson";
import { FINGERPRINT_PATTERN, SIGNATURE_ALGORITHM, publicKeyOf } from "../common/signingKey";
import { BackupPolicyInputs, COMPRESSIONS, INTEGRITY_CHECKS } from "./schema";

/**
 * The zone's effective policy as host agents read it, at targetLayout.policyDocument(zone) on the target.
 * It never holds the passphrase: only whether encryption is on and an HMAC-SHA-256 fingerprint of
 * the passphrase, keyed by a random key that lives in Pulumi's encrypted state. A reader of the
 * file can't test passphrase guesses against it; a holder of the state can check which passphrase
 * the document expects.
 */
export const DOCUMENT_KIND = "coffer.BackupPolicy";
/** Bumped when the document's shape changes (not for optional fields); readers accept every older one. */
export const DOCUMENT_SCHEMA_VERSION = 1;

export const policySettings = z.object({
  compression: z.enum(COMPRESSIONS),
  encryption: z.discriminatedUnion("enabled", [
    z.object({ enabled: z.literal(false) }),
    z.object({ enabled: z.literal(true), format: z.literal("luks"), passphraseFingerprint: z.string() }),
  ]),
  bandwidthLimitMiBps: z.number().int().min(0),
  integrityCheck: z.enum(INTEGRITY_CHECKS),
  retention: z.object({
    keepLast: z.number().int().min(1).optional(),
    keepHourly: z.number().int().min(1).optional(),
    keepDaily: z.number().int().min(1).optional(),
    keepWeekly: z.number().int().min(1).optional(),
    keepMonthly: z.number().int().min(1).optional(),
    keepYearly: z.number().int().min(1).optional(),
    maxAgeDays: z.number().int().min(1).optional(),
    timeZone: z.string().optional(),
  }),
  /** Absent in documents written before histories, and when not set. */
  rpoHours: z.number().positive().optional(),
  reverifyAfterDays: z.number().positive().optional(),
  /** Cinder volumes are also copied into the target (see BackupPolicy's copyToTarget); absent: not set. */
  copyToTarget: z.boolean().optional(),
  /** Where the passphrase is escrowed (documents written before escrow existed have none). */
  escrow: z.object({ recordId: z.string(), store: z.string() }).nullable().default(null),
  /**
   * The public key the sets' manifests are signed with (never the private key); absent: unsigned.
   * For information: a verifier takes the public key from the operator, not from the target.
   */
  signing: z
    .object({
      algorithm: z.literal(SIGNATURE_ALGORITHM),
      publicKey: z.string(),
      fingerprint: z.string().regex(FINGERPRINT_PATTERN),
    })
    .optional(),
});
export type PolicySettings = z.output<typeof policySettings>;

export const policyDocument = z.object({
  kind: z.literal(DOCUMENT_KIND),
  schemaVersion: z.number().int().min(1).max(DOCUMENT_SCHEMA_VERSION),
  policyId: z.string(),
  /** The resource that wrote it ("<project>/<stack>/<name>"); documents of older programs have none. */
  owner: z.string().optional(),
  zone: z.string(),
  revision: z.number().int().min(1),
  writtenAt: z.string(),
  settings: policySettings,
});
export type PolicyDocument = z.output<typeof policyDocument>;

export function passphraseFingerprint(passphrase: string, fingerprintKey: string): string {
  return (
    "hmac-sha256:" +
    createHmac("sha256", Buffer.from(fingerprintKey, "base64")).update(passphrase, "utf8").digest("hex")
  );
}

export function fingerprintMatches(passphrase: string, fingerprintKey: string, fingerprint: string): boolean {
  const expected = Buffer.from(passphraseFingerprint(passphrase, fingerprintKey));
  const actual = Buffer.from(fingerprint);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** The settings a document records for `inputs`; `fingerprint` is set exactly when encryption is on. */
export function settingsFor(inputs: BackupPolicyInputs, fingerprint: string | undefined): PolicySettings {
  return {
    compression: inputs.compression,
    encryption:
      inputs.encryption && fingerprint !== undefined
        ? { enabled: true, format: "luks", passphraseFingerprint: fingerprint }
        : { enabled: false },
    bandwidthLimitMiBps: inputs.bandwidthLimitMiBps,
    integrityCheck: inputs.integrityCheck,
    retention: { ...inputs.retention },
    ...(inputs.rpoHours != null ? { rpoHours: inputs.rpoHours } : {}),
    ...(inputs.reverifyAfterDays != null ? { reverifyAfterDays: inputs.reverifyAfterDays } : {}),
    ...(inputs.copyToTarget ? { copyToTarget: true } : {}),
    escrow: inputs.escrow ? { recordId: inputs.escrow.recordId, store: inputs.escrow.store } : null,
    ...(inputs.signing ? { signing: signingSettings(inputs.signing.privateKey) } : {}),
  };
}

/** What a document says of a signing key: its public half. */
export function signingSettings(privateKeyPem: string): NonNullable<PolicySettings["signing"]> {
  const { pem, fingerprint } = publicKeyOf(privateKeyPem);
  return { algorithm: SIGNATURE_ALGORITHM, publicKey: pem, fingerprint };
}

export function renderDocument(doc: PolicyDocument): string {
  return JSON.stringify(doc, null, 2) + "\n";
}

export type ParsedDocument = { ok: true; document: PolicyDocument } | { ok: false; problem: string };

export function parseDocument(text: string): ParsedDocument {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return { ok: false, problem: `not valid JSON (${(error as Error).message})` };
  }
  const parsed = policyDocument.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    return { ok: false, problem: `${first.path.join(".") || "document"}: ${first.message}` };
  }
  return { ok: true, document: parsed.data };
}

export function sameSettings(a: PolicySettings, b: PolicySettings): boolean {
  return canonicalJson(a) === canonicalJson(b);
}
