import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { isCofferError } from "../../provider/common/errors";
import { MANIFEST_KIND, Manifest, renderSignedManifest } from "../../provider/agent/manifest";
import { localHost } from "../../provider/escrow";
import { SecretEscrowOutputs, createSecretEscrowProvider, planEscrowChange } from "../../provider/escrow/provider";
import {
  ensureReference,
  liveReferences,
  referenceCurrentVersion,
  releaseReference,
} from "../../provider/escrow/references";
import { recordVersions, recoverSecret, writeCurrentVersion, writeRecord } from "../../provider/escrow/record";
import { parseRecipientKey } from "../../provider/escrow/envelope";
import { rsaPair, x25519Pair } from "../support/escrowKeys";
import { memoryStore } from "../support/memoryStore";
import { useTempDir } from "../support/tempDir";

// Signing a passphrase-keyed manifest costs a few seconds of scrypt, by design.
jest.setTimeout(60_000);

const SECRET = "gold passphrase 2026-11";
const dr = x25519Pair();
const security = rsaPair(3072);
const stranger = x25519Pair();
const tempDir = useTempDir();
const provider = createSecretEscrowProvider(localHost);

const inputs = (overrides: Record<string, unknown> = {}) => ({
  secret: SECRET,
  recipients: [
    { name: "dr-team", publicKey: dr.publicKey },
    { name: "security", publicKey: security.publicKey },
  ],
  threshold: 1,
  store: { kind: "directory", path: tempDir() },
  recordId: "gold-passphrase",
  forceDelete: false,
  ...overrides,
});

async function created(overrides: Record<string, unknown> = {}) {
  const { id, outs } = await provider.create(inputs(overrides));
  return { id, outs: outs as SecretEscrowOutputs };
}

async function refreshed(outs: SecretEscrowOutputs): Promise<SecretEscrowOutputs> {
  const result = await provider.read("gold-passphrase", outs);
  expect(result.id).toBe("gold-passphrase");
  return result.props as SecretEscrowOutputs;
}

/** A backup set linked to the record's current version (`version`), with its manifest, as the set provider makes it. */
async function setReferring(setId: string, version: number): Promise<string> {
  const manifestPath = path.join(tempDir(), "target", setId, "manifest.json");
  await fs.mkdir(path.dirname(manifestPath), { recursive: true });
  const manifest: Manifest = {
    kind: MANIFEST_KIND,
    schemaVersion: 1,
    setId,
    name: "n",
    trigger: "n",
    zone: "gold",
    policy: { compression: "zstd", encrypted: true, bandwidthLimitMiBps: 0, integrityCheck: "full" },
    keySource: "passphrase",
    escrow: { recordId: "gold-passphrase", store: tempDir(), version },
    qemuVersion: "7.2",
    createdAt: "2026-11-24T00:00:00Z",
    items: [],
  };
  expect(
    await referenceCurrentVersion(tempDir(), "gold-passphrase", {
      setId,
      manifestPath,
      manifestHost: "local",
      createdAt: "2026-11-24T00:00:00Z",
    }),
  ).toBe(version);
  await fs.writeFile(manifestPath, await renderSignedManifest(manifest, SECRET));
  return manifestPath;
}

async function codeOf(work: Promise<unknown>): Promise<{ code: string; field?: string; message: string }> {
  const error = await work.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isCofferError(error)) throw new Error(`expected a CofferError, got ${String(error)}`);
  return { code: error.code, field: error.field, message: error.message };
}

