import { execFile, execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { PARTIAL_PATTERN } from "../../provider/targets/layout";
import { makeRawDisk, PLAINTEXT_MARKER } from "../support/disks";
import { processesMentioning } from "../support/processes";
import { pulumiCliReady } from "../support/pulumiCli";
import { RunningVm, startVm } from "../support/qemuVm";
import { TestSshd, startSshd } from "../support/sshd";
import { filesContaining, stackProject, watchCommandLines } from "../support/stackProject";

jest.setTimeout(900_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const repoRoot = path.resolve(__dirname, "../..");
const PASSPHRASE = "KNOWN-set-e2e-passphrase-48c1";

const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const passphrase = config.requireSecret("passphrase");
for (const p of spec.policies) {
  const policy = new coffer.BackupPolicy(p.zone, {
    zone: p.zone,
    target: { kind: "directory", path: spec.target },
    compression: p.compression,
    encryption: p.encrypted ? { passphrase } : undefined,
    bandwidthLimitMiBps: p.bandwidthLimitMiBps || 0,
    integrityCheck: p.integrityCheck,
  });
  const set = new coffer.EncryptedBackupSet(p.zone + "-set", {
    policy, sources: p.sources, trigger: p.trigger || spec.trigger, deleteBackupsOnDestroy: true,
  });
  exports[p.zone] = {
    setId: set.setId, setDir: set.setDir, manifestPath: set.manifestPath, verification: set.verification,
    items: set.items, points: set.points,
  };
}
`;

const run = promisify(execFile);

describeE2e("EncryptedBackupSet end to end with the real Pulumi CLI", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let vm: RunningVm;
  let sshd: TestSshd;
  let work: string;
  const disks = { raw: "", qcow2: "", vm: "", big: "" };
  const log = { output: "" };
  const record = { onOutput: (out: string) => (log.output += out) };

  const modes = [
    { zone: "plain", compression: "none", encrypted: false },
    { zone: "zstd", compression: "zstd", encrypted: false },
    { zone: "zlib", compression: "zlib", encrypted: false },
    { zone: "luks", compression: "none", encrypted: true },
    { zone: "zstd-luks", compression: "zstd", encrypted: true },
    { zone: "zlib-luks", compression: "zlib", encrypted: true },
  ];
  const spec = (overrides: Record<string, object> = {}) => ({
    target: path.join(work, "target"),
    trigger: "2026-11-24",
    policies: modes.map((m) => ({
      ...m,
      integrityCheck: "full",
      sources:
        m.zone === "zstd-luks"
          ? [
              { name: "web-1-root", disk: disks.raw },
              { name: "db-1-vda", qmpSocket: vm.qmpSocket, device: "vda" },
              { name: "app-2-root", disk: disks.qcow2, format: "qcow2", host: sshd.alias },
            ]
          : [{ name: "web-1-root", disk: disks.raw }],
      ...(m.zone === "zstd-luks" ? { bandwidthLimitMiBps: 4 } : {}),
      ...overrides[m.zone],
    })),
  });
  const outputs = async () =>
    Object.fromEntries(Object.entries(await env.stack.outputs()).map(([k, v]) => [k, v.value]));
  const coffer = (args: string[]) =>
    run(process.execPath, [path.join(repoRoot, "bin/coffer.js"), ...args], {
      env: { ...process.env, COFFER_PASSPHRASE: PASSPHRASE },
    });

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-set-e2e-"));
    await fs.mkdir(path.join(work, "target"));
    await fs.writeFile(path.join(work, "target", "not-coffers.img"), "keep");
    disks.raw = path.join(work, "web-1.raw");
    disks.vm = path.join(work, "db-1.raw");
    disks.qcow2 = path.join(work, "app-2.qcow2");
    disks.big = path.join(work, "big.raw");
    await makeRawDisk(disks.raw, 8);
    await makeRawDisk(disks.vm, 8);
    await makeRawDisk(disks.big, 48);
    execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", disks.raw, disks.qcow2]);
    vm = await startVm(work, disks.vm);
    sshd = await startSshd(path.join(work, "ssh"));
    // The provider process inherits the CLI's environment: ssh config and the "remote" agent.
    env = await stackProject(PROGRAM, {
      COFFER_SSH_CONFIG: sshd.configFile,
      COFFER_REMOTE_AGENT: `PATH=${path.dirname(process.execPath)}:$PATH ${process.execPath} ${path.join(repoRoot, "bin/coffer-agent.js")}`,
    });
    env.setSecretConfig("passphrase", PASSPHRASE);
  });
  afterAll(async () => {
    await env?.stack.destroy().catch(() => undefined);
    await vm?.stop();
    await sshd?.stop();
    await env?.remove();
    await fs.rm(work, { recursive: true, force: true });
  });

  test("every mode, a throttled running VM and a remote host: backed up, verified, restorable without Pulumi, no plaintext", async () => {
    await env.stack.setConfig("spec", { value: JSON.stringify(spec()) });
    const { result: up, commandLines } = await watchCommandLines(() => env.stack.up(record));
    expect(up.summary.result).toBe("succeeded");
    expect([...commandLines].filter((l) => l.includes(PASSPHRASE))).toEqual([]);
    const out = await outputs();
    for (const mode of modes) {
      const set = out[mode.zone];
      expect(set.verification).toMatchObject({ status: "ok", level: "full", failures: [] });
      for (const item of set.items) {
        expect(item).toMatchObject({
          encrypted: mode.encrypted,
          compression: mode.compression,
          verifiedAtBackup: "full",
        });
        const file = path.join(path.dirname(set.manifestPath), item.file);
        // Encrypted: no guest byte in plaintext. (Compression alone keeps literals, so it proves nothing.)
        if (mode.encrypted) expect((await fs.readFile(file)).includes(PLAINTEXT_MARKER)).toBe(false);
        if (!mode.encrypted && mode.compression === "none")
          expect((await fs.readFile(file)).includes(PLAINTEXT_MARKER)).toBe(true);
        const restored = path.join(work, `restored-${mode.zone}-${item.name}.raw`);
        const args = ["restore", "--manifest", set.manifestPath, "--item", item.name, "--to", restored];
        const { stdout } = mode.encrypted
          ? await coffer(args)
          : await run(process.execPath, [path.join(repoRoot, "bin/coffer.js"), ...args], {
              env: { ...process.env, COFFER_MANIFEST_KEY: await manifestKeyOf(mode.zone) },
            });
        expect(JSON.parse(stdout)).toMatchObject({ restored: item.name });
        const original = item.name === "db-1-vda" ? disks.vm : disks.raw;
        expect(await sha256(restored)).toBe(await sha256(original));
        await fs.rm(restored);
      }
    }
    expect(out["zstd-luks"].items.map((i: { name: string; via: string }) => [i.name, i.via])).toEqual([
      ["web-1-root", "local"],
      ["db-1-vda", "local"],
      ["app-2-root", sshd.alias],
    ]);
    expect(await filesContaining(env.root, PASSPHRASE)).toEqual([]);
    // The policy's manifest key is a secret too: encrypted wherever state holds it.
    const manifestKey = await manifestKeyOf("plain");
    expect(manifestKey.length).toBeGreaterThan(40);
    expect(await filesContaining(env.root, manifestKey)).toEqual([]);
    expect(log.output).not.toContain(PASSPHRASE);
    // Long work shows progress in the CLI's output, in order.
    const progress = [...log.output.matchAll(/db-1-vda: (\d+)%/g)].map((m) => Number(m[1]));
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    // Reported in 10% steps as QEMU's job moves: a step between two polls is not shown, so no one step is certain.
    expect(progress).toContain(100);
    expect(progress.filter((p) => p > 0 && p < 100).length).toBeGreaterThanOrEqual(3);
    expect((await env.stack.preview(record)).changeSummary).toEqual({ same: 13 });
  });

  test("drift: a flipped byte and a deleted file show on refresh, named by point; up takes new points, keeping the damaged ones as evidence", async () => {
    const before = await outputs();
    const flipped = before["zstd"];
    const file = path.join(path.dirname(flipped.manifestPath), flipped.items[0].file);
    const bytes = await fs.readFile(file);
    bytes[bytes.length >> 1] ^= 0x10;
    await fs.writeFile(file, bytes);
    const deleted = before["zlib-luks"];
    await fs.rm(path.join(path.dirname(deleted.manifestPath), deleted.items[0].file));

    let refreshOutput = "";
    const refresh = await env.stack.refresh({ onOutput: (o) => ((refreshOutput += o), (log.output += o)) });
    expect(refresh.summary.resourceChanges).toMatchObject({ update: 2 });
    const state = env.exportedState();
    const verificationOf = (zone: string) =>
      state.deployment.resources.find((r: { urn: string }) => r.urn.endsWith(`::${zone}-set`)).outputs.verification;
    const pointOf = (zone: string) => before[zone].points[0].id;
    expect(verificationOf("zstd")).toMatchObject({
      status: "failed",
      failures: [expect.stringMatching(new RegExp(`^point ${pointOf("zstd")}: item web-1-root: .*changed since`))],
    });
    expect(verificationOf("zlib-luks")).toMatchObject({
      status: "missing",
      failures: [expect.stringMatching(new RegExp(`^point ${pointOf("zlib-luks")}: item web-1-root: .* is missing`))],
    });

    const preview = await env.stack.preview(record);
    expect(preview.changeSummary).toMatchObject({ update: 2 });
    expect(preview.changeSummary.replace).toBeUndefined();
    expect(preview.stdout).toContain("takes a point: the newest point failed");
    expect(preview.stdout).toContain("takes a point: the newest point is missing");
    const up = await env.stack.up(record);
    expect(up.summary.resourceChanges).toMatchObject({ update: 2 });
    const after = await outputs();
    for (const zone of ["zstd", "zlib-luks"]) {
      expect(after[zone].setId).toBe(before[zone].setId);
      expect(after[zone].points.map((p: { status: string }) => p.status)).toEqual([
        zone === "zstd" ? "failed" : "missing",
        "ok",
      ]);
      // The damaged point stays, as evidence.
      await expect(fs.access(before[zone].manifestPath)).resolves.toBeUndefined();
    }
    // The sets that verified took no point (refresh re-checked them, so only checkedAt moved).
    const ids = (set: { points: { id: string }[] }) => set.points.map((p) => p.id);
    expect(ids(after["plain"])).toEqual(ids(before["plain"]));
  });

  test("a kill during a backup leaves no good-looking file and the previous set intact; the next up cleans up and succeeds", async () => {
    const before = await outputs();
    await env.stack.setConfig("spec", {
      value: JSON.stringify(
        spec({ plain: { trigger: "2026-11-25", bandwidthLimitMiBps: 2, sources: [{ name: "big", disk: disks.big }] } }),
      ),
    });
    const up = env.stack.up(record).then(
      () => undefined,
      (e: Error) => e,
    );
    // Kill the agent once its copy is under way: the one whose pid its partial file names. Only that one:
    // other test files' agents run beside it (a pkill by command line killed theirs).
    let partial: string | undefined;
    for (let i = 0; i < 1200 && !partial; i++) {
      partial = (await partialFiles(path.join(work, "target", "sets", "plain")))[0];
      if (!partial) await new Promise((r) => setTimeout(r, 50));
    }
    const agentPid = Number(PARTIAL_PATTERN.exec(path.basename(partial ?? ""))?.[3]);
    expect(processesMentioning("coffer-agent.js backup-item").map((p) => p.pid)).toContain(agentPid);
    process.kill(agentPid, "SIGKILL");
    const error = await up;
    expect(error).toBeInstanceOf(Error);
    expect(String(error)).toMatch(/source big/);
    const target = path.join(work, "target");
    // Only the points that existed before (and maybe a partial file): no finished-looking file.
    const pointDirs = await fs.readdir(before["plain"].setDir);
    const earlier = before["plain"].points.map((p: { id: string }) => p.id);
    for (const dir of pointDirs.filter((d) => d !== "index.json" && !earlier.includes(d))) {
      const entries = await fs.readdir(path.join(before["plain"].setDir, dir));
      expect(entries.filter((e) => !e.includes(".partial-"))).toEqual([]);
    }
    expect(
      (
        await run(
          process.execPath,
          [path.join(repoRoot, "bin/coffer.js"), "verify", "--manifest", before["plain"].manifestPath],
          { env: { ...process.env, COFFER_MANIFEST_KEY: await manifestKeyOf("plain") } },
        )
      ).stdout,
    ).toMatch(/"status": "ok"/);

    await env.stack.setConfig("spec", {
      value: JSON.stringify(spec({ plain: { trigger: "2026-11-25", sources: [{ name: "big", disk: disks.big }] } })),
    });
    const again = await env.stack.up(record);
    expect(again.summary.result).toBe("succeeded");
    expect(await partialFiles(target)).toEqual([]);
    const after = await outputs();
    expect(after["plain"].verification.status).toBe("ok");
    expect(after["plain"].points.map((p: { id: string }) => p.id).slice(0, -1)).toEqual(earlier);
    const points = [...earlier, after["plain"].points.at(-1).id];
    expect((await fs.readdir(before["plain"].setDir)).sort()).toEqual(["index.json", ...points].sort());
  });

  test("destroy with deleteBackupsOnDestroy deletes every set's files and nothing else", async () => {
    await env.stack.destroy(record);
    expect(await fs.readdir(path.join(work, "target"))).toEqual([".coffer", "not-coffers.img"]);
    expect(log.output).not.toContain(PASSPHRASE);
  });

  async function manifestKeyOf(zone: string): Promise<string> {
    const state = JSON.parse(env.cli(["stack", "export", "--show-secrets"]));
    // A decrypted secret output is stored as { <sig>, plaintext: <JSON of the value> }.
    return JSON.parse(
      state.deployment.resources.find((r: { urn: string }) => r.urn.endsWith(`BackupPolicy::${zone}`)).outputs
        .manifestKey.plaintext,
    );
  }
});

async function sha256(file: string): Promise<string> {
  const { createHash } = await import("node:crypto");
  return createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex");
}

async function partialFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return entries.filter((e) => String(e).includes(".partial-"));
}
