import { promises as fs } from "node:fs";
import * as path from "node:path";
import { backupPolicyProvider } from "../../sdk/backupPolicy";
import { serializeProvider } from "../support/serializedProvider";
import { useTempDir } from "../support/tempDir";

const tempDir = useTempDir();
const repoRoot = path.resolve(__dirname, "../..");

describe("the serialized BackupPolicy provider (__provider)", () => {
  test("is a small shim: no absolute path, no secret, no copy of the implementation, under 3 KB", async () => {
    const { text, containsSecrets } = await serializeProvider(backupPolicyProvider);
    expect(containsSecrets).toBe(false);
    expect(Buffer.byteLength(text)).toBeLessThan(3 * 1024);
    expect(text).toContain('"coffer/provider/backupPolicy"');
    expect(text).not.toContain(repoRoot);
    // No string literal that starts an absolute path.
    expect(text).not.toMatch(/["'`]\/[A-Za-z.]/);
    for (const implementationDetail of [
      "safeParse",
      "zod",
      "writeFileAtomic",
      "createHmac",
      "policy.json",
      "node:fs",
      "execa",
      "process.env",
    ]) {
      expect(text).not.toContain(implementationDetail);
    }
  });

  test("is the same text however often it is made (no churn in state or PR diffs)", async () => {
    const first = await serializeProvider(backupPolicyProvider);
    const second = await serializeProvider(backupPolicyProvider);
    expect(second.text).toBe(first.text);
  });

  test("loads back the way Pulumi's host loads it and runs the installed implementation", async () => {
    const { load } = await serializeProvider(backupPolicyProvider);
    const provider = load();
    await provider.configure!({ config: { get: () => undefined, require: () => "" } as never });
    const checked = await provider.check!(
      {},
      { zone: "zone-s", target: { kind: "directory", path: tempDir() }, compression: "zlib" },
    );
    expect(checked.failures).toBeUndefined();
    const { id, outs } = await provider.create(checked.inputs);
    const doc = JSON.parse(await fs.readFile(path.join(tempDir(), ".coffer/zones/zone-s/policy.json"), "utf8"));
    expect(doc).toMatchObject({ policyId: id, settings: { compression: "zlib" } });
    expect((await provider.read!(id, outs)).props).toEqual(outs);
    await provider.delete!(id, outs);
    // Only the target's identity stays.
    expect(await fs.readdir(tempDir())).toEqual([".coffer"]);
  });
});
