import { promises as fs } from "node:fs";
import * as path from "node:path";
import { backupPolicyProvider } from "../../sdk/backupPolicy";
import { UNKNOWN } from "../../provider/common/check";
import { ProviderHost, repoRoot } from "../support/providerHost";
import { serializeProvider } from "../support/serializedProvider";
import { useTempDir } from "../support/tempDir";

const URN = "urn:pulumi:dev::coffer-grpc::pulumi-nodejs:dynamic/coffer:BackupPolicy::gold";
const PASSPHRASE = "correct horse battery staple";
const tempDir = useTempDir();
let host: ProviderHost;
let shim: string;

beforeAll(async () => {
  shim = (await serializeProvider(backupPolicyProvider)).text;
  // The host runs where a Pulumi program would: coffer resolves from the project's node_modules.
  host = await ProviderHost.start(repoRoot);
  await host.configure({ "openstack:authUrl": "http://127.0.0.1:5000/v3" });
});
afterAll(() => host?.stop());

const news = (overrides: Record<string, unknown> = {}) => ({
  __provider: shim,
  zone: "zone-g",
  target: { kind: "directory", path: tempDir() },
  compression: "zstd",
  encryption: { passphrase: PASSPHRASE },
  ...overrides,
});

describe("BackupPolicy through Pulumi's dynamic-provider host over gRPC", () => {
  test("check → create → read → diff → update → delete, with __provider carried through", async () => {
    const checked = await host.check(URN, {}, news());
    expect(checked.failures).toEqual([]);
    expect(checked.inputs).toMatchObject({
      __provider: shim,
      compression: "zstd",
      integrityCheck: "none",
      bandwidthLimitMiBps: 0,
    });

    const created = await host.create(URN, checked.inputs!);
    expect(created.properties.__provider).toBe(shim);
    const doc = path.join(tempDir(), ".coffer/zones/zone-g/policy.json");
    expect(JSON.parse(await fs.readFile(doc, "utf8")).policyId).toBe(created.id);

    const read = await host.read(URN, created.id, created.properties);
    expect(read.id).toBe(created.id);
    expect(read.properties).toEqual(created.properties);
    expect(read.inputs).toMatchObject({ __provider: shim, compression: "zstd" });

    expect(await host.diff(URN, created.id, read.properties, checked.inputs!)).toEqual({
      changes: "DIFF_NONE",
      replaces: [],
    });
    const changed = (await host.check(URN, checked.inputs!, news({ compression: "zlib" }))).inputs!;
    expect(await host.diff(URN, created.id, read.properties, changed)).toEqual({ changes: "DIFF_SOME", replaces: [] });
    expect(await host.diff(URN, created.id, read.properties, { ...changed, zone: "zone-h" })).toEqual({
      changes: "DIFF_SOME",
      replaces: ["zone"],
    });

    const updated = await host.update(URN, created.id, read.properties, changed);
    // The host keeps only what update returns: every output must be there.
    expect(Object.keys(updated.properties).sort()).toEqual(Object.keys(created.properties).sort());
    expect(updated.properties).toMatchObject({ compression: "zlib", revision: 2 });

    await host.delete(URN, created.id, updated.properties);
    // Only the target's identity stays (it is the target's, not the policy's).
    expect(await fs.readdir(tempDir())).toEqual([".coffer"]);
    expect(await fs.readdir(path.join(tempDir(), ".coffer"))).toEqual(["target.json"]);
  });

  test("bad input comes back as check failures naming the field", async () => {
    const checked = await host.check(URN, {}, news({ encryption: {}, bandwidthLimitMiBps: -1 }));
    expect(checked.failures).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          property: "encryption.passphrase",
          reason: expect.stringMatching(/required when encryption is set/),
        }),
        expect.objectContaining({
          property: "bandwidthLimitMiBps",
          reason: expect.stringMatching(/must not be negative/),
        }),
      ]),
    );
  });

  test("unknown values pass check during preview", async () => {
    const checked = await host.check(URN, {}, news({ encryption: { passphrase: UNKNOWN }, target: UNKNOWN }));
    expect(checked.failures).toEqual([]);
  });

  test("a deleted document reads back with no id, so refresh drops it", async () => {
    const checked = await host.check(URN, {}, news());
    const created = await host.create(URN, checked.inputs!);
    await fs.rm(path.join(tempDir(), ".coffer", "zones"), { recursive: true });
    expect((await host.read(URN, created.id, created.properties)).id).toBe("");
  });

  test("an error from create reaches the engine without the passphrase", async () => {
    const checked = await host.check(URN, {}, news());
    await host.create(URN, checked.inputs!);
    const error = await host.create(URN, checked.inputs!).catch((e) => e);
    expect(String(error.details ?? error.message)).toMatch(/already holds the policy of another BackupPolicy/);
    expect(JSON.stringify(error)).not.toContain(PASSPHRASE);
  });
});
