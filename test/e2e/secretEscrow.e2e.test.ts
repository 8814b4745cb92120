import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { promises as fs, statSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { makeRawDisk } from "../support/disks";
import { PemPair, ed25519Pair, rsaPair, x25519Pair } from "../support/escrowKeys";
import { pulumiCliReady } from "../support/pulumiCli";
import { filesContaining, stackProject } from "../support/stackProject";

jest.setTimeout(900_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const repoRoot = path.resolve(__dirname, "../..");
const PASSPHRASE = "KNOWN-escrow-e2e-passphrase-5d2e";
const ROTATED = "KNOWN-escrow-e2e-rotated-91fa";

const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const passphrase = config.requireSecret("passphrase");
const escrow = new coffer.SecretEscrow("zone-passphrase", {
  secret: spec.escrowSecret !== undefined ? spec.escrowSecret : passphrase,
  recipients: spec.recipients,
  threshold: spec.threshold,
  store: { kind: "directory", path: spec.store },
  forceDelete: spec.forceDelete,
});
const policy = new coffer.BackupPolicy("gold", {
  zone: "gold",
  target: { kind: "directory", path: spec.target },
  compression: "zstd",
  encryption: { passphrase },
  integrityCheck: "full",
  escrow: spec.linkEscrow === false ? undefined : escrow,
  requireEscrow: spec.requireEscrow !== false,
});
const set = new coffer.EncryptedBackupSet("nightly", {
  policy, sources: [{ name: "vm-1-root", disk: spec.disk }], trigger: spec.trigger, deleteBackupsOnDestroy: !spec.retainSets,
});
exports.escrow = { version: escrow.version, recordPath: escrow.recordPath, retainedVersions: escrow.retainedVersions, recordStatus: escrow.recordStatus, recipientKeys: escrow.recipientKeys };
exports.set = { setId: set.setId, manifestPath: set.manifestPath, escrow: set.escrow, points: set.points };
`;

const run = promisify(execFile);
const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex");

/** The coffer CLI as a person runs it on a machine without Pulumi: only PATH in its environment. */
async function cofferCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [path.join(repoRoot, "bin/coffer.js"), ...args], {
      env: { PATH: process.env.PATH! },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function tree(dir: string): Promise<string[]> {
  return (await fs.readdir(dir, { recursive: true })).map(String).sort();
}

describeE2e("SecretEscrow end to end with the real Pulumi CLI", () => {
  let work: string;
  const keys: Record<string, PemPair & { privateFile: string }> = {};
  const disk = () => path.join(work, "vm-1.raw");

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-escrow-e2e-"));
    await makeRawDisk(disk(), 8);
    const pairs: Record<string, PemPair> = {
      "dr-team": x25519Pair(),
      security: rsaPair(3072),
      cto: x25519Pair(),
      stranger: x25519Pair(),
    };
    await fs.mkdir(path.join(work, "keys"), { mode: 0o700 });
    for (const [name, pair] of Object.entries(pairs)) {
      const privateFile = path.join(work, "keys", `${name}.pem`);
      await fs.writeFile(privateFile, pair.privateKey, { mode: 0o600 });
      keys[name] = { ...pair, privateFile };
    }
  });
  afterAll(() => fs.rm(work, { recursive: true, force: true }));

  const recipients = (...names: string[]) => names.map((name) => ({ name, publicKey: keys[name].publicKey }));

  describe("lifecycle: bad input, drift, rotation, guarded destroy", () => {
    let env: Awaited<ReturnType<typeof stackProject>>;
    let log = "";
    const record = { onOutput: (out: string) => (log += out) };
    const dirs = { store: "", target: "" };
    const spec = (overrides: Record<string, unknown> = {}) => ({
      store: dirs.store,
      target: dirs.target,
      disk: disk(),
      recipients: recipients("dr-team", "security"),
      threshold: 1,
      trigger: "2026-11-24",
      ...overrides,
    });
    const declare = (overrides: Record<string, unknown> = {}) =>
      env.stack.setConfig("spec", { value: JSON.stringify(spec(overrides)) });
    const outputs = async () =>
      Object.fromEntries(Object.entries(await env.stack.outputs()).map(([k, v]) => [k, v.value]));
    const escrowState = () =>
      env.exportedState().deployment.resources.find((r: { type: string }) => r.type.endsWith(":SecretEscrow")).outputs;

    beforeAll(async () => {
      dirs.store = path.join(work, "lifecycle-escrow");
      dirs.target = path.join(work, "lifecycle-target");
      await fs.mkdir(dirs.store);
      await fs.mkdir(dirs.target);
      env = await stackProject(PROGRAM);
      env.setSecretConfig("passphrase", PASSPHRASE);
    });
    afterAll(async () => {
      await declare({ forceDelete: true }).catch(() => undefined);
      await env?.stack.up().catch(() => undefined);
      await env?.stack.destroy().catch(() => undefined);
      await env?.remove();
    });

    // Functions: the keys are made in beforeAll, after test.each has read its table.
    test.each<[string, () => Record<string, unknown>, string]>([
      [
        "a 2048-bit RSA key",
        () => ({ recipients: [{ name: "dr-team", publicKey: rsaPair(2048).publicKey }] }),
        "recipients[0].publicKey (dr-team) is an RSA key of 2048 bits: use 3072 bits or more, or X25519",
      ],
      [
        "an Ed25519 key",
        () => ({ recipients: [{ name: "dr-team", publicKey: ed25519Pair().publicKey }] }),
        "is a ed25519 key: use RSA (3072 bits or more) or X25519",
      ],
      [
        "a malformed key",
        () => ({ recipients: [{ name: "dr-team", publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5" }] }),
        "recipients[0].publicKey (dr-team) is not a PEM public key",
      ],
      [
        "duplicate recipient names",
        () => ({ recipients: [...recipients("dr-team"), { name: "dr-team", publicKey: keys.security.publicKey }] }),
        'recipients[1].name "dr-team" is used twice',
      ],
      ["a threshold of 0", () => ({ threshold: 0 }), "threshold must be at least 1"],
      ["a threshold above the recipients", () => ({ threshold: 3 }), "threshold 3 is more than the 2 recipient(s)"],
      ["an empty secret", () => ({ escrowSecret: "" }), "secret must not be empty"],
      [
        "an encrypted policy without escrow under requireEscrow",
        () => ({ linkEscrow: false }),
        "escrow is required (requireEscrow: true)",
      ],
      [
        "an escrow of another secret",
        () => ({ escrowSecret: "not the policy passphrase" }),
        "escrow holds another secret than the policy's passphrase (encryption.passphrase)",
      ],
    ])("%s fails at preview, naming the field, before anything is written", async (_what, change, reason) => {
      await declare(change());
      let seen = "";
      const error = await env.stack.preview({ onOutput: (out) => (seen += out) }).catch((e) => e);
      expect(error).toBeInstanceOf(Error);
      const text = `${seen}\n${error.message}`;
      expect(text).toContain(reason);
      expect(text).not.toContain(PASSPHRASE);
      expect(await tree(dirs.store)).toEqual([]);
      expect(await tree(dirs.target)).toEqual([]);
    });

    test("up seals the passphrase into v1, the set's manifest names it, and the passphrase is nowhere in the clear", async () => {
      await declare();
      const up = await env.stack.up(record);
      expect(up.summary.result).toBe("succeeded");
      const out = await outputs();
      const recordFile = path.join(dirs.store, "zone-passphrase", "v1.json");
      expect(out.escrow).toMatchObject({
        version: 1,
        recordPath: recordFile,
        retainedVersions: [1],
        recordStatus: "ok",
      });
      expect(out.escrow.recipientKeys.map((k: { name: string; type: string }) => [k.name, k.type])).toEqual([
        ["dr-team", "x25519"],
        ["security", "rsa"],
      ]);
      expect(statSync(recordFile).mode & 0o777).toBe(0o600);
      const manifest = JSON.parse(await fs.readFile(out.set.manifestPath, "utf8")).manifest;
      expect(manifest.escrow).toEqual({ recordId: "zone-passphrase", store: dirs.store, version: 1 });
      expect(out.set.escrow).toEqual({ recordId: "zone-passphrase", store: dirs.store, escrowsPassphrase: true });
      expect(out.set.points.map((p: { escrowVersion: number }) => p.escrowVersion)).toEqual([1]);
      // Not in the record, the references, the state, the stack config or the CLI's output.
      expect(await filesContaining(dirs.store, PASSPHRASE)).toEqual([]);
      expect(await filesContaining(env.root, PASSPHRASE)).toEqual([]);
      expect(log).not.toContain(PASSPHRASE);
      const { stdout } = await run(process.execPath, [
        path.join(repoRoot, "bin/coffer.js"),
        "escrow",
        "recover",
        "--store",
        dirs.store,
        "--id",
        "zone-passphrase",
        "--key",
        keys.security.privateFile,
      ]);
      expect(stdout).toBe(PASSPHRASE + "\n");
      expect((await env.stack.preview(record)).changeSummary).toEqual({ same: 4 });
    });

    test("a policy update that changes no setting previews as that alone: the set is not shown as replaced", async () => {
      const { set } = await outputs();
      await declare({ requireEscrow: false });
      const preview = await env.stack.preview({ ...record, diff: true });
      expect(preview.changeSummary).toEqual({ same: 3, update: 1 });
      expect(preview.stdout).toMatch(/~ requireEscrow\s*: true => false/);
      expect((await env.stack.up(record)).summary.resourceChanges).toEqual({ same: 3, update: 1 });
      await declare();
      expect((await env.stack.up(record)).summary.resourceChanges).toEqual({ same: 3, update: 1 });
      expect((await outputs()).set).toEqual(set);
    });

    test("refresh shows an altered or deleted record as drift; up writes the same version again", async () => {
      const recordFile = path.join(dirs.store, "zone-passphrase", "v1.json");
      const text = await fs.readFile(recordFile, "utf8");
      await fs.writeFile(recordFile, text.replace(/"createdAt": "/, '"createdAt": "tampered '));
      await env.stack.refresh(record);
      expect(escrowState()).toMatchObject({
        recordStatus: "altered",
        recordProblems: [expect.stringMatching(/has changed since it was written/)],
      });
      // Only the escrow: its repair keeps the version, so the policy and the set stay as they are.
      const preview = await env.stack.preview({ ...record, diff: true });
      expect(preview.changeSummary).toEqual({ same: 3, update: 1 });
      expect(preview.stdout).toMatch(/~ recordStatus\s*: "altered" => "ok"/);
      await env.stack.up(record);
      expect(escrowState()).toMatchObject({ recordStatus: "ok", version: 1 });

      // The whole record folder goes, references included: refresh of the set writes its reference back.
      await fs.rm(path.join(dirs.store, "zone-passphrase"), { recursive: true });
      await env.stack.refresh(record);
      expect(escrowState()).toMatchObject({
        recordStatus: "missing",
        recordProblems: [expect.stringMatching(/v1.json is missing/)],
      });
      const { setId, points } = (await outputs()).set;
      const refs = await fs.readdir(path.join(dirs.store, "zone-passphrase", "refs"));
      expect(refs).toEqual([`${setId}.${points[0].id}.json`]);
      const up = await env.stack.up(record);
      expect(up.summary.resourceChanges).toEqual({ same: 3, update: 1 });
      expect(escrowState()).toMatchObject({ recordStatus: "ok", version: 1 });
      const { stdout } = await run(process.execPath, [
        path.join(repoRoot, "bin/coffer.js"),
        "escrow",
        "recover",
        "--store",
        dirs.store,
        "--id",
        "zone-passphrase",
        "--key",
        keys["dr-team"].privateFile,
      ]);
      expect(stdout).toBe(PASSPHRASE + "\n");
    });

    test("rotation: new recipients write v2 (the set stays on v1, which is kept); a new passphrase writes v3 for the next point, and v1 stays for the point that needs it", async () => {
      const before = await outputs();
      await declare({ recipients: recipients("dr-team", "cto") });
      // Only the escrow changes: the policy's passphrase and the set are the same.
      expect((await env.stack.preview(record)).changeSummary).toEqual({ same: 3, update: 1 });
      await env.stack.up(record);
      let out = await outputs();
      expect(out.escrow).toMatchObject({ version: 2, retainedVersions: [1, 2] });
      // The set's points are as they were (refresh may have re-checked them since).
      const pointIds = (set: { points: { id: string; escrowVersion: number }[] }) =>
        set.points.map((p) => [p.id, p.escrowVersion]);
      expect(pointIds(out.set)).toEqual(pointIds(before.set));
      expect(out.set.manifestPath).toBe(before.set.manifestPath);
      const recover = (version: number, key: string) =>
        cofferCli([
          "escrow",
          "recover",
          "--store",
          dirs.store,
          "--id",
          "zone-passphrase",
          "--version",
          String(version),
          "--key",
          keys[key].privateFile,
        ]);
      expect(await recover(1, "security")).toMatchObject({ code: 0, stdout: PASSPHRASE + "\n" });
      expect(await recover(2, "security")).toMatchObject({
        code: 1,
        stderr: expect.stringContaining("is not one of this record's recipients (dr-team, cto)"),
      });
      expect(await recover(2, "cto")).toMatchObject({ code: 0, stdout: PASSPHRASE + "\n" });

      env.setSecretConfig("passphrase", ROTATED);
      const up = await env.stack.up(record);
      // The escrow, the policy and the set update: the new key applies from the set's next point.
      expect(up.summary.resourceChanges).toEqual({ same: 1, update: 3 });
      out = await outputs();
      // The point taken with the old passphrase still needs v1; nothing needs v2.
      expect(out.escrow).toMatchObject({ version: 3, retainedVersions: [1, 3] });
      expect(pointIds(out.set)).toEqual(pointIds(before.set));
      expect(JSON.parse(await fs.readFile(before.set.manifestPath, "utf8")).manifest.escrow.version).toBe(1);
      // The next point is made with the new passphrase, and its manifest names v3.
      await declare({ recipients: recipients("dr-team", "cto"), trigger: "2026-11-25" });
      await env.stack.up(record);
      out = await outputs();
      expect(out.set.points.map((p: { escrowVersion: number }) => p.escrowVersion)).toEqual([1, 3]);
      const manifest = JSON.parse(await fs.readFile(out.set.manifestPath, "utf8")).manifest;
      expect(manifest.escrow).toEqual({ recordId: "zone-passphrase", store: dirs.store, version: 3 });
      expect((await fs.readdir(path.join(dirs.store, "zone-passphrase"))).sort()).toEqual([
        "current.json",
        "refs",
        "v1.json",
        "v3.json",
      ]);
      await env.stack.refresh(record);
      expect(escrowState()).toMatchObject({ retainedVersions: [1, 3], recordStatus: "ok" });
      expect(await recover(1, "security")).toMatchObject({ code: 0, stdout: PASSPHRASE + "\n" });
      expect(await recover(3, "cto")).toMatchObject({ code: 0, stdout: ROTATED + "\n" });
      expect(await filesContaining(env.root, ROTATED)).toEqual([]);
      expect(await filesContaining(dirs.store, ROTATED)).toEqual([]);
    });

    test("destroy refuses while points outside Pulumi's state (dropped from it, or kept by a set's destroy) are in the store, naming them; forceDelete lets it go", async () => {
      const { set: dropped } = await outputs();
      const ref = (set: { setId: string }, point: { id: string }) => `${set.setId}.${point.id}`;
      const manifestOf = (set: { manifestPath: string }, point: { id: string }) =>
        path.join(path.dirname(path.dirname(set.manifestPath)), point.id, "manifest.json");
      // The set leaves the state, its points stay: as a set of another stack's would.
      const urn = env
        .exportedState()
        .deployment.resources.find((r: { type: string }) => r.type.endsWith(":EncryptedBackupSet")).urn;
      env.cli(["state", "delete", urn, "--yes"]);
      const refusal = async () => {
        let seen = "";
        const error = await env.stack.destroy({ onOutput: (out) => (seen += out) }).catch((e) => e);
        expect(error).toBeInstanceOf(Error);
        return `${seen}\n${error.message}`;
      };
      let text = await refusal();
      expect(text).toContain(
        "escrow record zone-passphrase is the way to recover the key of 2 recovery point(s) still in the store",
      );
      const [v1Point, v3Point] = dropped.points;
      expect(text).toContain(`${ref(dropped, v1Point)} (v1, ${manifestOf(dropped, v1Point)})`);
      expect(text).toContain(`${ref(dropped, v3Point)} (v3, ${manifestOf(dropped, v3Point)})`);
      expect(text).toContain("set forceDelete: true");
      expect(await fs.readdir(path.join(dirs.store, "zone-passphrase"))).toContain("v3.json");

      // A new set whose destroy keeps its points (the default): so the escrow must stay too.
      await declare({ recipients: recipients("dr-team", "cto"), trigger: "2026-11-25", retainSets: true });
      await env.stack.up(record);
      const { set: kept } = await outputs();
      expect(kept.setId).not.toBe(dropped.setId);
      text = await refusal();
      expect(text).toContain("is the way to recover the key of 3 recovery point(s) still in the store");
      expect(text).toContain(`${ref(kept, kept.points[0])} (v3, ${kept.manifestPath})`);

      const forced = { recipients: recipients("dr-team", "cto"), trigger: "2026-11-25", retainSets: true };
      await declare({ ...forced, forceDelete: true });
      await env.stack.up(record);
      const destroyed = await env.stack.destroy(record);
      expect(destroyed.summary.result).toBe("succeeded");
      expect(await fs.readdir(dirs.store)).toEqual([]);
      // The points' files are not the escrow's to delete.
      for (const [set, point] of [
        [dropped, v1Point],
        [dropped, v3Point],
        [kept, kept.points[0]],
      ]) {
        expect((await fs.readdir(path.dirname(manifestOf(set, point)))).sort()).toEqual([
          "manifest.json",
          "vm-1-root.qcow2.luks",
        ]);
      }
    });
  });

  test("disaster drill: up, throw state and config away, recover the passphrase with two of three keys, restore, compare", async () => {
    const store = path.join(work, "drill-escrow");
    const target = path.join(work, "drill-target");
    await fs.mkdir(store);
    await fs.mkdir(target);
    const env = await stackProject(PROGRAM);
    try {
      env.setSecretConfig("passphrase", PASSPHRASE);
      await env.stack.setConfig("spec", {
        value: JSON.stringify({
          store,
          target,
          disk: disk(),
          recipients: recipients("dr-team", "security", "cto"),
          threshold: 2,
          trigger: "drill",
        }),
      });
      expect((await env.stack.up()).summary.result).toBe("succeeded");
    } finally {
      // Pulumi's state, the stack config (the passphrase's only other copy) and PULUMI_HOME: gone.
      await env.remove();
    }
    await expect(fs.access(env.root)).rejects.toThrow();

    // What a person has: the backup target, the escrow store, recipients' private keys.
    // Without state, the target alone says where the points are.
    const listed = await cofferCli(["list", "--target", target, "--json"]);
    expect(listed.code).toBe(0);
    const [point] = JSON.parse(listed.stdout).points;
    expect(point).toMatchObject({ zone: "gold", status: "ok", escrowVersion: 1 });
    const manifestPath = path.join(point.dir, "manifest.json");
    const restored = path.join(work, "drill-restored.raw");
    const noKey = await cofferCli(["restore", "--manifest", manifestPath, "--item", "vm-1-root", "--to", restored]);
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain(
      `its passphrase is escrowed: coffer escrow recover --store ${store} --id zone-passphrase --version 1`,
    );

    const recover = (...names: string[]) =>
      cofferCli([
        "escrow",
        "recover",
        "--store",
        store,
        "--id",
        "zone-passphrase",
        "--version",
        "1",
        ...names.flatMap((n) => ["--key", keys[n].privateFile]),
        "--out",
        path.join(work, "recovered-passphrase"),
      ]);
    const oneKey = await recover("cto");
    expect(oneKey).toMatchObject({ code: 1, stderr: expect.stringContaining("needs keys of 2 recipients; got 1") });
    const wrongKey = await recover("cto", "stranger");
    expect(wrongKey).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("is not one of this record's recipients (dr-team, security, cto)"),
    });
    await expect(fs.access(path.join(work, "recovered-passphrase"))).rejects.toThrow();

    const recovered = await recover("security", "cto");
    expect(recovered.code).toBe(0);
    const passphraseFile = path.join(work, "recovered-passphrase");
    expect(statSync(passphraseFile).mode & 0o777).toBe(0o600);
    const restore = await cofferCli([
      "restore",
      "--manifest",
      manifestPath,
      "--item",
      "vm-1-root",
      "--to",
      restored,
      "--passphrase-file",
      passphraseFile,
    ]);
    expect(restore).toMatchObject({ code: 0 });
    expect(JSON.parse(restore.stdout)).toMatchObject({ restored: "vm-1-root", to: restored });
    expect(await sha256(restored)).toBe(await sha256(disk()));
  });
});
