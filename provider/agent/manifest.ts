import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import * as path from "node:path";
import { z } from "zod";
import { canonicalJson } from "../common/canonicalJson";
import { CofferError } from "../common/errors";
import {
  FINGERPRINT_PATTERN,
  SIGNATURE_ALGORITHM,
  SigningPublicKey,
  publicKeyOf,
  signData,
  signatureMatches,
} from "../common/signingKey";
import { sealedSchema } from "../escrow/envelope";
import { sourceItemSchema } from "../sources/registry";
import { itemChainSchema } from "./chainLink";
import { unwrapPointKey, wrappedPointKeySchema } from "./pointKey";
import { scryptCostFields, scryptKey, scryptMemoryBound } from "./scrypt";
import { targetLayout } from "../targets/layout";

/**
 * A backup set's manifest, signed with HMAC-SHA-256, so that tampering is detected by anyone who
 * holds the key and by no one who doesn't. The key comes from the policy's separate random
 * manifest key when encryption is off (HKDF-SHA-256, salt = the set's id), or from the passphrase
 * when it is on. A passphrase can be guessed, so since schema 2 its key is derived with scrypt
 * (parameters and salt in `mac`): testing a guess against a manifest costs at least what it costs
 * against the backup's LUKS header. Schema 1 manifests (HKDF from the passphrase) still verify.
 * A policy with a signing key also signs it with Ed25519 (`signing` names the key, the envelope's
 * `ed25519Signature` holds the signature over the same bytes as the HMAC), so that the public key
 * alone tells a changed manifest; unsigned manifests stay as they were.
 *
 * 5: a point sealed for recipients (keySource "recipients"): its key is random, one per point, and
 * the manifest carries it sealed for the recipients' public keys (`sealedKey`), so only they open
 * it, not whoever holds the policy's passphrase. That key is the backups' passphrase and, being
 * random, the HMAC's key through HKDF. Other manifests are still written as 4, for older readers.
 *
 * 6: an encrypted point with its own random key, wrapped by the policy's passphrase (`wrappedKey`,
 * provider/agent/pointKey.ts): keySource is still "passphrase" (that is what a reader gives), the
 * point key encrypts its backups and keys its HMAC through HKDF.
 *
 * 7: a point with incremental backups (an item's `chain.base`, provider/agent/chainLink.ts), which an
 * older reader would take for whole disks. A chain's points share the key of the point that started
 * it: `keyOf` names that point, whose id binds the wrapped key (sealedKeyContext).
 */
export const MANIFEST_KIND = "coffer.BackupSet";
/** The schema a manifest is written with, unless it is a point's sealed for recipients. */
export const MANIFEST_SCHEMA_VERSION = 4;
/** The schema of a point sealed for recipients. */
export const SEALED_MANIFEST_SCHEMA_VERSION = 5;
/** The schema of a point whose own key the passphrase wraps. */
export const WRAPPED_MANIFEST_SCHEMA_VERSION = 6;
/** The schema of a point with incremental backups, or keyed by its chain; the newest this Coffer reads. */
export const CHAIN_MANIFEST_SCHEMA_VERSION = 7;
/** The schema a new manifest is written with: the oldest that holds how its point is keyed and what it holds. */
export const manifestSchemaVersionFor = (manifest: {
  keySource: string;
  wrappedKey?: unknown;
  keyOf?: string;
  items?: readonly { chain?: { base?: unknown } }[];
}): number =>
  manifest.keyOf !== undefined || (manifest.items ?? []).some((i) => i.chain?.base)
    ? CHAIN_MANIFEST_SCHEMA_VERSION
    : manifest.wrappedKey
      ? WRAPPED_MANIFEST_SCHEMA_VERSION
      : manifest.keySource === "recipients"
        ? SEALED_MANIFEST_SCHEMA_VERSION
        : MANIFEST_SCHEMA_VERSION;

/**
 * scrypt with 256 MiB per lane and four lanes: about 3 s of CPU here, where unlocking a LUKS
 * header QEMU made (2 s of PBKDF2 by its clock) costs 2.3 s (bench/manifest-kdf.sh measures both),
 * and memory-hard where PBKDF2 is not.
 */
