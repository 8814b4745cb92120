import { combine, split } from "shamir-secret-sharing";

/**
 * Shamir's secret sharing of a data key, through shamir-secret-sharing (Privy's zero-dependency
 * implementation over GF(256), audited by Cure53 and Zellic). Each share carries its x
 * coordinate as its last byte. Thresholds start at 2: with 1, callers use the key itself.
 */
export async function splitKey(key: Buffer, count: number, threshold: number): Promise<Buffer[]> {
  return (await split(new Uint8Array(key), count, threshold)).map((share) => Buffer.from(share));
}

export async function combineKey(shares: Buffer[]): Promise<Buffer> {
  return Buffer.from(await combine(shares.map((share) => new Uint8Array(share))));
}
