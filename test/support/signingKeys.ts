import { generateKeyPairSync } from "node:crypto";

/** A fresh Ed25519 key pair as PEM, as `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` make them. */
export function ed25519Pair(): { privateKey: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privateKey: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKey: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}
