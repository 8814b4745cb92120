import * as path from "node:path";
import { provider as setProvider } from "../../provider/backupSet";
import { restoreDrillProvider } from "../../sdk/restoreDrill";
import { makeRawDisk } from "../support/disks";
import { ProviderHost, repoRoot } from "../support/providerHost";
import { serializeProvider } from "../support/serializedProvider";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(180_000);
const URN = "urn:pulumi:dev::coffer-grpc::pulumi-nodejs:dynamic/coffer:RestoreDrill::nightly-drill";
const MANIFEST_KEY = "Z3JwYy10aWVyLWRyaWxsLW1hbmlmZXN0LWtleS0wMDA=";
const tempDir = useTempDir();
let host: ProviderHost;
let shim: string;

beforeAll(async () => {
  shim = (await serializeProvider(restoreDrillProvider)).text;
  host = await ProviderHost.start(repoRoot);
  await host.configure({});
});
afterAll(() => host?.stop());

test("RestoreDrill through Pulumi's dynamic-provider host: check → create → read → diff → update → delete", async () => {
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  const disk = path.join(tempDir(), "d.raw");
  await makeRawDisk(disk, 4);
  const policy = { id: "p", zone: "zone-g", target: { kind: "directory", path: target }, compression: "zstd" };
  const setInputs = await setProvider.check(
    {},
    {
      policy: { ...policy, integrityCheck: "metadata", bandwidthLimitMiBps: 0, encrypted: false },
      keys: { manifestKey: MANIFEST_KEY },
      sources: [{ name: "d", disk }],
      trigger: "grpc",
    },
  );
  const set = (await setProvider.create(setInputs.inputs)).outs;
  const news = {
    __provider: shim,
    sets: [{ name: "nightly", setId: set.setId, points: set.points, locations: set.locations }],
    keys: [{ setId: set.setId, keyVersion: set.keyVersion, keys: set.keys, keyring: set.keyring }],
  };
  const bad = await host.check(URN, {}, { ...news, pick: "oldest" });
  expect(bad.failures).toEqual([{ property: "pick", reason: expect.stringMatching(/pick must be "newest"/) }]);
  const checked = await host.check(URN, {}, news);
  expect(checked.failures).toEqual([]);
  const created = await host.create(URN, checked.inputs!);
  expect(created.properties).toMatchObject({
    __provider: shim,
    status: "ok",
    failures: [],
    results: [{ setId: set.setId, pointId: set.points[0].id, ok: true }],
  });
  const read = await host.read(URN, created.id, created.properties);
  expect(read.properties).toMatchObject({ status: "ok", results: [{ ok: true }] });
  expect(read.inputs).toMatchObject({ status: "ok" });
  expect(read.properties.lastRun >= created.properties.lastRun).toBe(true);
  // Every up drills again.
  expect(await host.diff(URN, created.id, read.properties, checked.inputs!)).toEqual({
    changes: "DIFF_SOME",
    replaces: [],
  });
  const updated = await host.update(URN, created.id, read.properties, checked.inputs!);
  expect(updated.properties).toMatchObject({ __provider: shim, status: "ok", results: [{ ok: true }] });
  await host.delete(URN, created.id, updated.properties);
});
