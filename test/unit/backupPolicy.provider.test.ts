import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { isCofferError } from "../../provider/common/errors";
import { localHost, provider } from "../../provider/backupPolicy";
import { PolicyHost, createBackupPolicyProvider } from "../../provider/backupPolicy/provider";
import { POLICY_SCHEMA_VERSION } from "../../provider/backupPolicy/schema";
import { memoryStore } from "../support/memoryStore";
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
        encryption: {
          enabled: true,
          format: "luks",
          passphraseFingerprint: expect.stringMatching(/^hmac-sha256:[0-9a-f]{64}$/),
        },
        bandwidthLimitMiBps: 50,
        integrityCheck: "full",
        retention: { keepLast: 7, maxAgeDays: 30 },
      },
    });
    expect(outs).toMatchObject({
      schemaVersion: POLICY_SCHEMA_VERSION,
      revision: 1,
      documentStatus: "ok",
      settings: doc.settings,
    });
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
    expect(await provider.diff(id, read.props, await checked())).toEqual({
      changes: false,
      replaces: [],
      deleteBeforeReplace: false,
    });
  });

  test("an out-of-band edit shows as drift in read, and update writes the declared policy back", async () => {
    const { id, outs } = await provider.create(await checked());
    const edited = await readDoc();
    edited.settings.compression = "none";
    edited.settings.bandwidthLimitMiBps = 0;
    await fs.writeFile(docFile(), JSON.stringify(edited));

    const read = await provider.read(id, outs);
    expect(read.props).toMatchObject({
      compression: "none",
      bandwidthLimitMiBps: 0,
      settings: { compression: "none" },
    });
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
    expect(
      await provider.diff(id, outs, await checked({ encryption: { passphrase: "another long passphrase" } })),
    ).toMatchObject({ changes: true });
    const { outs: next } = await provider.update(
      id,
      outs,
      await checked({ encryption: { passphrase: "another long passphrase" } }),
    );
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
    expect(await provider.diff(id, outs, await checked({ zone: "zone-b" }))).toEqual({
      changes: true,
      replaces: ["zone"],
      deleteBeforeReplace: false,
    });
    expect(
      await provider.diff(id, outs, await checked({ target: { kind: "directory", path: "/elsewhere" } })),
    ).toMatchObject({ replaces: ["target"] });
    expect(await provider.diff(id, outs, await checked({ integrityCheck: "metadata" }))).toMatchObject({
      changes: true,
      replaces: [],
    });
    expect(await provider.diff(id, outs, await checked({ retention: undefined }))).toMatchObject({
      changes: true,
      replaces: [],
    });
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
    expect((await provider.update(id, old, await checked({ encryption: undefined }))).outs.manifestKey).toMatch(
      /^[A-Za-z0-9+/]{43}=$/,
    );
  });

  test("changing the host is an update", async () => {
    const { id, outs } = await provider.create(await checked());
    expect(await provider.diff(id, outs, await checked({ host: "kvm-07" }))).toMatchObject({
      changes: true,
      replaces: [],
    });
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
    // The target's identity stays: it is the target's, not the policy's.
    expect(await fs.readdir(tempDir())).toEqual([".coffer", "vm-1"]);
    expect(await fs.readdir(path.join(tempDir(), ".coffer"))).toEqual(["target.json"]);
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
    await fs.rm(path.join(tempDir(), ".coffer", "zones"), { recursive: true });
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
      store: (target) => ({
        ...localHost.store(target),
        async writeTextAtomic() {
          // As if a lower layer echoed its input: the provider must still not surface the passphrase.
          throw new Error(`ENOSPC: no space left on device, while writing for ${PASSPHRASE}`);
        },
      }),
    };
    const error = await createBackupPolicyProvider(failing)
      .update(id, outs, await checked({ integrityCheck: "metadata" }))
      .catch((e) => e);
    expect(error).toMatchObject({ code: "IO_FAILED" });
    expect(error.message).toMatch(/no space left/);
    expect(error.message).not.toContain(PASSPHRASE);
    expect(String(error.cause?.stack)).not.toContain(PASSPHRASE);
    expect(await fs.readFile(docFile(), "utf8")).toBe(before);
    expect(await fs.readdir(path.dirname(docFile()))).toEqual(["policy.json"]);
  });
});

