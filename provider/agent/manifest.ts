import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { canonicalJson } from "../common/canonicalJson";

/**
 * A backup set's manifest, signed with HMAC-SHA-256. The key is derived (HKDF-SHA-256, salt =
 * the set's id) from the policy's passphrase for encrypted sets, or from the policy's separate
 * manifest key when encryption is off, so that tampering is detected by anyone who holds the key
 * and by no one who doesn't.
 */
export const MANIFEST_KIND = "coffer.BackupSet";
export const MANIFEST_SCHEMA_VERSION = 1;
export const MANIFEST_FILE = "manifest.json";

const itemSchema = z.object({
  name: z.string(),
  host: z.string(),
  source: z.union([
    z.object({
      kind: z.literal("disk"),
      path: z.string(),
      format: z.enum(["raw", "qcow2"]),
      // Declared files the disk read besides itself; absent in older manifests.
      backingFiles: z.array(z.string()).optional(),
      dataFile: z.string().optional(),
    }),
    z.object({ kind: z.literal("qmp"), socket: z.string(), device: z.string() }),
  ]),
  file: z.string(),
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
});
export type ManifestItem = z.output<typeof itemSchema>;

export const manifestSchema = z.object({
  kind: z.literal(MANIFEST_KIND),
  schemaVersion: z.number().int().min(1).max(MANIFEST_SCHEMA_VERSION),
  setId: z.string(),
  name: z.string(),
  trigger: z.string(),
  zone: z.string(),
  policy: z.object({
    compression: z.enum(["none", "zstd", "zlib"]),
    encrypted: z.boolean(),
    bandwidthLimitMiBps: z.number(),
    integrityCheck: z.enum(["none", "metadata", "full"]),
  }),
  /** Which secret the HMAC key comes from, so a verifier knows what to ask for. */
  keySource: z.enum(["passphrase", "manifest-key"]),
  /** The escrow record that recovers the passphrase, when the set has one. */
  escrow: z.object({ recordId: z.string(), store: z.string(), version: z.number().int().min(1) }).optional(),
  qemuVersion: z.string(),
  createdAt: z.string(),
  items: z.array(itemSchema),
});
export type Manifest = z.output<typeof manifestSchema>;

const envelopeSchema = z.object({ manifest: z.unknown(), hmacSha256: z.string().regex(/^[0-9a-f]{64}$/) });


export function manifestKey(secret: string, setId: string): Buffer {
  return Buffer.from(hkdfSync("sha256", Buffer.from(secret, "utf8"), Buffer.from(setId, "utf8"), Buffer.from("coffer manifest v1"), 32));
}

function mac(manifest: unknown, secret: string, setId: string): string {
  return createHmac("sha256", manifestKey(secret, setId)).update(canonicalJson(manifest)).digest("hex");
}

export function renderSignedManifest(manifest: Manifest, secret: string): string {
  return JSON.stringify({ manifest, hmacSha256: mac(manifest, secret, manifest.setId) }, null, 2) + "\n";
}

export type OpenedManifest =
  | { ok: true; manifest: Manifest; authentic: boolean | undefined }
  | { ok: false; problem: string };

/**
 * Parses a signed manifest and checks its HMAC when `secret` is given (`authentic` is then true
 * or false; undefined when there was no key to check with).
 */
export function openManifest(text: string, secret: string | undefined): OpenedManifest {
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
  if (secret === undefined) return { ok: true, manifest: parsed.data, authentic: undefined };
  // The MAC covers the manifest exactly as stored, unknown fields included.
  const expected = Buffer.from(mac(envelope.data.manifest, secret, parsed.data.setId), "hex");
  const actual = Buffer.from(envelope.data.hmacSha256, "hex");
  return { ok: true, manifest: parsed.data, authentic: timingSafeEqual(expected, actual) };
}
