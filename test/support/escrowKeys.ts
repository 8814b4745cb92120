import { KeyPairKeyObjectResult, generateKeyPairSync } from "node:crypto";

/** A recipient's key pair as PEM text, the way a person would hand them over. */
export interface PemPair {
  publicKey: string;
  privateKey: string;
}

const pem = (pair: KeyPairKeyObjectResult): PemPair => ({
  publicKey: pair.publicKey.export({ type: "spki", format: "pem" }) as string,
  privateKey: pair.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
});

export const x25519Pair = (): PemPair => pem(generateKeyPairSync("x25519"));
export const rsaPair = (bits = 3072): PemPair => pem(generateKeyPairSync("rsa", { modulusLength: bits }));
export const ed25519Pair = (): PemPair => pem(generateKeyPairSync("ed25519"));
