/**
 * Ed25519 keys of manifest signatures: the operator's private key (a Pulumi secret, used only in
 * Pulumi's process) and its public key, which anyone may hold to check a manifest without the
 * passphrase. Keys are named by their fingerprint as ssh names them: "SHA256:" and the unpadded
 * base64 of the SHA-256 of the public key's SPKI DER.
 */
import { KeyObject, createHash, createPrivateKey, createPublicKey, sign, verify } from "node:crypto";

export const SIGNATURE_ALGORITHM = "ed25519";
export const FINGERPRINT_PATTERN = /^SHA256:[A-Za-z0-9+/]{43}$/;
/** What makes a key: in every message about a wrong one. */
export const MAKE_SIGNING_KEY = "make one with `openssl genpkey -algorithm ed25519 -out signing.pem`";

/** A public key as state, outputs and policy documents record it. */
export interface SigningPublicKey {
  /** SPKI PEM. */
  pem: string;
  fingerprint: string;
}

export function keyFingerprint(key: KeyObject): string {
  const der = (key.type === "public" ? key : createPublicKey(key)).export({ type: "spki", format: "der" });
  return "SHA256:" + createHash("sha256").update(der).digest("base64").replace(/=+$/, "");
}

const kindOf = (key: KeyObject) => key.asymmetricKeyType?.toUpperCase() ?? "unknown";

/**
 * Why `pem` is not an unencrypted Ed25519 private key, or undefined when it is. `field` names it in
 * the message; the key's text never appears there.
 */
export function signingKeyProblem(pem: unknown, field: string): string | undefined {
  if (typeof pem !== "string" || pem.trim() === "") {
    return `${field} must be the PEM text of an Ed25519 private key (${MAKE_SIGNING_KEY}), given as a Pulumi secret`;
  }
  if (pem.includes("PUBLIC KEY-----")) {
    return `${field} is a public key: give the private key it belongs to (${MAKE_SIGNING_KEY})`;
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (error) {
    const encrypted = /passphrase/i.test((error as Error).message) || pem.includes("ENCRYPTED");
    return encrypted
      ? `${field} is encrypted with a passphrase: give it unencrypted, as a Pulumi secret (${MAKE_SIGNING_KEY})`
      : `${field} is not a PEM private key: give the whole file, from its -----BEGIN PRIVATE KEY----- line ` +
          `(${MAKE_SIGNING_KEY})`;
  }
  if (key.asymmetricKeyType !== SIGNATURE_ALGORITHM) {
    return `${field} is an ${kindOf(key)} key; Coffer signs manifests with Ed25519 only: ${MAKE_SIGNING_KEY}`;
  }
  return undefined;
}

/** The public key of an Ed25519 private key (PEM), checked as signingKeyProblem does. */
export function publicKeyOf(privateKeyPem: string): SigningPublicKey {
  const key = createPublicKey(createPrivateKey(privateKeyPem));
  return { pem: key.export({ type: "spki", format: "pem" }).toString(), fingerprint: keyFingerprint(key) };
}

export type ParsedPublicKey = { ok: true; key: SigningPublicKey } | { ok: false; problem: string };

/** An Ed25519 public key from its PEM; `what` names it in the problem ("--public-key signing.pub"). */
export function parsePublicKey(pem: string, what: string): ParsedPublicKey {
  if (pem.includes("PRIVATE KEY-----")) {
    return { ok: false, problem: `${what} is a private key: give its public key (openssl pkey -pubout)` };
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    return { ok: false, problem: `${what} is not a PEM public key (-----BEGIN PUBLIC KEY-----)` };
  }
  if (key.asymmetricKeyType !== SIGNATURE_ALGORITHM) {
    return { ok: false, problem: `${what} is an ${kindOf(key)} key; Coffer's manifest signatures are Ed25519` };
  }
  return {
    ok: true,
    key: { pem: key.export({ type: "spki", format: "pem" }).toString(), fingerprint: keyFingerprint(key) },
  };
}

/** The Ed25519 signature of `data` (base64). */
export function signData(data: Buffer, privateKeyPem: string): string {
  return sign(null, data, createPrivateKey(privateKeyPem)).toString("base64");
}

export function signatureMatches(data: Buffer, signature: string, publicKeyPem: string): boolean {
  try {
    return verify(null, data, createPublicKey(publicKeyPem), Buffer.from(signature, "base64"));
  } catch {
    return false;
  }
}
