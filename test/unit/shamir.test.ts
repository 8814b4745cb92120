import { randomBytes } from "node:crypto";
import { combineKey, splitKey } from "../../provider/escrow/shamir";

function* subsets<T>(items: T[], size: number, start = 0, chosen: T[] = []): Generator<T[]> {
  if (chosen.length === size) return yield chosen;
  for (let i = start; i < items.length; i++) yield* subsets(items, size, i + 1, [...chosen, items[i]]);
}

describe("splitting a data key (shamir-secret-sharing)", () => {
  test.each([
    [2, 2],
    [3, 2],
    [5, 3],
    [5, 5],
  ])(
    "%i shares, threshold %i: every subset of threshold size recovers the key, one fewer does not",
    async (count, threshold) => {
      const key = randomBytes(32);
      const shares = await splitKey(key, count, threshold);
      expect(shares).toHaveLength(count);
      for (const subset of subsets(shares, threshold)) expect(await combineKey(subset)).toEqual(key);
      for (const subset of subsets(shares, threshold - 1)) {
        if (subset.length > 1) expect(await combineKey(subset)).not.toEqual(key);
      }
    },
  );

  test("a share alone reveals nothing of the key (no share equals or contains it)", async () => {
    const key = randomBytes(32);
    for (const share of await splitKey(key, 3, 2)) expect(share.includes(key.subarray(0, 8))).toBe(false);
  });
});
