import {
  KeyObject,
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from "node:crypto";
import { z } from "zod";
import { CofferError } from "../common/errors";
import { combineKey, splitKey } from "./shamir";

/**
 * Envelope encryption of one secret for several recipients: a random 256-bit data key encrypts
 * the secret with AES-256-GCM; the data key (or, with a threshold above 1, one Shamir share of
 * it per recipient) is wrapped for each recipient with RSA-OAEP-SHA-256 or X25519 + HKDF-SHA-256
 * + AES-256-GCM. The sealed form holds no plaintext and no unkeyed hash of the secret.
 */
export const MIN_RSA_BITS = 3072;

export interface RecipientKey {
  type: "rsa" | "x25519";
  /** "sha256:<hex>" of the public key's DER (SubjectPublicKeyInfo). */
  fingerprint: string;
  key: KeyObject;
}

/** A recipient's public key, or why it can't be used (the reason names the fix). */
export function parseRecipientKey(pem: string): { ok: true; key: RecipientKey } | { ok: false; reason: string } {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    return {
      ok: false,
      reason: "is not a PEM public key: give the recipient's public key (-----BEGIN PUBLIC KEY-----)",
    };
  }
  const type = key.asymmetricKeyType;
  if (type === "rsa") {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS)
      return { ok: false, reason: `is an RSA key of ${bits} bits: use ${MIN_RSA_BITS} bits or more, or X25519` };
  } else if (type !== "x25519") {
    return { ok: false, reason: `is a ${type} key: use RSA (${MIN_RSA_BITS} bits or more) or X25519` };
  }
  const fingerprint =
    "sha256:" +
    createHash("sha256")
      .update(key.export({ type: "spki", format: "der" }))
      .digest("hex");
  return { ok: true, key: { type, fingerprint, key } };
}

const wrappedKeySchema = z.union([
  z.object({ alg: z.literal("RSA-OAEP-SHA256"), data: z.string() }),
  z.object({
    alg: z.literal("X25519-HKDF-SHA256-A256GCM"),
    ephemeralPublicKey: z.string(),
    nonce: z.string(),
    data: z.string(),
    tag: z.string(),
  }),
]);
export type WrappedKey = z.output<typeof wrappedKeySchema>;

/** What seal makes, as a reader checks it (escrow records and manifests hold one). */
export const sealedSchema = z.object({
  alg: z.literal("AES-256-GCM"),
  threshold: z.number().int().min(1),
  nonce: z.string(),
  ciphertext: z.string(),
  tag: z.string(),
  recipients: z
    .array(
      z.object({
        name: z.string(),
        type: z.enum(["rsa", "x25519"]),
        fingerprint: z.string(),
        wrapped: wrappedKeySchema,
      }),
    )
    .min(1),
});
export type Sealed = z.output<typeof sealedSchema>;
export type SealedRecipient = Sealed["recipients"][number];

const b64 = (b: Buffer) => b.toString("base64");
const unb64 = (s: string) => Buffer.from(s, "base64");

function gcmSeal(key: Buffer, plaintext: Buffer, aad: Buffer) {
  const nonce = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(aad);
  const data = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { nonce, data, tag: cipher.getAuthTag() };
}

function gcmOpen(key: Buffer, nonce: Buffer, data: Buffer, tag: Buffer, aad: Buffer): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(data), decipher.final()]);
}

function x25519Kek(shared: Buffer, ephemeral: Buffer, fingerprint: string): Buffer {
  return Buffer.from(hkdfSync("sha256", shared, ephemeral, Buffer.from(`coffer escrow v1 ${fingerprint}`), 32));
}

function wrap(recipient: RecipientKey, keyMaterial: Buffer, aad: Buffer): WrappedKey {
  if (recipient.type === "rsa") {
    return {
      alg: "RSA-OAEP-SHA256",
      data: b64(
        publicEncrypt(
          { key: recipient.key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
          keyMaterial,
        ),
      ),
    };
  }
  const ephemeral = generateKeyPairSync("x25519");
  const ephemeralDer = ephemeral.publicKey.export({ type: "spki", format: "der" });
  const kek = x25519Kek(
    diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient.key }),
    ephemeralDer,
    recipient.fingerprint,
  );
  const sealed = gcmSeal(kek, keyMaterial, aad);
  return {
    alg: "X25519-HKDF-SHA256-A256GCM",
    ephemeralPublicKey: b64(ephemeralDer),
    nonce: b64(sealed.nonce),
    data: b64(sealed.data),
    tag: b64(sealed.tag),
  };
}

