import { backupPolicyProvider } from "../../sdk/backupPolicy";
import { secretEscrowProvider } from "../../sdk/secretEscrow";
import { serializeProvider } from "../support/serializedProvider";

describe("the serialized SecretEscrow provider (__provider)", () => {
  test("is the same small shim as BackupPolicy's, pointing at its own implementation", async () => {
    const { text, containsSecrets } = await serializeProvider(secretEscrowProvider);
    expect(containsSecrets).toBe(false);
    expect(Buffer.byteLength(text)).toBeLessThan(3 * 1024);
    expect(text).toContain('"coffer/provider/escrow"');
    expect(text).not.toMatch(/["'`]\/[A-Za-z.]/);
    for (const detail of ["crypto", "shamir", "publicEncrypt", "zod", "process.env"])
      expect(text).not.toContain(detail);
    const policyText = (await serializeProvider(backupPolicyProvider)).text;
    expect(text.replaceAll("coffer/provider/escrow", "coffer/provider/backupPolicy")).toBe(policyText);
  });

  test("loads back and validates through the installed implementation", async () => {
    const { load } = await serializeProvider(secretEscrowProvider);
    const result = await load().check!(
      {},
      { secret: "", recipients: [], threshold: 0, store: { kind: "directory", path: "/srv/escrow" }, recordId: "r" },
    );
    expect(result.failures).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ property: "secret" }),
        expect.objectContaining({ property: "recipients" }),
        expect.objectContaining({ property: "threshold" }),
      ]),
    );
  });
});