export const SCRYPT_COST = { N: 2 ** 18, r: 8, p: 4 } as const;

const fileName = z.string().refine((f) => f !== "" && f !== "." && f !== ".." && !f.includes("/"), {
  message: "must be a file name in the set's folder",
});

const itemSchema = z.object({
  name: z.string(),
  host: z.string(),
  source: sourceItemSchema,
  file: fileName,
  format: z.enum(["qcow2", "qcow2-in-luks"]),
  compression: z.enum(["none", "zstd", "zlib"]),
  encrypted: z.boolean(),
  virtualSize: z.number().int(),
  sizeBytes: z.number().int(),
  streamSha256: z.string().regex(/^[0-9a-f]{64}$/),
  fileSha256: z.string().regex(/^[0-9a-f]{64}$/),
  verifiedAtBackup: z.enum(["none", "metadata", "full"]),
  startedAt: z.string(),
  finishedAt: z.string(),
  /** Since 7: the backup's place in its source's chain of incremental backups. */
  chain: itemChainSchema.optional(),
});
export type ManifestItem = z.output<typeof itemSchema>;

/**
 * Since schema 4: a source whose backup only the cloud holds (a Cinder backup with no copy in the
 * target). `source` records what restores it; `items` keeps what the target itself holds.
 */
const cloudItemSchema = z.object({
  name: z.string(),
  /** The machine whose Coffer took it (the provider's). */
  host: z.string(),
  source: sourceItemSchema,
  startedAt: z.string(),
  finishedAt: z.string(),
});
export type CloudItem = z.output<typeof cloudItemSchema>;

/**
 * Since schema 5: a final-state point, taken by a FinalStateBackup as its VM was deleted or replaced:
 * why and by what it was taken, and how long it is held. Signed with the rest of the manifest, so a
 * rebuilt index keeps its hold.
 */
export const finalContextSchema = z.object({
  reason: z.string(),
  /** "replace": the VM was replaced (a new one took its place); "delete": it went. */
  operation: z.enum(["delete", "replace"]),
  takenFor: z.object({ stack: z.string(), project: z.string(), urn: z.string() }),
  /** What the VM was: its QMP socket and devices, or disk files, and the host (or the Nova server). */
  vm: z.record(z.string(), z.unknown()),
  /** Not pruned before this time, by `up` or the CLI. */
  holdUntil: z.string(),
});
export type FinalContext = z.output<typeof finalContextSchema>;

/** How the HMAC key is derived; absent in schema 1 (HKDF). */
const macSchema = z.discriminatedUnion("kdf", [
  z
    .object({
      kdf: z.literal("scrypt"),
      ...scryptCostFields,
      salt: z.string().regex(/^[A-Za-z0-9+/]{22}==$/, { message: "must be 16 bytes in base64" }),
    })
    .refine(...scryptMemoryBound),
  z.object({ kdf: z.literal("hkdf-sha256") }),
]);
export type ManifestMac = z.output<typeof macSchema>;