function unwrap(recipient: SealedRecipient, privateKey: KeyObject, aad: Buffer): Buffer {
  const w = recipient.wrapped;
  if (w.alg === "RSA-OAEP-SHA256") {
    return privateDecrypt(
      { key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      unb64(w.data),
    );
  }
  const ephemeral = unb64(w.ephemeralPublicKey);
  const shared = diffieHellman({
    privateKey,
    publicKey: createPublicKey({ key: ephemeral, format: "der", type: "spki" }),
  });
  return gcmOpen(x25519Kek(shared, ephemeral, recipient.fingerprint), unb64(w.nonce), unb64(w.data), unb64(w.tag), aad);
}

/**
 * Seals `secret` for `recipients`; any `threshold` of them recover it. `aad` binds the result to
 * its context (the record's id and version): a sealed body moved elsewhere does not open.
 */
export async function seal(
  secret: string,
  recipients: { name: string; key: RecipientKey }[],
  threshold: number,
  aad: string,
): Promise<Sealed> {
  const dataKey = randomBytes(32);
  const context = Buffer.from(aad);
  const body = gcmSeal(dataKey, Buffer.from(secret, "utf8"), context);
  // Each recipient gets the data key itself (threshold 1) or one share of it.
  const material =
    threshold > 1 ? await splitKey(dataKey, recipients.length, threshold) : recipients.map(() => dataKey);
  return {
    alg: "AES-256-GCM",
    threshold,
    nonce: b64(body.nonce),
    ciphertext: b64(body.data),
    tag: b64(body.tag),
    recipients: recipients.map((r, i) => ({
      name: r.name,
      type: r.key.type,
      fingerprint: r.key.fingerprint,
      wrapped: wrap(r.key, material[i], context),
    })),
  };
}

/**
 * Opens a sealed secret with private keys (PEM). Each key is matched to its recipient by
 * fingerprint; too few matching keys, or a key that fails to unwrap, is a clear error, naming the
 * sealed secret as `what` says ("this record": an escrow record's).
 */
export async function open(
  sealed: Sealed,
  privateKeysPem: string[],
  aad: string,
  what = "this record",
): Promise<string> {
  const context = Buffer.from(aad);
  const opened: { recipient: SealedRecipient; material: Buffer }[] = [];
  for (const pem of privateKeysPem) {
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(pem);
    } catch {
      throw new CofferError("WRONG_KEY", "a --key file is not a PEM private key");
    }
    const fingerprint =
      "sha256:" +
      createHash("sha256")
        .update(createPublicKey(privateKey).export({ type: "spki", format: "der" }))
        .digest("hex");
    const recipient = sealed.recipients.find((r) => r.fingerprint === fingerprint);
    if (!recipient) {
      throw new CofferError(
        "WRONG_KEY",
        `a --key (public key ${fingerprint.slice(0, 19)}…) is not one of ${what}'s recipients (${sealed.recipients.map((r) => r.name).join(", ")})`,
      );
    }
    if (opened.some((o) => o.recipient === recipient)) continue;
    try {
      opened.push({ recipient, material: unwrap(recipient, privateKey, context) });
    } catch {
      throw new CofferError("WRONG_KEY", `the key of recipient ${recipient.name} does not open ${what}`);
    }
  }
  if (opened.length < sealed.threshold) {
    throw new CofferError("WRONG_KEY", `${what} needs keys of ${sealed.threshold} recipients; got ${opened.length}`);
  }
  const dataKey = sealed.threshold > 1 ? await combineKey(opened.map((o) => o.material)) : opened[0].material;
  try {
    return gcmOpen(dataKey, unb64(sealed.nonce), unb64(sealed.ciphertext), unb64(sealed.tag), context).toString("utf8");
  } catch {
    throw new CofferError(
      "VERIFY_FAILED",
      `${what}'s ciphertext does not open with these keys: it was changed, or the shares do not belong together`,
    );
  }
}
