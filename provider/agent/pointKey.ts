import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { z } from "zod";
import { scryptCostFields, scryptKey, scryptMemoryBound } from "./scrypt";

/**
 * A point's own key, wrapped by the policy's passphrase (manifest schema 6). The point key is random
 * (32 bytes, hex), so the LUKS containers it opens need no key stretching and the HMAC takes it
 * through HKDF: the passphrase goes through one strong KDF per point, here, and nowhere else.
 */

/**
 * scrypt with 256 MiB and one lane (age's default work factor): about 0.8 s of one core here. It is the
 * only place a passphrase guess can be tested against a wrapped point, and memory-hard where the LUKS
 * header's PBKDF2 (the oracle of earlier points) is not. bench/manifest-kdf.sh measures both.
 */
export const WRAP_SCRYPT_COST = { N: 2 ** 18, r: 8, p: 1 } as const;
const base64 = (bytes: number) => z.string().refine((s) => Buffer.from(s, "base64").length === bytes);

export const wrappedPointKeySchema = z
  .object({
    kdf: z.literal("scrypt"),
    ...scryptCostFields,
    salt: base64(16),
    cipher: z.literal("aes-256-gcm"),
    iv: base64(12),
    ciphertext: z.string().regex(/^[A-Za-z0-9+/]+=*$/),
    tag: base64(16),
  })
  .refine(...scryptMemoryBound);
export type WrappedPointKey = z.output<typeof wrappedPointKeySchema>;

/** A new point key: 32 random bytes, hex (it is a qemu secret's text and the HMAC's secret). */
export const newPointKey = (): string => randomBytes(32).toString("hex");

/**
 * `pointKey` wrapped by `passphrase`, bound to `context` (the AES-GCM aad: its zone, set and point),
 * so that a wrapped key copied into another point's manifest does not open there.
 */
export async function wrapPointKey(pointKey: string, passphrase: string, context: string): Promise<WrappedPointKey> {
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", await scryptKey(passphrase, salt, WRAP_SCRYPT_COST), iv);
  cipher.setAAD(Buffer.from(context, "utf8"));
  const ciphertext = Buffer.concat([cipher.update(pointKey, "utf8"), cipher.final()]);
  return {
    kdf: "scrypt",
    ...WRAP_SCRYPT_COST,
    salt: salt.toString("base64"),
    cipher: "aes-256-gcm",
    iv: iv.toString("base64"),
    ciphertext: ciphertext.toString("base64"),
    tag: cipher.getAuthTag().toString("base64"),
  };
}

/** The point key `wrapped` holds, or undefined when `passphrase` (or `context`) is not the one it was wrapped with. */
export async function unwrapPointKey(
  wrapped: WrappedPointKey,
  passphrase: string,
  context: string,
): Promise<string | undefined> {
  const key = await scryptKey(passphrase, Buffer.from(wrapped.salt, "base64"), wrapped);
  const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(wrapped.iv, "base64"));
  decipher.setAAD(Buffer.from(context, "utf8"));
  decipher.setAuthTag(Buffer.from(wrapped.tag, "base64"));
  try {
    return Buffer.concat([decipher.update(Buffer.from(wrapped.ciphertext, "base64")), decipher.final()]).toString(
      "utf8",
    );
  } catch {
    return undefined;
  }
}