export const manifestSchema = z
  .object({
    kind: z.literal(MANIFEST_KIND),
    schemaVersion: z.number().int().min(1).max(CHAIN_MANIFEST_SCHEMA_VERSION),
    setId: z.string(),
    /** Since schema 3: the point's id, its folder's name inside the set's; absent: the set's folder is the point's. */
    pointId: z.string().optional(),
    name: z.string(),
    trigger: z.string(),
    zone: z.string(),
    policy: z.object({
      compression: z.enum(["none", "zstd", "zlib"]),
      encrypted: z.boolean(),
      bandwidthLimitMiBps: z.number(),
      integrityCheck: z.enum(["none", "metadata", "full"]),
    }),
    /**
     * Which secret the HMAC key comes from, so a verifier knows what to ask for; "recipients" (since 5):
     * the point's own random key, which `sealedKey` holds sealed for the recipients.
     */
    keySource: z.enum(["passphrase", "manifest-key", "recipients"]),
    /** The point's key sealed for the recipients (names and fingerprints in it), bound to its point by sealedKeyContext. */
    sealedKey: sealedSchema.optional(),
    /** Since 6: the point's own key, wrapped by the passphrase (keySource "passphrase"), bound by sealedKeyContext. */
    wrappedKey: wrappedPointKeySchema.optional(),
    /** Since 7: the point whose id binds `wrappedKey` (the one that started its chain); absent: this point. */
    keyOf: z.string().min(1).optional(),
    mac: macSchema.optional(),
    /** The Ed25519 key the manifest is signed with; absent: not signed (HMAC only). */
    signing: z
      .object({
        algorithm: z.literal(SIGNATURE_ALGORITHM),
        keyFingerprint: z.string().regex(FINGERPRINT_PATTERN, { message: 'must be "SHA256:" and 43 base64 digits' }),
      })
      .optional(),
    /** The escrow record that recovers the passphrase, when the set has one. */
    escrow: z.object({ recordId: z.string(), store: z.string(), version: z.number().int().min(1) }).optional(),
    qemuVersion: z.string(),
    createdAt: z.string(),
    items: z.array(itemSchema),
    cloudItems: z.array(cloudItemSchema).optional(),
    final: finalContextSchema.optional(),
  })
  .refine((m) => (m.keySource === "recipients") === (m.sealedKey !== undefined), {
    message: 'a sealedKey comes with keySource "recipients", and only with it',
    path: ["sealedKey"],
  })
  .refine(
    (m) => m.keySource !== "recipients" || (m.schemaVersion >= SEALED_MANIFEST_SCHEMA_VERSION && m.policy.encrypted),
    {
      message: 'keySource "recipients" is a schema 5 manifest of an encrypted point',
      path: ["keySource"],
    },
  )
  .refine(
    (m) =>
      m.wrappedKey === undefined ||
      (m.keySource === "passphrase" && m.policy.encrypted && m.schemaVersion >= WRAPPED_MANIFEST_SCHEMA_VERSION),
    {
      message: 'a wrappedKey is in a schema 6 manifest of an encrypted point with keySource "passphrase"',
      path: ["wrappedKey"],
    },
  )
  .refine((m) => m.schemaVersion >= CHAIN_MANIFEST_SCHEMA_VERSION || manifestSchemaVersionFor(m) < 7, {
    message: "incremental backups (an item's chain.base) and keyOf are in schema 7 manifests",
    path: ["schemaVersion"],
  })
  .refine((m) => m.keyOf === undefined || m.wrappedKey !== undefined, {
    message: "keyOf names the point whose id binds the wrappedKey: it comes with one",
    path: ["keyOf"],
  })
  .refine((m) => m.final === undefined || m.keySource === "recipients", {
    message: "a final-state point is sealed for recipients",
    path: ["final"],
  });
export type Manifest = z.output<typeof manifestSchema>;

const envelopeSchema = z.object({
  manifest: z.unknown(),
  hmacSha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Base64 of 64 bytes, over signedContent(manifest); with the manifest's `signing` only. */
  ed25519Signature: z
    .string()
    .regex(/^[A-Za-z0-9+/]{86}==$/)
    .optional(),
});

/** The HMAC key of a manifest: scrypt when `mac` says so, else HKDF with the set's id as salt. */
async function macKey(secret: string, manifest: Pick<Manifest, "setId" | "mac">): Promise<Buffer> {
  const mac = manifest.mac;
  if (mac?.kdf === "scrypt") return scryptKey(secret, Buffer.from(mac.salt, "base64"), mac);
  const info = Buffer.from("coffer manifest v1");
  return Buffer.from(hkdfSync("sha256", Buffer.from(secret, "utf8"), Buffer.from(manifest.setId, "utf8"), info, 32));
}

/** A new manifest's `mac`: scrypt with a fresh salt for a passphrase, HKDF for a random key (manifest or point key). */
export function newMac(manifest: Pick<Manifest, "keySource" | "wrappedKey">): ManifestMac {
  return manifest.keySource === "passphrase" && !manifest.wrappedKey
    ? { kdf: "scrypt", ...SCRYPT_COST, salt: randomBytes(16).toString("base64") }
    : { kdf: "hkdf-sha256" };
}

