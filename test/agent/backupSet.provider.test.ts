import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { localHost, provider } from "../../provider/backupSet";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import { SET_SCHEMA_VERSION } from "../../provider/backupSet/state";
import { provider as escrowProvider } from "../../provider/escrow";
import { readReferences } from "../../provider/escrow/references";
import { recordVersions } from "../../provider/escrow/record";
import { x25519Pair } from "../support/escrowKeys";
import { PLAINTEXT_MARKER, makeRawDisk } from "../support/disks";
import { processesMentioning } from "../support/processes";
import { startVm } from "../support/qemuVm";
import { emptyFolder, makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(240_000);
const PASSPHRASE = "provider-test-passphrase-73";
const tempDir = useTempDir();

function declared(target: string, sources: object[], overrides: Record<string, unknown> = {}) {
  return {
    policy: {
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: target },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 0,
      encrypted: true,
    },
    keys: { passphrase: PASSPHRASE, manifestKey: "bWFuaWZlc3Qta2V5LW9mLXRoZS1wb2xpY3ktMDAwMDA=" },
    sources,
    trigger: "2026-11-24",
    ...overrides,
  };
}

async function checked(input: object) {
  const result = await provider.check({}, input as Record<string, unknown>);
  expect(result.failures).toBeUndefined();
  return result.inputs;
}

