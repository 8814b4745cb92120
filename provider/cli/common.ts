/** What the coffer commands share: usage errors, secrets and keys read from files or stdin, a set opened. */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { CofferError } from "../common/errors";
import { Manifest, pointSecret, readManifest, sealedKeyContext } from "../agent/manifest";
import { open as openSealed } from "../escrow/envelope";
import { settleMerge } from "../agent/merge";
import { SigningPublicKey, parsePublicKey } from "../common/signingKey";

/** Bad arguments: exit code 2, with the command's usage. */
export class UsageError extends Error {}

export interface KeyOptions {
  passphraseFile?: string;
  passphraseStdin?: boolean;
  manifestKeyFile?: string;
  /** Recipients' private key files: they open a point sealed for recipients. */
  key?: string[];
}

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

export async function secretFrom(
  file: string | undefined,
  stdin: boolean,
  envName: string,
): Promise<string | undefined> {
  if (file) return (await fs.readFile(file, "utf8")).replace(/\r?\n$/, "");
  if (stdin) return readStdin();
  return process.env[envName] || undefined;
}

/** A set's manifest as read (not yet authenticated), with the secrets to open it. */
export interface OpenedSet {
  text: string;
  manifest: Manifest;
  setDir: string;
  /** Absent only for a verify with a public key. */
  manifestSecret?: string;
  passphrase?: string;
}

/** `withoutSecret`: a missing key is no usage error (a public key checks the manifest instead). */
export async function openSet(values: { manifest?: string } & KeyOptions, withoutSecret = false): Promise<OpenedSet> {
  if (!values.manifest) throw new UsageError("--manifest is required");
  const manifestPath = path.resolve(values.manifest);
  // A merge a stopped run left in the set is finished (or undone) first; what can't be, readers get around.
  await settleMerge(path.dirname(manifestPath)).catch(() => undefined);
  const text = await fs.readFile(manifestPath, "utf8").catch(() => {
    throw new CofferError("SOURCE_MISSING", `${manifestPath} can't be read: check the path`);
  });
  const unsigned = readManifest(text);
  if (!unsigned.ok) throw new CofferError("VERIFY_FAILED", unsigned.problem);
  const setDir = path.dirname(manifestPath);
  if (unsigned.manifest.keySource === "recipients") {
    return {
      text,
      manifest: unsigned.manifest,
      setDir,
      ...(await openPointKey(unsigned.manifest, values, withoutSecret)),
    };
  }
  if (values.key?.length) {
    const instead = "give its passphrase or manifest key";
    throw new UsageError(`--key opens points sealed for recipients, and this one is not: ${instead}`);
  }
  const passphrase = await secretFrom(values.passphraseFile, values.passphraseStdin ?? false, "COFFER_PASSPHRASE");
  const manifestKey = await secretFrom(values.manifestKeyFile, false, "COFFER_MANIFEST_KEY");
  const manifestSecret = unsigned.manifest.keySource === "passphrase" ? passphrase : manifestKey;
  if (!manifestSecret && !withoutSecret) {
    const escrow = unsigned.manifest.escrow;
    const escrowHint = escrow
      ? `\nits passphrase is escrowed: coffer escrow recover --store ${escrow.store} --id ${escrow.recordId} ` +
        `--version ${escrow.version} --key <private.pem> --out <file>, then --passphrase-file <file>`
      : "";
    const publicKeyHint = unsigned.manifest.signing ? "; or its signing key's public key with --public-key" : "";
    throw new UsageError(
      unsigned.manifest.keySource === "passphrase"
        ? "this set is encrypted: give its passphrase with --passphrase-file, --passphrase-stdin or COFFER_PASSPHRASE" +
            escrowHint
        : "give the policy's manifest key with --manifest-key-file or COFFER_MANIFEST_KEY, " +
            "so the manifest can be checked" +
            publicKeyHint,
    );
  }
  if (unsigned.manifest.wrappedKey && passphrase) {
    // The point's own key, which the passphrase wraps, opens its backups and keys its HMAC.
    const pointKey = await pointSecret(unsigned.manifest, passphrase);
    if (!pointKey) {
      const why = "it is not this set's passphrase, or the manifest was changed";
      throw new CofferError("VERIFY_FAILED", `the passphrase does not unwrap the point's key: ${why}`);
    }
    return { text, manifest: unsigned.manifest, setDir, manifestSecret: pointKey, passphrase: pointKey };
  }
  return { text, manifest: unsigned.manifest, setDir, manifestSecret, passphrase };
}

/**
 * The key of a point sealed for recipients, opened with their private keys (--key files): its
 * backups' passphrase and its manifest's HMAC secret. The manifest is not yet authenticated: the
 * caller checks its HMAC with this key before it trusts anything else of it.
 */
async function openPointKey(
  manifest: Manifest,
  values: KeyOptions,
  withoutSecret: boolean,
): Promise<{ manifestSecret?: string; passphrase?: string }> {
  const recipients = manifest.sealedKey!.recipients.map((r) => r.name).join(", ");
  const opensWith = `this point is sealed for recipients (${recipients}): it opens with a recipient's private key`;
  if (values.passphraseFile || values.passphraseStdin || values.manifestKeyFile) {
    throw new UsageError(`${opensWith}, --key <private.pem>, not with a passphrase or manifest key`);
  }
  if (!values.key?.length) {
    if (withoutSecret) return {};
    const threshold = manifest.sealedKey!.threshold;
    const howMany = threshold > 1 ? ` (${threshold} of them: repeat --key)` : "";
    throw new UsageError(`${opensWith}: give it with --key <private.pem>${howMany}`);
  }
  const pems = await Promise.all(
    values.key.map((file) =>
      fs.readFile(file, "utf8").catch(() => {
        throw new UsageError(`--key ${file} can't be read`);
      }),
    ),
  );
  const pointKey = await openSealed(manifest.sealedKey!, pems, sealedKeyContext(manifest), "this point's key");
  return { manifestSecret: pointKey, passphrase: pointKey };
}

export async function readPublicKey(file: string): Promise<SigningPublicKey> {
  const pem = await fs.readFile(file, "utf8").catch(() => {
    throw new UsageError(`--public-key ${file} can't be read`);
  });
  const parsed = parsePublicKey(pem, `--public-key ${file}`);
  if (!parsed.ok) throw new UsageError(parsed.problem);
  return parsed.key;
}
