import { backupPolicyProvider } from "../../sdk/backupPolicy";
import { backupSetProvider } from "../../sdk/encryptedBackupSet";
import { serializeProvider } from "../support/serializedProvider";

describe("the serialized EncryptedBackupSet provider (__provider)", () => {
  test("is the same small shim as BackupPolicy's, pointing at its own implementation", async () => {
    const { text, containsSecrets } = await serializeProvider(backupSetProvider);
    expect(containsSecrets).toBe(false);
    expect(Buffer.byteLength(text)).toBeLessThan(3 * 1024);
    expect(text).toContain('"coffer/provider/backupSet"');
    expect(text).not.toMatch(/["'`]\/[A-Za-z.]/);
    for (const detail of ["qemu", "execa", "ssh", "manifest", "process.env"]) expect(text).not.toContain(detail);
    const policyText = (await serializeProvider(backupPolicyProvider)).text;
    expect(text.replaceAll("coffer/provider/backupSet", "coffer/provider/backupPolicy")).toBe(policyText);
  });

  test("loads back and validates through the installed implementation", async () => {
    const { load } = await serializeProvider(backupSetProvider);
    const result = await load().check!({}, { sources: [], trigger: "" });
    expect(result.failures).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ property: "sources" }),
        expect.objectContaining({ property: "trigger" }),
      ]),
    );
  });
});