const identityFile = (target = tempDir()) => path.join(target, ".coffer", "target.json");

/** Empties a folder but keeps it: what an unmounted NAS leaves, its mount point. */
async function emptyFolder(dir: string) {
  for (const entry of await fs.readdir(dir)) await fs.rm(path.join(dir, entry), { recursive: true });
}

describe("copyToTarget", () => {
  const noChange = { changes: false, replaces: [], deleteBeforeReplace: false };

  test("left out, it is in neither outputs nor document: state written before it reads the same", async () => {
    const { id, outs } = await provider.create(await checked());
    expect(outs).not.toHaveProperty("copyToTarget");
    expect((await readDoc()).settings).not.toHaveProperty("copyToTarget");
    const read = await provider.read(id, outs);
    expect(read.props).not.toHaveProperty("copyToTarget");
    expect(read.inputs).not.toHaveProperty("copyToTarget");
    // false copies as much as absent: declaring it changes nothing.
    expect(await provider.diff(id, outs, await checked({ copyToTarget: false }))).toEqual(noChange);
  });

  test("switched on and off, it updates the policy in place and the document says so", async () => {
    const { id, outs } = await provider.create(await checked());
    const on = await checked({ copyToTarget: true });
    expect(await provider.diff(id, outs, on)).toEqual({ ...noChange, changes: true });
    const { outs: copying } = await provider.update(id, outs, on);
    expect(copying).toMatchObject({ copyToTarget: true, revision: 2, settings: { copyToTarget: true } });
    expect((await readDoc()).settings.copyToTarget).toBe(true);
    const read = await provider.read(id, copying);
    expect(read.props).toEqual(copying);
    expect(read.inputs).toMatchObject({ copyToTarget: true });
    expect(await provider.diff(id, read.props, on)).toEqual(noChange);

    expect(await provider.diff(id, copying, await checked())).toEqual({ ...noChange, changes: true });
    const { outs: off } = await provider.update(id, copying, await checked());
    expect(off).not.toHaveProperty("copyToTarget");
    expect((await readDoc()).settings).not.toHaveProperty("copyToTarget");
  });

  test("removed from the document out of band, it is drift, and update writes it back", async () => {
    const { id, outs } = await provider.create(await checked({ copyToTarget: true }));
    const edited = await readDoc();
    delete edited.settings.copyToTarget;
    await fs.writeFile(docFile(), JSON.stringify(edited));
    const read = await provider.read(id, outs);
    expect(read.props).toMatchObject({ copyToTarget: false });
    expect(read.inputs).toMatchObject({ copyToTarget: false });
    expect(await provider.diff(id, read.props, await checked({ copyToTarget: true }))).toMatchObject({ changes: true });
    await provider.update(id, read.props, await checked({ copyToTarget: true }));
    expect((await readDoc()).settings.copyToTarget).toBe(true);
  });
});