describe("SecretEscrow provider", () => {
  test("create seals the secret into v1 (0600) with complete outputs, and only the recipients' keys open it", async () => {
    const { id, outs } = await created();
    expect(id).toBe("gold-passphrase");
    const file = path.join(tempDir(), "gold-passphrase", "v1.json");
    expect(outs).toMatchObject({
      version: 1,
      recordPath: file,
      retainedVersions: [1],
      recordStatus: "ok",
      recordProblems: [],
      schemaVersion: 1,
      recipientKeys: [
        {
          name: "dr-team",
          type: "x25519",
          fingerprint: (parseRecipientKey(dr.publicKey) as { key: { fingerprint: string } }).key.fingerprint,
        },
        { name: "security", type: "rsa", fingerprint: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) },
      ],
    });
    expect(outs.recordDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await fs.readFile(file, "utf8")).not.toContain(SECRET);
    expect(await recoverSecret(tempDir(), "gold-passphrase", [security.privateKey])).toBe(SECRET);
    await expect(recoverSecret(tempDir(), "gold-passphrase", [stranger.privateKey])).rejects.toThrow(
      /not one of this record's recipients \(dr-team, security\)/,
    );
  });

  test("create never overwrites a record already in the store", async () => {
    await created();
    const error = await codeOf(provider.create(inputs()));
    expect(error).toMatchObject({ code: "ESCROW_EXISTS", field: "recordId" });
    expect(error.message).toMatch(/already holds an escrow record \(versions 1\).*another recordId/);
    expect(await recoverSecret(tempDir(), "gold-passphrase", [dr.privateKey])).toBe(SECRET);
  });

  test("a store that is not there is an error naming store.path, and nothing is written", async () => {
    const error = await codeOf(
      provider.create(inputs({ store: { kind: "directory", path: path.join(tempDir(), "not-mounted") } })),
    );
    expect(error).toMatchObject({ code: "TARGET_UNREACHABLE", field: "store.path" });
    expect(await fs.readdir(tempDir())).toEqual([]);
  });

  test("refresh: a record as written is ok; missing, unreadable, altered and re-sealed records are drift", async () => {
    const { outs } = await created();
    expect(await refreshed(outs)).toMatchObject({ recordStatus: "ok", recordProblems: [] });

    const text = await fs.readFile(outs.recordPath, "utf8");
    await fs.writeFile(outs.recordPath, text.replace('"createdAt": "', '"createdAt": "1'));
    expect(await refreshed(outs)).toMatchObject({
      recordStatus: "altered",
      recordProblems: [expect.stringMatching(/has changed since it was written/)],
    });

    await fs.writeFile(outs.recordPath, "{ not json");
    expect((await refreshed(outs)).recordStatus).toBe("unreadable");

    // Sealed for someone else (same id and version, so it parses).
    const strangerKey = parseRecipientKey(stranger.publicKey) as { ok: true; key: never };
    await writeRecord(tempDir(), "gold-passphrase", 1, SECRET, [{ name: "dr-team", key: strangerKey.key }], 1);
    const differ = await refreshed(outs);
    expect(differ.recordStatus).toBe("recipients-differ");
    expect(differ.recordProblems[0]).toMatch(
      /sealed for dr-team \([0-9a-f]{12}\) with threshold 1; declared: dr-team .*, security .* with threshold 1/,
    );

    await fs.rm(outs.recordPath);
    const missing = await refreshed(outs);
    expect(missing).toMatchObject({ recordStatus: "missing", retainedVersions: [] });
    // Handed back as an input too, so that preview --diff shows "missing" => "ok".
    expect((await provider.read("gold-passphrase", outs)).inputs).toMatchObject({
      recordStatus: "missing",
      secret: SECRET,
      recordId: "gold-passphrase",
    });
    expect(planEscrowChange(missing, inputs())).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });

  test("up repairs drift by writing the same version again, so manifests that name it still find it", async () => {
    const { outs } = await created();
    await fs.rm(path.join(tempDir(), "gold-passphrase"), { recursive: true });
    const { outs: repaired } = await provider.update("gold-passphrase", await refreshed(outs), inputs());
    expect(repaired).toMatchObject({ version: 1, recordStatus: "ok", retainedVersions: [1] });
    expect(await refreshed(repaired as SecretEscrowOutputs)).toMatchObject({ recordStatus: "ok" });
    expect(await recoverSecret(tempDir(), "gold-passphrase", [dr.privateKey], 1)).toBe(SECRET);
  });

  test("rotation writes the next version and keeps the old one exactly while a set's manifest names it", async () => {
    const { outs } = await created();
    const manifestPath = await setReferring("set-a", 1);
    const { outs: v2 } = await provider.update("gold-passphrase", outs, inputs({ secret: "the rotated passphrase" }));
    expect(v2).toMatchObject({
      version: 2,
      retainedVersions: [1, 2],
      recordPath: path.join(tempDir(), "gold-passphrase", "v2.json"),
    });
    expect(await recoverSecret(tempDir(), "gold-passphrase", [dr.privateKey], 1)).toBe(SECRET);
    expect(await recoverSecret(tempDir(), "gold-passphrase", [dr.privateKey])).toBe("the rotated passphrase");

    // Another rotation (new recipients) while set-a still needs v1: v2 goes, v1 stays.
    const { outs: v3 } = await provider.update(
      "gold-passphrase",
      v2,
      inputs({ secret: "the rotated passphrase", recipients: [{ name: "dr-team", publicKey: dr.publicKey }] }),
    );
    expect(v3).toMatchObject({ version: 3, retainedVersions: [1, 3] });

    // The set is deleted: releasing its reference removes v1.
    await fs.rm(manifestPath);
    expect(await releaseReference(tempDir(), "gold-passphrase", "set-a")).toEqual([1]);
    expect(await recordVersions(tempDir(), "gold-passphrase")).toEqual([3]);
  });

  test("a set deleted by hand (its manifest gone) does not keep a version", async () => {
    const { outs } = await created();
    const manifestPath = await setReferring("set-a", 1);
    await fs.rm(manifestPath);
    expect(await liveReferences(tempDir(), "gold-passphrase")).toEqual([]);
    const { outs: v2 } = await provider.update("gold-passphrase", outs, inputs({ threshold: 2 }));
    expect(v2).toMatchObject({ version: 2, retainedVersions: [2] });
    await expect(recoverSecret(tempDir(), "gold-passphrase", [dr.privateKey])).rejects.toThrow(
      /needs keys of 2 recipients; got 1/,
    );
    expect(await recoverSecret(tempDir(), "gold-passphrase", [dr.privateKey, security.privateKey])).toBe(SECRET);
  });

  test("a set links to the version the escrow wrote last, and is refused when that version is not in the store", async () => {
    const { outs } = await created();
    const ref = { setId: "s", manifestPath: "/x", manifestHost: "local", createdAt: "" };
    await provider.update("gold-passphrase", outs, inputs({ threshold: 2 }));
    expect(await referenceCurrentVersion(tempDir(), "gold-passphrase", ref)).toBe(2);
    await fs.rm(path.join(tempDir(), "gold-passphrase", "v2.json"));
    expect(await codeOf(referenceCurrentVersion(tempDir(), "gold-passphrase", ref))).toMatchObject({
      code: "SOURCE_MISSING",
      field: "escrow",
      message: expect.stringMatching(/v2 is not readable/),
    });
    expect(await codeOf(referenceCurrentVersion(tempDir(), "never-written", ref))).toMatchObject({
      message: expect.stringMatching(/never-written has no current version/),
    });
  });

  test("an unmounted store fails a set's link with the fix, and refresh never writes a reference onto it", async () => {
    const store = path.join(tempDir(), "unmounted");
    const ref = { setId: "s", manifestPath: "/x", manifestHost: "local", createdAt: "" };
    expect(await codeOf(referenceCurrentVersion(store, "gold-passphrase", ref))).toMatchObject({
      code: "TARGET_UNREACHABLE",
      field: "escrow",
      message: expect.stringMatching(/is not an accessible directory: mount it/),
    });
    await expect(ensureReference(store, "gold-passphrase", { ...ref, version: 1 })).rejects.toThrow(
      /not an accessible directory/,
    );
    await expect(fs.access(store)).rejects.toThrow();
  });

  test("recovery takes the version current.json names, not merely the newest file (a rotation that failed half-way)", async () => {
    const { outs } = await created();
    const strangerKey = parseRecipientKey(dr.publicKey) as { ok: true; key: never };
    await writeRecord(tempDir(), "gold-passphrase", 2, "never applied", [{ name: "dr-team", key: strangerKey.key }], 1);
    expect(await recoverSecret(tempDir(), "gold-passphrase", [dr.privateKey])).toBe(SECRET);
    await writeCurrentVersion(tempDir(), "gold-passphrase", 2);
    expect(await recoverSecret(tempDir(), "gold-passphrase", [dr.privateKey])).toBe("never applied");
    expect(outs.version).toBe(1);
  });

  test("refresh notices a current-version pointer that does not name the state's version", async () => {
    const { outs } = await created();
    await fs.writeFile(path.join(tempDir(), "gold-passphrase", "current.json"), JSON.stringify({ version: 9 }));
    expect(await refreshed(outs)).toMatchObject({
      recordStatus: "altered",
      recordProblems: [expect.stringMatching(/current.json names v9, not v1/)],
    });
  });

  test("destroy refuses while a set in the store depends on the record, naming it, unless forceDelete", async () => {
    const { outs } = await created();
    const manifestPath = await setReferring("set-kept", 1);
    await fs.writeFile(path.join(tempDir(), "gold-passphrase", "README.txt"), "someone's note");
    const error = await codeOf(provider.delete("gold-passphrase", outs));
    expect(error).toMatchObject({ code: "ESCROW_IN_USE", field: "forceDelete" });
    expect(error.message).toContain(`set-kept (v1, ${manifestPath})`);
    expect(error.message).toMatch(/Delete those points first \(coffer prune --point\), or set forceDelete: true/);
    expect(await recordVersions(tempDir(), "gold-passphrase")).toEqual([1]);

    const { outs: forced } = await provider.update("gold-passphrase", outs, inputs({ forceDelete: true }));
    expect(forced).toMatchObject({ version: 1, forceDelete: true });
    await provider.delete("gold-passphrase", forced);
    // Only Coffer's files go: the note someone left stays.
    expect(await fs.readdir(path.join(tempDir(), "gold-passphrase"))).toEqual(["README.txt"]);
  });

  test("destroy removes the record and its folder once no set needs it", async () => {
    const { outs } = await created();
    await fs.rm(await setReferring("set-gone", 1));
    await provider.delete("gold-passphrase", outs);
    expect(await fs.readdir(tempDir())).toEqual(["target"]);
  });
});

