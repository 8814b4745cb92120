import { promises as fs } from "node:fs";
import * as path from "node:path";
import { secretEscrowProvider } from "../../sdk/secretEscrow";
import { recoverSecret } from "../../provider/escrow/record";
import { x25519Pair } from "../support/escrowKeys";
import { ProviderHost, repoRoot } from "../support/providerHost";
import { serializeProvider } from "../support/serializedProvider";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(120_000);
const URN = "urn:pulumi:dev::coffer-grpc::pulumi-nodejs:dynamic/coffer:SecretEscrow::gold-passphrase";
const SECRET = "grpc tier escrowed passphrase";
const tempDir = useTempDir();
let host: ProviderHost;
let shim: string;

beforeAll(async () => {
  shim = (await serializeProvider(secretEscrowProvider)).text;
  host = await ProviderHost.start(repoRoot);
  await host.configure({});
});
afterAll(() => host?.stop());

test("SecretEscrow through Pulumi's dynamic-provider host: check → create → read → diff → update (rotation) → delete", async () => {
  const dr = x25519Pair();
  const security = x25519Pair();
  const news = {
    __provider: shim,
    secret: SECRET,
    recipients: [{ name: "dr-team", publicKey: dr.publicKey }],
    store: { kind: "directory", path: tempDir() },
    recordId: "gold-passphrase",
  };
  const bad = await host.check(URN, {}, { ...news, threshold: 2 });
  expect(bad.failures).toEqual([{ property: "threshold", reason: expect.stringMatching(/more than the 1 recipient/) }]);
  const checked = await host.check(URN, {}, news);
  expect(checked.failures).toEqual([]);
  const created = await host.create(URN, checked.inputs!);
  expect(created.id).toBe("gold-passphrase");
  expect(created.properties).toMatchObject({
    __provider: shim,
    version: 1,
    recordStatus: "ok",
    threshold: 1,
    forceDelete: false,
  });
  const read = await host.read(URN, created.id, created.properties);
  expect(read.properties.recordStatus).toBe("ok");
  expect(await host.diff(URN, created.id, read.properties, checked.inputs!)).toEqual({
    changes: "DIFF_NONE",
    replaces: [],
  });

  const rotated = {
    ...checked.inputs!,
    recipients: [...news.recipients, { name: "security", publicKey: security.publicKey }],
  };
  expect(await host.diff(URN, created.id, read.properties, rotated)).toEqual({ changes: "DIFF_SOME", replaces: [] });
  const updated = await host.update(URN, created.id, read.properties, rotated);
  // The host keeps only what update returns: every output must be there.
  expect(Object.keys(updated.properties).sort()).toEqual(Object.keys(created.properties).sort());
  expect(updated.properties).toMatchObject({ version: 2, retainedVersions: [2] });
  expect(await recoverSecret(tempDir(), "gold-passphrase", [security.privateKey])).toBe(SECRET);

  await host.delete(URN, created.id, updated.properties);
  expect(await fs.readdir(tempDir())).toEqual([]);
  expect(path.isAbsolute(tempDir())).toBe(true);
});