async function mac(manifest: unknown, parsed: Pick<Manifest, "setId" | "mac">, secret: string): Promise<Buffer> {
  return createHmac("sha256", await macKey(secret, parsed))
    .update(canonicalJson(manifest))
    .digest();
}

/** `manifest` as given, or with a `mac` for its key source (and the current schema) when it has none. */
function withMac(manifest: Manifest): Manifest {
  return manifest.mac
    ? manifest
    : { ...manifest, schemaVersion: manifestSchemaVersionFor(manifest), mac: newMac(manifest) };
}

/**
 * What a point's sealed key is bound to (the AES-GCM aad): its zone, set and point. A sealedKey copied
 * into another point's manifest does not open there.
 */
export const sealedKeyContext = (manifest: Pick<Manifest, "zone" | "setId" | "pointId" | "keyOf">): string =>
  "coffer point key v1 " + JSON.stringify([manifest.zone, manifest.setId, manifest.keyOf ?? manifest.pointId ?? null]);

/**
 * The secret that opens `manifest`'s point (its backups' key and its HMAC's secret), from `given`, the
 * secret its key source names: that secret itself, or the point's own key when the passphrase wraps it
 * (schema 6). Undefined when `given` does not unwrap it (not this set's passphrase, or a changed manifest).
 */
export async function pointSecret(manifest: Manifest, given: string): Promise<string | undefined> {
  return manifest.wrappedKey ? unwrapPointKey(manifest.wrappedKey, given, sealedKeyContext(manifest)) : given;
}

/** The bytes an Ed25519 signature covers: a context (no signature of anything else can pass) and the HMAC's bytes. */
const SIGNATURE_CONTEXT = "coffer manifest signature v1\n";
export const signedContent = (manifest: unknown) => Buffer.from(SIGNATURE_CONTEXT + canonicalJson(manifest), "utf8");

/**
 * Signs `manifest` with an Ed25519 private key (in Pulumi's process: the key goes nowhere else). The
 * result names the key and has its final `mac`, so the agent's HMAC covers the same bytes.
 */
export function signManifest(manifest: Manifest, privateKeyPem: string): { manifest: Manifest; signature: string } {
  const keyFingerprint = publicKeyOf(privateKeyPem).fingerprint;
  const signed: Manifest = { ...withMac(manifest), signing: { algorithm: SIGNATURE_ALGORITHM, keyFingerprint } };
  return { manifest: signed, signature: signData(signedContent(signed), privateKeyPem) };
}

/**
 * The manifest file: `manifest` with its HMAC (a manifest without `mac` gets one for its key source,
 * and schema 2 or later), and `signature` when signManifest made one.
 */
export async function renderSignedManifest(manifest: Manifest, secret: string, signature?: string): Promise<string> {
  if ((signature === undefined) !== (manifest.signing === undefined)) {
    const message = "a manifest's Ed25519 signature and its `signing` come together: sign it with signManifest";
    throw new CofferError("INVALID_INPUT", message, { field: "signature" });
  }
  const signed = withMac(manifest);
  const hmacSha256 = (await mac(signed, signed, secret)).toString("hex");
  const envelope = { manifest: signed, hmacSha256, ...(signature ? { ed25519Signature: signature } : {}) };
  return JSON.stringify(envelope, null, 2) + "\n";
}

export type ReadManifest = { ok: true; manifest: Manifest } | { ok: false; problem: string };
export type OpenedManifest = { ok: true; manifest: Manifest; authentic: boolean } | { ok: false; problem: string };

/** Parses a signed manifest without checking its HMAC (to find out which key it needs, or which files it names). */
export function readManifest(text: string): ReadManifest {
  const parsed = parseEnvelope(text);
  return parsed.ok ? { ok: true, manifest: parsed.manifest } : parsed;
}

type Envelope =
  { ok: true; manifest: Manifest; raw: unknown; hmac: string; signature?: string } | { ok: false; problem: string };