describe("planEscrowChange", () => {
  const olds = () =>
    ({
      ...inputs(),
      store: { kind: "directory", path: "/srv/escrow" },
      recordStatus: "ok",
      version: 1,
    }) as unknown as SecretEscrowOutputs;
  const news = (overrides: Record<string, unknown> = {}) => ({
    ...inputs(),
    store: { kind: "directory", path: "/srv/escrow" },
    ...overrides,
  });
  test.each([
    ["nothing", {}, { changes: false, replaces: [] }],
    ["the secret", { secret: "another" }, { changes: true, replaces: [] }],
    ["the threshold", { threshold: 2 }, { changes: true, replaces: [] }],
    ["the recipients", { recipients: [{ name: "dr-team", publicKey: dr.publicKey }] }, { changes: true, replaces: [] }],
    ["forceDelete", { forceDelete: true }, { changes: true, replaces: [] }],
    ["the store", { store: { kind: "directory", path: "/srv/other" } }, { changes: true, replaces: ["store"] }],
    ["the record id", { recordId: "other" }, { changes: true, replaces: ["recordId"] }],
    [
      "a secret unknown during preview",
      { secret: "04da6b54-80e4-46f7-96ec-b56ff0331ba9" },
      { changes: true, replaces: [] },
    ],
  ])("a change of %s", (_what, change, expected) => {
    expect(planEscrowChange(olds(), news(change))).toEqual({ ...expected, deleteBeforeReplace: false });
  });
});

