import { backupPolicyProvider } from "../../sdk/backupPolicy";
import { restoreDrillProvider } from "../../sdk/restoreDrill";
import { serializeProvider } from "../support/serializedProvider";

describe("the serialized RestoreDrill provider (__provider)", () => {
  test("is the same small shim as BackupPolicy's, pointing at its own implementation", async () => {
    const { text, containsSecrets } = await serializeProvider(restoreDrillProvider);
    expect(containsSecrets).toBe(false);
    expect(Buffer.byteLength(text)).toBeLessThan(3 * 1024);
    expect(text).toContain('"coffer/provider/restoreDrill"');
    expect(text).not.toMatch(/["'`]\/[A-Za-z.]/);
    for (const detail of ["qemu", "zod", "process.env"]) expect(text).not.toContain(detail);
    const policyText = (await serializeProvider(backupPolicyProvider)).text;
    expect(text.replaceAll("coffer/provider/restoreDrill", "coffer/provider/backupPolicy")).toBe(policyText);
  });

  test("loads back and validates through the installed implementation", async () => {
    const { load } = await serializeProvider(restoreDrillProvider);
    const result = await load().check!({}, { sets: [], keys: [], pick: "oldest" });
    expect(result.failures).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ property: "sets" }),
        expect.objectContaining({ property: "pick" }),
      ]),
    );
  });
});