function parseEnvelope(text: string): Envelope {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return { ok: false, problem: `manifest is not valid JSON (${(error as Error).message})` };
  }
  const envelope = envelopeSchema.safeParse(json);
  if (!envelope.success) return { ok: false, problem: "manifest is not a signed Coffer manifest" };
  const parsed = manifestSchema.safeParse(envelope.data.manifest);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { ok: false, problem: `manifest ${issue.path.join(".")}: ${issue.message}` };
  }
  const { manifest: raw, hmacSha256: hmac, ed25519Signature: signature } = envelope.data;
  return { ok: true, manifest: parsed.data, raw, hmac, signature };
}

/** Parses a signed manifest and checks its HMAC with `secret`. */
export async function openManifest(text: string, secret: string): Promise<OpenedManifest> {
  const parsed = parseEnvelope(text);
  if (!parsed.ok) return parsed;
  // The MAC covers the manifest exactly as stored, unknown fields included.
  const expected = await mac(parsed.raw, parsed.manifest, secret);
  const authentic = timingSafeEqual(expected, Buffer.from(parsed.hmac, "hex"));
  return { ok: true, manifest: parsed.manifest, authentic };
}

/** Why a manifest's Ed25519 signature does not pass: none, another key's, or one that does not match. */
export type SignatureProblem = { kind: "unreadable" | "unsigned" | "other-key" | "mismatch"; message: string };

/**
 * Checks a manifest's Ed25519 signature with `expected`, the public key the verifier trusts (never
 * the manifest's own claim): undefined when it is signed with that key over exactly what it says.
 */
export function signatureProblem(text: string, expected: SigningPublicKey): SignatureProblem | undefined {
  const parsed = parseEnvelope(text);
  if (!parsed.ok) return { kind: "unreadable", message: parsed.problem };
  const claimed = parsed.manifest.signing?.keyFingerprint;
  if (claimed === undefined || parsed.signature === undefined) {
    const what =
      claimed === undefined ? "it is not signed" : `it names key ${claimed} but carries no Ed25519 signature`;
    return { kind: "unsigned", message: `manifest: ${what}; it should be signed with ${expected.fingerprint}` };
  }
  if (claimed !== expected.fingerprint) {
    const message = `manifest: it is signed with key ${claimed}, not with the expected ${expected.fingerprint}`;
    return { kind: "other-key", message };
  }
  if (!signatureMatches(signedContent(parsed.raw), parsed.signature, expected.pem)) {
    const changed = "the manifest was changed after signing";
    const message = `manifest: its Ed25519 signature (key ${claimed}) does not match: ${changed}`;
    return { kind: "mismatch", message };
  }
  return undefined;
}

/**
 * Why an authentic manifest does not belong in `dir`, or undefined when it does. A point's
 * manifest names its point id, which is its folder's name, inside its set's folder; a manifest
 * without a point id (a set taken before histories) sits in the set's folder itself. Either names
 * its set id and zone, which the set folder's path says (targetLayout.setFolderOf). A manifest
 * copied into another set's or point's folder (a swapped or rolled-back backup) fails here.
 */
export function misplacement(manifest: Manifest, dir: string): string | undefined {
  let setDir = path.resolve(dir);
  if (manifest.pointId !== undefined) {
    const point = path.basename(setDir);
    if (manifest.pointId !== point) {
      const copied = "(copied from another point?)";
      return `manifest: it belongs to point ${manifest.pointId}, not to this folder's point ${point} ${copied}`;
    }
    setDir = path.dirname(setDir);
  }
  const { setId: folder, zone } = targetLayout.setFolderOf(setDir);
  if (manifest.setId !== folder) {
    const copied = "(copied from another set?)";
    return `manifest: it belongs to set ${manifest.setId}, not to this folder's set ${folder} ${copied}`;
  }
  if (zone !== undefined && manifest.zone !== zone) {
    const copied = "(copied from another zone?)";
    return `manifest: it belongs to zone ${manifest.zone}, not to this folder's zone ${zone} ${copied}`;
  }
  return undefined;
}
