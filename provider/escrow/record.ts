import { createHash } from "node:crypto";
import { z } from "zod";
import { CofferError } from "../common/errors";
import { storeAt } from "../targets/directory";
import { escrowLayout } from "../targets/layout";
import { TargetStore, listAll } from "../targets/store";
import { RecipientKey, open, seal, sealedSchema } from "./envelope";
import { RECORD_ID_PATTERN as ID } from "./schema";

/**
 * An escrow record: escrowLayout.version(id, version) in its store, written atomically, mode 0600. Each version
 * is its own file, so a rotation can keep the versions older backups still need. It holds the
 * sealed secret and who can open it; no plaintext and no unkeyed hash of the secret.
 */
export const RECORD_KIND = "coffer.EscrowRecord";
/** 2: `content`, for records of a key's bytes; a passphrase's record is still written as 1, for older readers. */
export const RECORD_SCHEMA_VERSION = 2;

/**
 * What a record holds, when it is not a passphrase: a volume's encryption key, sealed as base64 of
 * its bytes, and the Barbican secret it is a copy of.
 */
const volumeKeyContent = z.object({
  type: z.literal("volume-key"),
  encoding: z.literal("base64"),
  barbicanSecret: z.string(),
});
export type RecordContent = z.output<typeof volumeKeyContent>;

export const recordSchema = z.object({
  kind: z.literal(RECORD_KIND),
  schemaVersion: z.number().int().min(1).max(RECORD_SCHEMA_VERSION),
  id: z.string().regex(ID),
  version: z.number().int().min(1),
  createdAt: z.string(),
  /** Absent: the secret is a passphrase (text). */
  content: volumeKeyContent.optional(),
  sealed: sealedSchema,
});
export type EscrowRecord = z.output<typeof recordSchema>;

/**
 * The escrow store `where` names (a store, or the folder of a directory store, as state and the
 * CLI give it), after checking that `id` is a record id.
 */
export function escrowStore(where: TargetStore | string, id: string): TargetStore {
  if (!ID.test(id))
    throw new CofferError("INVALID_INPUT", `escrow id "${id}" must be 1-128 letters, digits, '.', '_' or '-'`);
  return storeAt(where);
}

/** Where version `version` of a record is, as messages and outputs name it. */
export function recordPath(where: TargetStore | string, id: string, version: number): string {
  return escrowStore(where, id).locate(escrowLayout.version(id, version));
}

/** The JSON value of `text`, or undefined when it is not JSON. */
export function jsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** What the AES-GCM layer binds the secret to: a record copied under another id or version won't open. */
const context = (id: string, version: number) => `coffer-escrow:${id}:v${version}`;

export async function writeRecord(
  where: TargetStore | string,
  id: string,
  version: number,
  secret: string,
  recipients: { name: string; key: RecipientKey }[],
  threshold: number,
  now = new Date(),
  content?: RecordContent,
): Promise<{ path: string; digest: string }> {
  const record: EscrowRecord = {
    kind: RECORD_KIND,
    schemaVersion: content ? RECORD_SCHEMA_VERSION : 1,
    id,
    version,
    createdAt: now.toISOString(),
    ...(content ? { content } : {}),
    sealed: await seal(secret, recipients, threshold, context(id, version)),
  };
  const text = JSON.stringify(record, null, 2) + "\n";
  const store = escrowStore(where, id);
  await store.writeTextAtomic(escrowLayout.version(id, version), text);
  return {
    path: store.locate(escrowLayout.version(id, version)),
    digest: "sha256:" + createHash("sha256").update(text).digest("hex"),
  };
}

/**
 * escrowLayout.current(id) names the version the SecretEscrow last wrote: the one a new backup
 * set links to. Written after the version itself, so it never names a version not there.
 */
export async function writeCurrentVersion(where: TargetStore | string, id: string, version: number): Promise<void> {
  await escrowStore(where, id).writeTextAtomic(escrowLayout.current(id), JSON.stringify({ version }) + "\n");
}

export async function readCurrentVersion(where: TargetStore | string, id: string): Promise<number | undefined> {
  const text = await escrowStore(where, id).readText(escrowLayout.current(id));
  if (text === undefined) return undefined;
  const parsed = z.object({ version: z.number().int().min(1) }).safeParse(jsonOrUndefined(text));
  return parsed.success ? parsed.data.version : undefined;
}

