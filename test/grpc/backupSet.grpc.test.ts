import { promises as fs } from "node:fs";
import * as path from "node:path";
import { backupSetProvider } from "../../sdk/encryptedBackupSet";
import { makeRawDisk } from "../support/disks";
import { ProviderHost, repoRoot } from "../support/providerHost";
import { serializeProvider } from "../support/serializedProvider";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(120_000);
const URN = "urn:pulumi:dev::coffer-grpc::pulumi-nodejs:dynamic/coffer:EncryptedBackupSet::nightly";
const tempDir = useTempDir();
let host: ProviderHost;
let shim: string;

beforeAll(async () => {
  shim = (await serializeProvider(backupSetProvider)).text;
  host = await ProviderHost.start(repoRoot);
  await host.configure({});
});
afterAll(() => host?.stop());

test("EncryptedBackupSet through Pulumi's dynamic-provider host: check → create → read → diff → delete", async () => {
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  const disk = path.join(tempDir(), "d.raw");
  await makeRawDisk(disk, 4);
  const news = {
    __provider: shim,
    policy: {
      id: "p",
      zone: "zone-g",
      target: { kind: "directory", path: target },
      compression: "zstd",
      integrityCheck: "metadata",
      bandwidthLimitMiBps: 0,
      encrypted: false,
    },
    keys: { manifestKey: "bWFuaWZlc3Qta2V5" },
    sources: [{ name: "d", disk }],
    trigger: "t1",
    deleteBackupsOnDestroy: true,
  };
  const checked = await host.check(URN, {}, news);
  expect(checked.failures).toEqual([]);
  const created = await host.create(URN, checked.inputs!);
  expect(created.properties).toMatchObject({ __provider: shim, setId: created.id, verification: { status: "ok" } });
  const read = await host.read(URN, created.id, created.properties);
  expect(read.properties.verification.status).toBe("ok");
  expect(await host.diff(URN, created.id, read.properties, checked.inputs!)).toEqual({
    changes: "DIFF_NONE",
    replaces: [],
  });
  expect(await host.diff(URN, created.id, read.properties, { ...checked.inputs!, trigger: "t2" })).toEqual({
    changes: "DIFF_SOME",
    replaces: [],
  });
  await host.delete(URN, created.id, read.properties);
  expect(await fs.readdir(target)).toEqual([".coffer"]);
});
