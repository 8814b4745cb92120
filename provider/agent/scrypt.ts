import { scrypt } from "node:crypto";
import { z } from "zod";

/**
 * scrypt as Coffer's files name it (a manifest's `mac`, a point's `wrappedKey`): the cost is read from
 * the file, so a reader bounds it, and must not be made to spend more than 1 GiB or a minute on it.
 */
const LIMITS = { N: [2 ** 14, 2 ** 23], r: [1, 32], p: [1, 8] } as const;
const MAX_MEMORY = 2 ** 30;
const within = (name: keyof typeof LIMITS) => z.number().int().min(LIMITS[name][0]).max(LIMITS[name][1]);

/** The cost fields of a scrypt a file names. */
export const scryptCostFields = {
  N: within("N").refine((n) => (n & (n - 1)) === 0, { message: "must be a power of two" }),
  r: within("r"),
  p: within("p"),
};

/** The memory bound of a scrypt a file names, as a refinement of the object that holds its cost. */
export const scryptMemoryBound = [
  (cost: { N: number; r: number }) => 128 * cost.N * cost.r <= MAX_MEMORY,
  { message: "asks for more than 1 GiB of memory" },
] as const;

/** A 32-byte key from `secret` by scrypt, off the main thread (libuv's pool). */
export function scryptKey(secret: string, salt: Buffer, cost: { N: number; r: number; p: number }): Promise<Buffer> {
  const { N, r, p } = cost;
  return new Promise((resolve, reject) =>
    scrypt(secret, salt, 32, { N, r, p, maxmem: 2 * MAX_MEMORY }, (error, key) =>
      error ? reject(error) : resolve(key),
    ),
  );
}