export async function removeCurrentVersion(where: TargetStore | string, id: string): Promise<void> {
  await escrowStore(where, id).remove(escrowLayout.current(id));
}

/** The versions of a record in the store, oldest first. */
export async function recordVersions(where: TargetStore | string, id: string): Promise<number[]> {
  const objects = await listAll(escrowStore(where, id), escrowLayout.record(id)).catch(() => []);
  return objects.flatMap(({ key }) => escrowLayout.versionOf(id, key) ?? []).sort((a, b) => a - b);
}

/** Removes a version of a record (nothing there is no error). */
export async function removeVersion(where: TargetStore | string, id: string, version: number): Promise<void> {
  await escrowStore(where, id).remove(escrowLayout.version(id, version));
}

export async function readRecord(
  where: TargetStore | string,
  id: string,
  version: number,
): Promise<{ record: EscrowRecord; digest: string } | undefined> {
  const text = await escrowStore(where, id).readText(escrowLayout.version(id, version));
  if (text === undefined) return undefined;
  const json = jsonOrUndefined(text);
  if (json === undefined) throw new CofferError("VERIFY_FAILED", `escrow record ${id} v${version} is not valid JSON`);
  const parsed = recordSchema.safeParse(json);
  if (!parsed.success || parsed.data.id !== id || parsed.data.version !== version) {
    throw new CofferError(
      "VERIFY_FAILED",
      `escrow record ${id} v${version} is not a Coffer escrow record for that id and version`,
    );
  }
  return { record: parsed.data, digest: "sha256:" + createHash("sha256").update(text).digest("hex") };
}

/** The record id under which a volume key, Barbican secret `secretId`, is escrowed (one record per key). */
export const volumeKeyRecordId = (secretId: string) => `volume-key-${secretId.replace(/[^A-Za-z0-9._-]/g, "_")}`;

/**
 * Escrows a volume's encryption key: version 1 of its own record, sealed for `recipients`. A key
 * is never changed, so a record already there is kept as it is. Returns the record's id.
 */
export async function escrowVolumeKey(
  where: TargetStore | string,
  key: { barbicanSecret: string; bytes: Buffer },
  recipients: { name: string; key: RecipientKey }[],
  threshold: number,
  now = new Date(),
): Promise<string> {
  const id = volumeKeyRecordId(key.barbicanSecret);
  if ((await recordVersions(where, id)).length > 0) return id;
  const content: RecordContent = { type: "volume-key", encoding: "base64", barbicanSecret: key.barbicanSecret };
  await writeRecord(where, id, 1, key.bytes.toString("base64"), recipients, threshold, now, content);
  await writeCurrentVersion(where, id, 1);
  return id;
}

/** The forms `coffer escrow recover` prints a secret in. */
export type SecretFormat = "text" | "hex";

/**
 * The secret of a record (its current version unless one is named), opened with recipients' private keys.
 * `hex`, for a volume key: its bytes in hex, the passphrase Cinder gives LUKS (binascii.hexlify).
 */
export async function recoverSecret(
  where: TargetStore | string,
  id: string,
  privateKeysPem: string[],
  version?: number,
  format: SecretFormat = "text",
): Promise<string> {
  const store = escrowStore(where, id);
  const versions = await recordVersions(store, id);
  const wanted = version ?? (await readCurrentVersion(store, id)) ?? versions.at(-1);
  if (wanted === undefined)
    throw new CofferError("SOURCE_MISSING", `no escrow record "${id}" in ${store.location}: check --store and --id`);
  const found = await readRecord(store, id, wanted);
  if (!found)
    throw new CofferError(
      "SOURCE_MISSING",
      `escrow record ${id} has no version ${wanted} (it has: ${versions.join(", ") || "none"})`,
    );
  const secret = await open(found.record.sealed, privateKeysPem, context(id, wanted));
  if (format === "text") return secret;
  if (found.record.content?.type !== "volume-key")
    throw new CofferError("INVALID_INPUT", `escrow record ${id} holds a passphrase, not a key: leave out --format hex`);
  return Buffer.from(secret, "base64").toString("hex");
}
