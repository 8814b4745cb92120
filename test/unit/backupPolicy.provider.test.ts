import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { isCofferError } from "../../provider/common/errors";
import { localHost, provider } from "../../provider/backupPolicy";
import { PolicyHost, createBackupPolicyProvider } from "../../provider/backupPolicy/provider";
import { useTempDir } from "../support/tempDir";

const PASSPHRASE = "correct horse battery staple";
const tempDir = useTempDir();

function declared(overrides: Record<string, unknown> = {}) {
  return {
    zone: "zone-a",
    target: { kind: "directory", path: tempDir() },
    compression: "zstd",
    encryption: { passphrase: PASSPHRASE },
    bandwidthLimitMiBps: 50,
    integrityCheck: "full",
    retention: { keepLast: 7, maxAgeDays: 30 },
    ...overrides,
  };
}

async function checked(overrides: Record<string, unknown> = {}) {
  const result = await provider.check({}, declared(overrides));
  expect(result.failures).toBeUndefined();
  return result.inputs;
}

const docFile = () => path.join(tempDir(), ".coffer", "zones", "zone-a", "policy.json");
const readDoc = async () => JSON.parse(await fs.readFile(docFile(), "utf8"));

describe("BackupPolicy provider on a real directory", () => {
  test("create writes the zone's policy document, 0600, with no passphrase in it", async () => {
    const { id, outs } = await provider.create(await checked());
    expect(id).toMatch(/^zone-a-[0-9a-f]{12}$/);
    expect(outs.documentPath).toBe(docFile());
    expect(statSync(docFile()).mode & 0o777).toBe(0o600);
    const text = await fs.readFile(docFile(), "utf8");
    expect(text).not.toContain(PASSPHRASE);
    expect(text).not.toContain(outs.encryption.fingerprintKey);
    const doc = JSON.parse(text);
    expect(doc).toMatchObject({
      kind: "coffer.BackupPolicy",
      schemaVersion: 1,
      policyId: id,
      zone: "zone-a",
      revision: 1,
      settings: {
        compression: "zstd",
        encryption: { enabled: true, format: "luks", passphraseFingerprint: expect.stringMatching(/^hmac-sha256:[0-9a-f]{64}$/) },
        bandwidthLimitMiBps: 50,
        integrityCheck: "full",
        retention: { keepLast: 7, maxAgeDays: 30 },
      },
    });
    expect(outs).toMatchObject({ schemaVersion: 1, revision: 1, documentStatus: "ok", settings: doc.settings });
    expect(outs.encryption.passphrase).toBe(PASSPHRASE);
    // Nothing but the document is left in its folder (no temporary files).
    expect(await fs.readdir(path.dirname(docFile()))).toEqual(["policy.json"]);
  });

  test("an unencrypted policy records encryption as off and keeps no key", async () => {
    const { outs } = await provider.create(await checked({ encryption: undefined }));
    expect(outs.encryption).toBeNull();
    expect((await readDoc()).settings.encryption).toEqual({ enabled: false });
  });

  test("read of an untouched document reports no drift and the next diff is empty", async () => {
    const { id, outs } = await provider.create(await checked());
    const read = await provider.read(id, outs);
    expect(read.id).toBe(id);
    expect(read.props).toEqual(outs);
    expect(read.inputs).toEqual(await checked());
    expect(await provider.diff(id, read.props, await checked())).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
  });

  test("an out-of-band edit shows as drift in read, and update writes the declared policy back", async () => {
    const { id, outs } = await provider.create(await checked());
    const edited = await readDoc();
    edited.settings.compression = "none";
    edited.settings.bandwidthLimitMiBps = 0;
    await fs.writeFile(docFile(), JSON.stringify(edited));

    const read = await provider.read(id, outs);
    expect(read.props).toMatchObject({ compression: "none", bandwidthLimitMiBps: 0, settings: { compression: "none" } });
    expect(read.inputs).toMatchObject({ compression: "none", bandwidthLimitMiBps: 0 });
    expect(await provider.diff(id, read.props, await checked())).toMatchObject({ changes: true, replaces: [] });

    const { outs: repaired } = await provider.update(id, read.props, await checked());
    expect(repaired).toMatchObject({ compression: "zstd", bandwidthLimitMiBps: 50, revision: 2 });
    expect((await readDoc()).settings).toEqual(outs.settings);
    expect(repaired.encryption.fingerprintKey).toBe(outs.encryption.fingerprintKey);
  });

  test("encryption switched off out of band is drift", async () => {
    const { id, outs } = await provider.create(await checked());
    const edited = await readDoc();
    edited.settings.encryption = { enabled: false };
    await fs.writeFile(docFile(), JSON.stringify(edited));
    const read = await provider.read(id, outs);
    expect(read.inputs.encryption).toBeUndefined();
    expect(await provider.diff(id, read.props, await checked())).toMatchObject({ changes: true });
  });

  test("a fingerprint changed out of band is drift, though the passphrase never leaves state", async () => {
    const { id, outs } = await provider.create(await checked());
    const edited = await readDoc();
    edited.settings.encryption.passphraseFingerprint = "hmac-sha256:" + "0".repeat(64);
    await fs.writeFile(docFile(), JSON.stringify(edited));
    const read = await provider.read(id, outs);
    expect(await provider.diff(id, read.props, await checked())).toMatchObject({ changes: true });
  });

  test("a changed passphrase updates the fingerprint; the same one does not", async () => {
    const { id, outs } = await provider.create(await checked());
    expect(await provider.diff(id, outs, await checked({ encryption: { passphrase: "another long passphrase" } }))).toMatchObject({ changes: true });
    const { outs: next } = await provider.update(id, outs, await checked({ encryption: { passphrase: "another long passphrase" } }));
    expect(next.settings.encryption.passphraseFingerprint).not.toBe(outs.settings.encryption.passphraseFingerprint);
  });

  test("a garbled document is reported unreadable and repaired by update", async () => {
    const { id, outs } = await provider.create(await checked());
    await fs.writeFile(docFile(), "{ not json");
    const read = await provider.read(id, outs);
    expect(read.props.documentStatus).toBe("unreadable");
    expect(await provider.diff(id, read.props, await checked())).toMatchObject({ changes: true });
    await provider.update(id, read.props, await checked());
    expect((await readDoc()).policyId).toBe(id);
  });

  test("a deleted document reads as gone (no id)", async () => {
    const { id, outs } = await provider.create(await checked());
    await fs.rm(docFile());
    expect(await provider.read(id, outs)).toEqual({});
  });

  test("an unreachable target is an error, never 'gone' (an unmounted NAS must not drop the policy from state)", async () => {
    const { id, outs } = await provider.create(await checked());
    await fs.rm(tempDir(), { recursive: true });
    const error = await provider.read(id, outs).catch((e) => e);
    expect(isCofferError(error)).toBe(true);
    expect(error).toMatchObject({ code: "TARGET_UNREACHABLE", field: "target.path" });
    expect(error.message).toMatch(/mount the backup target/);
  });

  test("destroy on an unreachable target fails, saying how to drop a target that is gone for good", async () => {
    const { id, outs } = await provider.create(await checked());
    await fs.rm(tempDir(), { recursive: true });
    const error = await provider.delete(id, outs).catch((e) => e);
    expect(error).toMatchObject({ code: "TARGET_UNREACHABLE" });
    expect(error.message).toMatch(/pulumi state delete/);
  });

  test("zone or target changes replace, new document first; other changes update in place", async () => {
    const { id, outs } = await provider.create(await checked());
    expect(await provider.diff(id, outs, await checked({ zone: "zone-b" }))).toEqual({ changes: true, replaces: ["zone"], deleteBeforeReplace: false });
    expect(await provider.diff(id, outs, await checked({ target: { kind: "directory", path: "/elsewhere" } }))).toMatchObject({ replaces: ["target"] });
    expect(await provider.diff(id, outs, await checked({ integrityCheck: "metadata" }))).toMatchObject({ changes: true, replaces: [] });
    expect(await provider.diff(id, outs, await checked({ retention: undefined }))).toMatchObject({ changes: true, replaces: [] });
  });

  test("no result carries an undefined value (the host's protobuf conversion rejects them)", async () => {
    const hasUndefined = (v: unknown): boolean =>
      v === undefined || (typeof v === "object" && v !== null && Object.values(v).some(hasUndefined));
    const { id, outs } = await provider.create(await checked({ encryption: undefined, retention: undefined }));
    const edited = await readDoc();
    edited.settings.retention = {};
    await fs.writeFile(docFile(), JSON.stringify(edited));
    const read = await provider.read(id, outs);
    const updated = await provider.update(id, read.props, await checked({ encryption: undefined }));
    for (const result of [outs, read.props, read.inputs, updated.outs]) expect(hasUndefined(result)).toBe(false);
  });

  test("a manifest key is made at create, kept by updates, and never written to the document", async () => {
    const { id, outs } = await provider.create(await checked({ encryption: undefined }));
    expect(Buffer.from(outs.manifestKey, "base64")).toHaveLength(32);
    expect(await fs.readFile(docFile(), "utf8")).not.toContain(outs.manifestKey);
    const { outs: next } = await provider.update(id, outs, await checked({ integrityCheck: "metadata" }));
    expect(next.manifestKey).toBe(outs.manifestKey);
    // State from before manifest keys: the diff asks for an update, which makes one.
    const { manifestKey: _dropped, ...old } = outs;
    expect(await provider.diff(id, old, await checked({ encryption: undefined }))).toMatchObject({ changes: true });
    expect((await provider.update(id, old, await checked({ encryption: undefined }))).outs.manifestKey).toMatch(/^[A-Za-z0-9+/]{43}=$/);
  });

  test("changing the host is an update", async () => {
    const { id, outs } = await provider.create(await checked());
    expect(await provider.diff(id, outs, await checked({ host: "kvm-07" }))).toMatchObject({ changes: true, replaces: [] });
    const { outs: next } = await provider.update(id, outs, await checked({ host: "kvm-07" }));
    expect(next.host).toBe("kvm-07");
    expect(await provider.diff(id, next, await checked({ host: "kvm-07" }))).toMatchObject({ changes: false });
  });

  test("every output is present, null for what is not set (preview takes a missing one for unknown)", async () => {
    const { id, outs } = await provider.create(await checked({ encryption: undefined, retention: undefined }));
    expect(outs).toMatchObject({ encryption: null, retention: null, host: null });
    const read = await provider.read(id, outs);
    expect(read.props).toMatchObject({ encryption: null, retention: null, host: null });
    // Inputs too, but for encryption: refresh shows it switched off as removed.
    expect(read.inputs).toMatchObject({ host: null, escrow: null });
    expect(read.inputs).not.toHaveProperty("encryption");
  });

  test("update returns complete outputs", async () => {
    const { id, outs } = await provider.create(await checked());
    const { outs: next } = await provider.update(id, outs, await checked({ integrityCheck: "metadata" }));
    expect(Object.keys(next).sort()).toEqual(Object.keys(outs).sort());
    expect(next).toMatchObject({ integrityCheck: "metadata", revision: 2, documentStatus: "ok" });
  });

  test("a second policy for the same zone and target is refused, naming the owner", async () => {
    const first = await provider.create(await checked());
    const error = await provider.create(await checked()).catch((e) => e);
    expect(error).toMatchObject({ code: "ZONE_OWNED_ELSEWHERE", field: "zone" });
    expect(error.message).toContain(first.id);
    expect((await readDoc()).policyId).toBe(first.id);
  });

  test("delete works from outputs alone, removes only the document and its empty folders", async () => {
    const backupData = path.join(tempDir(), "vm-1", "disk.qcow2");
    await fs.mkdir(path.dirname(backupData), { recursive: true });
    await fs.writeFile(backupData, "backup bytes");
    const { id, outs } = await provider.create(await checked());
    await provider.delete(id, { ...outs, __provider: "ignored" });
    expect(await fs.readdir(tempDir())).toEqual(["vm-1"]);
    expect(await fs.readFile(backupData, "utf8")).toBe("backup bytes");
  });

  test("delete leaves a document another policy wrote since", async () => {
    const { id, outs } = await provider.create(await checked());
    const other = await readDoc();
    other.policyId = "zone-a-someoneelse";
    await fs.writeFile(docFile(), JSON.stringify(other));
    await provider.delete(id, outs);
    expect((await readDoc()).policyId).toBe("zone-a-someoneelse");
  });

  test("delete of an already removed document succeeds", async () => {
    const { id, outs } = await provider.create(await checked());
    await fs.rm(path.join(tempDir(), ".coffer"), { recursive: true });
    await expect(provider.delete(id, outs)).resolves.toBeUndefined();
  });

  test("state from a newer Coffer is refused with the fix", async () => {
    const { id, outs } = await provider.create(await checked());
    await expect(provider.read(id, { ...outs, schemaVersion: 99 })).rejects.toMatchObject({
      code: "STATE_FROM_NEWER_VERSION",
      message: expect.stringMatching(/newer Coffer.*upgrade the coffer package/),
    });
  });

  test("a failed write leaves the previous document, no temporary file, and no secret in the error", async () => {
    const { id, outs } = await provider.create(await checked());
    const before = await fs.readFile(docFile(), "utf8");
    const failing: PolicyHost = {
      ...localHost,
      async writeFileAtomic() {
        // As if a lower layer echoed its input: the provider must still not surface the passphrase.
        throw new Error(`ENOSPC: no space left on device, while writing for ${PASSPHRASE}`);
      },
    };
    const error = await createBackupPolicyProvider(failing).update(id, outs, await checked({ integrityCheck: "metadata" })).catch((e) => e);
    expect(error).toMatchObject({ code: "IO_FAILED" });
    expect(error.message).toMatch(/no space left/);
    expect(error.message).not.toContain(PASSPHRASE);
    expect(String(error.cause?.stack)).not.toContain(PASSPHRASE);
    expect(await fs.readFile(docFile(), "utf8")).toBe(before);
    expect(await fs.readdir(path.dirname(docFile()))).toEqual(["policy.json"]);
  });
});