describe("EncryptedBackupSet provider with the local agent", () => {
  test("create → read ok → drift on a flipped byte, named by point → the next up takes a point → delete with deleteBackupsOnDestroy removes only the set", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    await fs.writeFile(path.join(target, "someone-elses.img"), "keep");
    const web = path.join(tempDir(), "web-1.raw");
    const db = path.join(tempDir(), "db-1.raw");
    await makeRawDisk(web, 8);
    await makeRawDisk(db, 8);
    const vm = await startVm(tempDir(), db);
    try {
      const inputs = await checked(
        declared(
          target,
          [
            { name: "web-1-root", disk: web },
            { name: "db-1-vda", qmpSocket: vm.qmpSocket, device: "vda" },
          ],
          { deleteBackupsOnDestroy: true },
        ),
      );
      const { id, outs } = await provider.create(inputs);
      expect(outs).toMatchObject({
        setId: id,
        manifestHost: "local",
        verification: { status: "ok", level: "full", failures: [] },
      });
      expect(
        outs.items.map((i: { name: string; via: string; encrypted: boolean }) => [i.name, i.via, i.encrypted]),
      ).toEqual([
        ["web-1-root", "local", true],
        ["db-1-vda", "local", true],
      ]);
      const pointId = outs.points[0].id;
      const pointDir = path.join(target, "sets", "zone-a", id, pointId);
      expect(outs.setDir).toBe(path.join(target, "sets", "zone-a", id));
      expect(outs.manifestPath).toBe(path.join(pointDir, "manifest.json"));
      expect((await fs.readdir(outs.setDir)).sort()).toEqual([pointId, "index.json"].sort());
      expect((await fs.readdir(pointDir)).sort()).toEqual([
        "db-1-vda.qcow2.luks",
        "manifest.json",
        "web-1-root.qcow2.luks",
      ]);
      const manifest = await fs.readFile(outs.manifestPath, "utf8");
      expect(manifest).not.toContain(PASSPHRASE);
      expect(manifest).not.toContain(PLAINTEXT_MARKER);

      const read = await provider.read(id, outs);
      expect(read.props.verification).toMatchObject({ status: "ok", failures: [] });
      expect(await provider.diff(id, read.props, inputs)).toEqual({
        changes: false,
        replaces: [],
        deleteBeforeReplace: false,
      });

      const file = path.join(pointDir, "web-1-root.qcow2.luks");
      const bytes = await fs.readFile(file);
      bytes[bytes.length >> 1] ^= 0x01;
      await fs.writeFile(file, bytes);
      const drifted = await provider.read(id, outs);
      expect(drifted.props.verification).toMatchObject({
        status: "failed",
        failures: [expect.stringMatching(new RegExp(`^point ${pointId}: item web-1-root: .*changed since the backup`))],
      });
      expect(drifted.props.points[0]).toMatchObject({ id: pointId, status: "failed" });
      expect(await provider.diff(id, drifted.props, inputs)).toEqual({
        changes: true,
        replaces: [],
        deleteBeforeReplace: false,
      });

      await provider.delete(id, drifted.props);
      expect(await fs.readdir(target)).toEqual([".coffer", "someone-elses.img"]);
    } finally {
      await vm.stop();
    }
  });

  test("an unencrypted set is signed with the policy's manifest key", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const base = declared(target, [{ name: "d", disk }]);
    const inputs = await checked({
      ...base,
      policy: { ...base.policy, encrypted: false, integrityCheck: "metadata" },
      keys: { manifestKey: base.keys.manifestKey },
    });
    const { id, outs } = await provider.create(inputs);
    expect(JSON.parse(await fs.readFile(outs.manifestPath, "utf8")).manifest.keySource).toBe("manifest-key");
    expect((await provider.read(id, outs)).props.verification.status).toBe("ok");
    const wrongKey = { ...outs, keys: { manifestKey: "c29tZW9uZSBlbHNlJ3Mga2V5" } };
    expect((await provider.read(id, wrongKey)).props.verification).toMatchObject({
      status: "failed",
      failures: [expect.stringMatching(/HMAC/)],
    });
  });

  test("a disk's declared format and backing chain reach the agent and the manifest", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const base = path.join(tempDir(), "base.raw");
    const overlay = path.join(tempDir(), "overlay.qcow2");
    await makeRawDisk(base, 4);
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay, "4M"]);
    const source = { name: "d", disk: overlay, format: "qcow2", backingFiles: [base] };
    const policy = { ...declared(target, []).policy, integrityCheck: "metadata" };
    const inputs = await checked(declared(target, [source], { policy }));
    const { outs } = await provider.create(inputs);
    expect(outs.items[0].source).toEqual({ kind: "disk", path: overlay, format: "qcow2", backingFiles: [base] });
    const manifest = JSON.parse(await fs.readFile(outs.manifestPath, "utf8")).manifest;
    expect(manifest.items[0].source).toEqual({ kind: "disk", path: overlay, format: "qcow2", backingFiles: [base] });
  });

  test("a failing source fails the whole set, names the source, and leaves nothing behind", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const good = path.join(tempDir(), "good.raw");
    await makeRawDisk(good, 4);
    const inputs = await checked(
      declared(
        target,
        [
          { name: "good", disk: good },
          { name: "web-9-root", disk: path.join(tempDir(), "missing.qcow2") },
        ],
        { concurrency: 1 },
      ),
    );
    const error = await provider.create(inputs).catch((e) => e);
    expect(error.message).toMatch(/^point not taken, nothing of it was kept: source web-9-root: .*does not exist/);
    expect(error.message).not.toContain(PASSPHRASE);
    expect(await fs.readdir(target)).toEqual([".coffer"]);
  });

  test("a full target fails the set with DISK_FULL, names the source, and leaves the target empty", async () => {
    // A 3 MiB tmpfs (the tests run as root, as CI does; a refused mount fails this test).
    const target = path.join(tempDir(), "small-nas");
    await fs.mkdir(target);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", target]);
    try {
      await makeTarget(target);
      const disk = path.join(tempDir(), "random.raw");
      await fs.writeFile(disk, randomBytes(16 << 20));
      const inputs = await checked(
        declared(target, [{ name: "web-1-root", disk }], {
          policy: { ...declared(target, []).policy, compression: "none", encrypted: false, integrityCheck: "none" },
          keys: { manifestKey: "a2V5" },
        }),
      );
      const error = await provider.create(inputs).catch((e) => e);
      expect(error).toMatchObject({ code: "DISK_FULL" });
      expect(error.message).toMatch(/source web-1-root: .*No space left on device/);
      expect(await fs.readdir(target)).toEqual([".coffer"]);
    } finally {
      execFileSync("umount", [target]);
    }
  });

  test("a deleted point reads as missing, named, and the next up takes a point", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const inputs = await checked(
      declared(target, [{ name: "d", disk }], { policy: { ...declared(target, []).policy, integrityCheck: "none" } }),
    );
    const { id, outs } = await provider.create(inputs);
    await fs.rm(path.dirname(outs.manifestPath), { recursive: true });
    const read = await provider.read(id, outs);
    expect(read.id).toBe(id);
    expect(read.props.verification).toMatchObject({
      status: "missing",
      failures: [expect.stringMatching(/^point .*: manifest: .* is missing/)],
    });
    expect(await provider.diff(id, read.props, inputs)).toMatchObject({ changes: true, replaces: [] });
    await expect(provider.delete(id, read.props)).resolves.toBeUndefined();
  });

  test("a create in flight when the engine is gone stops, keeps nothing, and writes no manifest", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 64);
    const engineGone = new AbortController();
    // Gone as soon as the copy reports progress.
    const progress = (message: string) => /: \d+%$/.test(message) && engineGone.abort();
    const host = { ...localHost, engineGone: engineGone.signal, progress };
    const base = declared(target, [{ name: "d", disk }]);
    // Unencrypted and throttled: the copy lasts, and nothing else makes the test slow.
    const policy = {
      ...base.policy,
      compression: "none",
      encrypted: false,
      integrityCheck: "none",
      bandwidthLimitMiBps: 2,
    };
    const inputs = await checked({ ...base, policy, keys: { manifestKey: base.keys.manifestKey } });
    const started = Date.now();
    const error = await createBackupSetProvider(host)
      .create(inputs)
      .catch((e) => e);
    expect(error).toMatchObject({
      code: "ABORTED",
      message: expect.stringMatching(/^point not taken, nothing of it was kept: .*Pulumi engine exited/),
    });
    // Stopped, not finished: the throttled copy alone takes about 24 s.
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(engineGone.signal.aborted).toBe(true);
    expect(await fs.readdir(target)).toEqual([".coffer"]);
    expect(processesMentioning(tempDir())).toEqual([]);
  });

  /** A target, an escrow store and a small disk, for the escrow tests. */
  async function escrowFixture() {
    const dirs = {
      target: path.join(tempDir(), "target"),
      store: path.join(tempDir(), "escrow"),
      disk: path.join(tempDir(), "d.raw"),
    };
    await makeTarget(dirs.target);
    await fs.mkdir(dirs.store);
    await makeRawDisk(dirs.disk, 4);
    return dirs;
  }

  test("with an escrow: the manifest names the record's version, a reference keeps it through a rotation, and delete releases it", async () => {
    const { target, store, disk } = await escrowFixture();
    const key = x25519Pair();
    const escrowInputs = {
      secret: PASSPHRASE,
      recipients: [{ name: "dr-team", publicKey: key.publicKey }],
      threshold: 1,
      store: { kind: "directory", path: store },
      recordId: "zone-a-passphrase",
      forceDelete: false,
    };
    const { outs: escrow } = await escrowProvider.create(escrowInputs);
    const link = { recordId: "zone-a-passphrase", store, escrowsPassphrase: true };
    const inputs = await checked(
      declared(target, [{ name: "d", disk }], {
        policy: { ...declared(target, []).policy, integrityCheck: "none" },
        escrow: link,
        deleteBackupsOnDestroy: true,
      }),
    );
    const { id, outs } = await provider.create(inputs);
    const reference = `${id}.${outs.points[0].id}`;
    const manifest = JSON.parse(await fs.readFile(outs.manifestPath, "utf8")).manifest;
    expect(manifest.escrow).toEqual({ recordId: "zone-a-passphrase", store, version: 1 });
    expect(await readReferences(store, "zone-a-passphrase")).toEqual([
      expect.objectContaining({ setId: reference, version: 1, manifestPath: outs.manifestPath, manifestHost: "local" }),
    ]);

    // Someone empties the store: refresh of the set writes its reference back.
    await fs.rm(path.join(store, "zone-a-passphrase", "refs"), { recursive: true });
    await provider.read(id, outs);
    expect(await readReferences(store, "zone-a-passphrase")).toEqual([
      expect.objectContaining({ setId: reference, version: 1 }),
    ]);

    // Rotation while the set exists keeps v1; the set's own outputs still name v1.
    const { outs: rotated } = await escrowProvider.update("zone-a-passphrase", escrow, {
      ...escrowInputs,
      secret: "a rotated passphrase!",
    });
    expect(rotated.retainedVersions).toEqual([1, 2]);
    expect(outs.escrow).toEqual(link);
    expect(outs.points[0].escrowVersion).toBe(1);
    expect(await provider.diff(id, outs, inputs)).toMatchObject({ changes: false });

    await provider.delete(id, outs);
    expect(await readReferences(store, "zone-a-passphrase")).toEqual([]);
    expect(await recordVersions(store, "zone-a-passphrase")).toEqual([2]);
  });

  test("a set whose escrow version is gone from the store is refused before any work, and leaves nothing", async () => {
    const { target, store, disk } = await escrowFixture();
    const inputs = await checked(
      declared(target, [{ name: "d", disk }], {
        policy: { ...declared(target, []).policy, integrityCheck: "none" },
        escrow: { recordId: "never-written", store, escrowsPassphrase: true },
      }),
    );
    await expect(provider.create(inputs)).rejects.toThrow(
      /escrow: escrow record never-written has no current version in .*pulumi refresh/,
    );
    expect(await fs.readdir(target)).toEqual([".coffer"]);
  });
});