describe("the escrow provider's store", () => {
  test("records, the current version and their removal all go through the escrow store", async () => {
    const store = memoryStore("memory://escrow");
    const inMemory = createSecretEscrowProvider({ ...localHost, store: () => store });
    const { outs } = await inMemory.create(inputs());
    expect(outs).toMatchObject({ recordPath: "memory://escrow/gold-passphrase/v1.json", retainedVersions: [1] });
    const rotated = await inMemory.update("gold-passphrase", outs as never, inputs({ threshold: 2 }));
    expect(rotated.outs).toMatchObject({ version: 2, retainedVersions: [2] });
    expect([...store.objects.keys()].sort()).toEqual(["gold-passphrase/current.json", "gold-passphrase/v2.json"]);
    expect(await recoverSecret(store, "gold-passphrase", [dr.privateKey, security.privateKey])).toBe(SECRET);
    const read = await inMemory.read("gold-passphrase", rotated.outs as never);
    expect(read.props).toMatchObject({ recordStatus: "ok", retainedVersions: [2] });
    await inMemory.delete("gold-passphrase", rotated.outs as never);
    expect([...store.objects.keys()]).toEqual([]);
    // The store's folder was only checked, never written to.
    expect(await fs.readdir(tempDir())).toEqual([]);
  });
});