describe("the target's identity", () => {
  test("create writes it once, 0600 in a 0700 folder, and records its id; other policies share it", async () => {
    const { outs } = await provider.create(await checked());
    const identity = JSON.parse(await fs.readFile(identityFile(), "utf8"));
    expect(identity).toEqual({
      kind: "coffer.Target",
      schemaVersion: 1,
      targetId: expect.stringMatching(/^[0-9a-f]{32}$/),
      createdAt: expect.any(String),
    });
    expect(statSync(identityFile()).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(identityFile())).mode & 0o777).toBe(0o700);
    expect(outs.targetId).toBe(identity.targetId);
    const before = await fs.readFile(identityFile(), "utf8");
    const { outs: other } = await provider.create(await checked({ zone: "zone-b" }));
    expect(other.targetId).toBe(identity.targetId);
    expect(await fs.readFile(identityFile(), "utf8")).toBe(before);
  });

  test("refresh of an empty mount point (unmounted NAS) fails naming the path, never 'gone'", async () => {
    const { id, outs } = await provider.create(await checked());
    await emptyFolder(tempDir());
    const error = await provider.read(id, outs).catch((e) => e);
    expect(error).toMatchObject({ code: "TARGET_UNREACHABLE", field: "target.path" });
    const problem = `backup target ${tempDir()} has no Coffer target identity (${identityFile()})`;
    expect(error.message).toContain(`${problem}: is the NAS mounted?`);
    expect(await fs.readdir(tempDir())).toEqual([]);
  });

  test("update and delete on an empty mount point fail the same way and write nothing to the local disk", async () => {
    const { id, outs } = await provider.create(await checked());
    await emptyFolder(tempDir());
    const updateError = await provider.update(id, outs, await checked({ integrityCheck: "metadata" })).catch((e) => e);
    expect(updateError).toMatchObject({ code: "TARGET_UNREACHABLE", message: expect.stringContaining(identityFile()) });
    const deleteError = await provider.delete(id, outs).catch((e) => e);
    expect(deleteError).toMatchObject({
      code: "TARGET_UNREACHABLE",
      message: expect.stringMatching(/is the NAS mounted\?.*pulumi state delete/),
    });
    expect(await fs.readdir(tempDir())).toEqual([]);
  });

  test("another target mounted at the path (another identity) is refused by read, update and delete", async () => {
    const { id, outs } = await provider.create(await checked());
    const identity = JSON.parse(await fs.readFile(identityFile(), "utf8"));
    await fs.writeFile(identityFile(), JSON.stringify({ ...identity, targetId: "0".repeat(32) }));
    const before = await fs.readFile(docFile(), "utf8");
    const another = { code: "TARGET_UNREACHABLE", message: expect.stringMatching(/is another target .*another NAS/) };
    await expect(provider.read(id, outs)).rejects.toMatchObject(another);
    const metadata = await checked({ integrityCheck: "metadata" });
    await expect(provider.update(id, outs, metadata)).rejects.toMatchObject(another);
    await expect(provider.delete(id, outs)).rejects.toMatchObject(another);
    expect(await fs.readFile(docFile(), "utf8")).toBe(before);
  });

  test("a garbled identity is refused, naming the file and how to repair it", async () => {
    const { id, outs } = await provider.create(await checked());
    await fs.writeFile(identityFile(), "{ not json");
    await expect(provider.read(id, outs)).rejects.toMatchObject({
      code: "TARGET_UNREACHABLE",
      message: expect.stringContaining(`${identityFile()} is not a Coffer target identity Coffer can read: put`),
    });
  });

  test("a target that is a symlink to / is refused at create, writing nothing there", async () => {
    const link = path.join(tempDir(), "nas");
    await fs.symlink("/", link);
    const rootBefore = await fs.readdir("/");
    const error = await provider.create(await checked({ target: { kind: "directory", path: link } })).catch((e) => e);
    expect(error).toMatchObject({ code: "INVALID_INPUT", field: "target.path" });
    expect(error.message).toContain("target.path must be a dedicated backup folder such as /srv/backups (a NAS mount)");
    expect(error.message).toContain(`not / or a system folder (${link} is /)`);
    expect(await fs.readdir("/")).toEqual(rootBefore);
  });
});