describe("EncryptedBackupSet and its target's identity", () => {
  const noCheck = (target: string) => ({
    policy: { ...declared(target, []).policy, integrityCheck: "none" },
    deleteBackupsOnDestroy: true,
  });
  const oneDiskSet = (target: string, disk: string) =>
    checked(declared(target, [{ name: "d", disk }], noCheck(target)));
  const noIdentity = (target: string) => expect.stringContaining(`backup target ${target} has no Coffer target id`);

  /** A set taken with the local agent on a target with an identity. */
  async function takenSet() {
    const target = path.join(tempDir(), "target");
    const targetId = await makeTarget(target);
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const { id, outs } = await provider.create(await oneDiskSet(target, disk));
    expect(outs).toMatchObject({
      locations: [expect.objectContaining({ targetId })],
      schemaVersion: SET_SCHEMA_VERSION,
    });
    return { target, targetId, disk, id, outs };
  }

  test("refresh on an empty mount point (unmounted NAS) is an error naming the path, not 'missing'", async () => {
    const { target, id, outs } = await takenSet();
    await emptyFolder(target);
    const error = await provider.read(id, outs).catch((e) => e);
    expect(error).toMatchObject({ code: "TARGET_UNREACHABLE", message: noIdentity(target) });
    expect(error.message).toMatch(/is the NAS mounted\?/);
    expect(await fs.readdir(target)).toEqual([]);
  });

  test("a set is not taken onto an empty mount point: refused before any folder or file is made", async () => {
    const target = path.join(tempDir(), "target");
    await fs.mkdir(target);
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const error = await provider.create(await oneDiskSet(target, disk)).catch((e) => e);
    expect(error).toMatchObject({ code: "TARGET_UNREACHABLE", message: noIdentity(target) });
    expect(await fs.readdir(target)).toEqual([]);
  });

  test("delete on an empty mount point fails as unreachable and writes nothing", async () => {
    const { target, id, outs } = await takenSet();
    await emptyFolder(target);
    const unreachable = { code: "TARGET_UNREACHABLE", message: noIdentity(target) };
    await expect(provider.delete(id, outs)).rejects.toMatchObject(unreachable);
    expect(await fs.readdir(target)).toEqual([]);
  });

  test("another target mounted at the path is refused by refresh and delete; its files stay", async () => {
    const { target, id, outs } = await takenSet();
    const identityFile = path.join(target, ".coffer", "target.json");
    const identity = JSON.parse(await fs.readFile(identityFile, "utf8"));
    await fs.writeFile(identityFile, JSON.stringify({ ...identity, targetId: "f".repeat(32) }));
    const setFiles = await fs.readdir(outs.setDir);
    const another = { code: "TARGET_UNREACHABLE", message: expect.stringMatching(/is another target/) };
    await expect(provider.read(id, outs)).rejects.toMatchObject(another);
    await expect(provider.delete(id, outs)).rejects.toMatchObject({ code: "TARGET_UNREACHABLE" });
    expect(await fs.readdir(outs.setDir)).toEqual(setFiles);
  });

  test("a target an older Coffer used (its zone's policy document, no identity) gets one from a set, which goes on", async () => {
    const { target, id, outs } = await takenSet();
    const old = withoutIdentity(outs);
    // What an older Coffer left: the policy document, no identity.
    await fs.rm(path.join(target, ".coffer", "target.json"));
    const policyDocument = path.join(target, ".coffer", "zones", "zone-a", "policy.json");
    await fs.mkdir(path.dirname(policyDocument), { recursive: true });
    await fs.writeFile(policyDocument, "{}");
    const read = await provider.read(id, old);
    const identity = JSON.parse(await fs.readFile(path.join(target, ".coffer", "target.json"), "utf8"));
    expect(read.props).toMatchObject({
      locations: [expect.objectContaining({ targetId: identity.targetId })],
      verification: { status: "ok" },
    });
    // A new set on it is taken, and carries that identity.
    const disk = path.join(tempDir(), "d2.raw");
    await makeRawDisk(disk, 4);
    const { outs: next } = await provider.create(await oneDiskSet(target, disk));
    expect(next.locations[0].targetId).toBe(identity.targetId);
  });

  test("state from before identities adopts the target's on refresh, else is unreachable", async () => {
    const { target, targetId, id, outs } = await takenSet();
    const old = withoutIdentity(outs);
    const read = await provider.read(id, old);
    expect(read.props).toMatchObject({
      locations: [expect.objectContaining({ targetId })],
      schemaVersion: SET_SCHEMA_VERSION,
      verification: { status: "ok" },
    });
    await emptyFolder(target);
    await expect(provider.read(id, old)).rejects.toMatchObject({ code: "TARGET_UNREACHABLE" });
    expect(await fs.readdir(target)).toEqual([]);
  });
});

/** The set's state as if written before target identities: its locations name none. */
function withoutIdentity<T extends { locations: { targetId?: string }[] }>(outs: T): T {
  return { ...outs, locations: outs.locations.map(({ targetId: _none, ...location }) => location) };
}