describe("state written by the previous release (schema 1, no targetId)", () => {
  /** Outputs and document exactly as Coffer wrote them before target identities and owners. */
  async function previousRelease() {
    const target = tempDir();
    const settings = {
      compression: "zstd",
      encryption: { enabled: false },
      bandwidthLimitMiBps: 50,
      integrityCheck: "full",
      retention: { keepLast: 7, maxAgeDays: 30 },
      escrow: null,
    };
    const outs = {
      zone: "zone-a",
      target: { kind: "directory", path: target },
      compression: "zstd",
      bandwidthLimitMiBps: 50,
      integrityCheck: "full",
      retention: { keepLast: 7, maxAgeDays: 30 },
      host: null,
      escrow: null,
      requireEscrow: false,
      schemaVersion: 1,
      encryption: null,
      manifestKey: "bWFuaWZlc3Qta2V5LW9mLXRoZS1wb2xpY3ktMDAwMDA=",
      documentPath: docFile(),
      revision: 1,
      settings,
      documentStatus: "ok",
      __provider: "exports.handler = ...",
    };
    const doc = {
      kind: "coffer.BackupPolicy",
      schemaVersion: 1,
      policyId: "zone-a-0123456789ab",
      zone: "zone-a",
      revision: 1,
      writtenAt: "2026-01-01T00:00:00.000Z",
      settings,
    };
    await fs.mkdir(path.dirname(docFile()), { recursive: true });
    await fs.writeFile(docFile(), JSON.stringify(doc, null, 2));
    // Typed as the provider receives state: whatever the engine stored.
    return { id: doc.policyId, outs: outs as never, declared: await checked({ encryption: undefined }) };
  }

  test("refresh writes the identity its document shows is mounted, records it, and plans no change", async () => {
    const { id, outs, declared: inputs } = await previousRelease();
    expect(await provider.diff(id, outs, inputs)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
    const read = await provider.read(id, outs);
    const identity = JSON.parse(await fs.readFile(identityFile(), "utf8"));
    const { targetId } = identity;
    expect(read.props).toMatchObject({
      schemaVersion: POLICY_SCHEMA_VERSION,
      targetId,
      documentStatus: "ok",
      revision: 1,
    });
    expect(read.inputs).toEqual(inputs);
    expect(await provider.diff(id, read.props, inputs)).toMatchObject({ changes: false, replaces: [] });
  });

  test("an identity already there is adopted; update and delete work on the old state", async () => {
    const { id, outs, declared: inputs } = await previousRelease();
    const { outs: neighbour } = await provider.create(await checked({ zone: "zone-b" }));
    const { outs: updated } = await provider.update(id, outs, { ...inputs, integrityCheck: "metadata" });
    const { targetId } = neighbour;
    expect(updated).toMatchObject({
      schemaVersion: POLICY_SCHEMA_VERSION,
      targetId,
      revision: 2,
      integrityCheck: "metadata",
    });
    await provider.delete(id, outs);
    await expect(fs.access(docFile())).rejects.toMatchObject({ code: "ENOENT" });
  });

  test("with neither identity nor document (an empty mount point) it is unreachable, never gone", async () => {
    const { id, outs } = await previousRelease();
    await emptyFolder(tempDir());
    const unreachable = { code: "TARGET_UNREACHABLE", message: expect.stringContaining(identityFile()) };
    await expect(provider.read(id, outs)).rejects.toMatchObject(unreachable);
    await expect(provider.delete(id, outs)).rejects.toMatchObject({ code: "TARGET_UNREACHABLE" });
    expect(await fs.readdir(tempDir())).toEqual([]);
  });
});

describe("who a zone's document belongs to", () => {
  test("a document this resource wrote before is its own: switching back after a failed change works", async () => {
    const [a, b] = [path.join(tempDir(), "a"), path.join(tempDir(), "b")];
    await fs.mkdir(a);
    await fs.mkdir(b);
    const at = (target: string, owner: string) => checked({ target: { kind: "directory", path: target }, owner });
    const first = await provider.create(await at(a, "coffer-demo/dev/gold"));
    // The target moved to b, then back to a, while the first incarnation still waits to be deleted.
    await provider.create(await at(b, "coffer-demo/dev/gold"));
    const back = await provider.create(await at(a, "coffer-demo/dev/gold"));
    const docAt = (target: string) => path.join(target, ".coffer", "zones", "zone-a", "policy.json");
    const taken = { policyId: back.id, owner: "coffer-demo/dev/gold", revision: 2 };
    expect(JSON.parse(await fs.readFile(docAt(a), "utf8"))).toMatchObject(taken);
    expect(back.outs).toMatchObject({ revision: 2, documentStatus: "ok", targetId: first.outs.targetId });
    // Deleting the first incarnation leaves the document of the one that took it over.
    await provider.delete(first.id, first.outs);
    expect(JSON.parse(await fs.readFile(docAt(a), "utf8")).policyId).toBe(back.id);
    // Another resource, or one of a program that sets no owner, is still refused.
    const refused = { code: "ZONE_OWNED_ELSEWHERE", message: expect.stringContaining(back.id) };
    await expect(provider.create(await at(a, "coffer-demo/dev/silver"))).rejects.toMatchObject(refused);
    const noOwner = await checked({ target: { kind: "directory", path: a } });
    await expect(provider.create(noOwner)).rejects.toMatchObject(refused);
  });

  test("owner is recorded in the document and changes no plan, old state without one included", async () => {
    const { id, outs } = await provider.create(await checked({ owner: "coffer-demo/dev/gold" }));
    expect((await readDoc()).owner).toBe("coffer-demo/dev/gold");
    const { owner: _none, ...withoutOwner } = outs;
    const declaredOwner = await checked({ owner: "coffer-demo/dev/gold" });
    expect(await provider.diff(id, withoutOwner, declaredOwner)).toMatchObject({ changes: false, replaces: [] });
    expect(await provider.diff(id, outs, await checked())).toMatchObject({ changes: false, replaces: [] });
  });

  test("of two policies created for one zone at once, exactly one gets it; the other is refused", async () => {
    // Both creates read the (absent) document before either writes: the race, made certain.
    let waiting = 0;
    let release: () => void = () => undefined;
    const bothRead = new Promise<void>((resolve) => (release = resolve));
    const racing: PolicyHost = {
      ...localHost,
      store(target) {
        const store = localHost.store(target);
        return {
          ...store,
          async readText(key) {
            const text = await store.readText(key);
            if (store.locate(key) === docFile() && waiting < 2) {
              if (++waiting === 2) release();
              await bothRead;
            }
            return text;
          },
        };
      },
    };
    const racer = createBackupPolicyProvider(racing);
    const results = await Promise.allSettled([racer.create(await checked()), racer.create(await checked())]);
    const won = results.filter((r) => r.status === "fulfilled") as PromiseFulfilledResult<{ id: string }>[];
    const lost = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    const refused = { code: "ZONE_OWNED_ELSEWHERE", message: expect.stringContaining(won[0].value.id) };
    expect(lost[0].reason).toMatchObject(refused);
    expect((await readDoc()).policyId).toBe(won[0].value.id);
    expect(await fs.readdir(path.dirname(docFile()))).toEqual(["policy.json"]);
  });
});

describe("the policy provider's store", () => {
  test("everything it writes, reads and removes goes through the target's store", async () => {
    const store = memoryStore("memory://target");
    const inMemory = createBackupPolicyProvider({ ...localHost, store: () => store });
    const { id, outs } = await inMemory.create(await checked());
    expect(outs.documentPath).toBe("memory://target/.coffer/zones/zone-a/policy.json");
    expect([...store.objects.keys()].sort()).toEqual([".coffer/target.json", ".coffer/zones/zone-a/policy.json"]);
    expect(JSON.parse(String(store.objects.get(".coffer/zones/zone-a/policy.json")))).toMatchObject({
      policyId: id,
      revision: 1,
    });
    expect((await inMemory.read(id, outs)).props).toEqual(outs);
    await inMemory.delete(id, outs);
    expect([...store.objects.keys()]).toEqual([".coffer/target.json"]);
    // The target folder itself was only checked, never written to.
    expect(await fs.readdir(tempDir())).toEqual([]);
  });
});
