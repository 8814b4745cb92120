import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { x25519Pair } from "../support/escrowKeys";
import { ed25519Pair } from "../support/signingKeys";
import { pulumiCliReady } from "../support/pulumiCli";
import { stackProject, watchCommandLines } from "../support/stackProject";

jest.setTimeout(600_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const PASSPHRASE = "KNOWN-policy-pack-e2e-passphrase";

// A policy whose settings, escrow and set come from stack config, so each case is one preview.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const spec = new pulumi.Config().requireObject("spec");
const passphrase = new pulumi.Config().requireSecret("passphrase");
const escrow = spec.threshold === undefined ? undefined : new coffer.SecretEscrow("zone-passphrase", {
  secret: passphrase,
  recipients: spec.recipients,
  threshold: spec.threshold,
  store: { kind: "directory", path: spec.store },
});
const policy = new coffer.BackupPolicy("gold", {
  zone: "gold",
  target: { kind: "directory", path: spec.target },
  encryption: { passphrase },
  signing: { privateKey: new pulumi.Config().requireSecret("signingKey") },
  escrow,
  retention: spec.retention,
});
const running = spec.vmSocket ? [{ name: "web-1-vda", qmpSocket: spec.vmSocket, device: "vda" }] : [];
new coffer.EncryptedBackupSet("nightly", {
  policy,
  sources: [{ name: "vm-1-root", disk: spec.disk }, ...running],
  schedule: spec.schedule,
  trigger: "t1",
});
if (spec.finalState) {
  new coffer.FinalStateBackup("web-1-final", {
    vm: { qmpSocket: spec.vmSocket, devices: ["vda"] },
    policy,
    recipients: spec.recipients,
    holdDays: 30,
    reason: "security",
  });
}
`;

describeE2e("Coffer's policy pack with the real Pulumi CLI", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let good: Record<string, unknown>;
  let pack: string;

  beforeAll(async () => {
    env = await stackProject(PROGRAM);
    env.setSecretConfig("passphrase", PASSPHRASE);
    env.setSecretConfig("signingKey", ed25519Pair().privateKey);
    // Where a user's install has it: coffer in the project's node_modules.
    pack = path.join(env.project, "node_modules/coffer/policy-pack");
    const dir = async (name: string) => {
      await fs.mkdir(path.join(env.root, name));
      return path.join(env.root, name);
    };
    const [target, store, disks] = [await dir("target"), await dir("store"), await dir("disks")];
    good = {
      target,
      store,
      disk: path.join(disks, "vm-1.raw"),
      recipients: [
        { name: "dr-team", publicKey: x25519Pair().publicKey },
        { name: "security", publicKey: x25519Pair().publicKey },
      ],
      threshold: 2,
      retention: { keepDaily: 14 },
    };
  });
  afterAll(() => env?.remove());

  /** `pulumi preview --policy-pack`, as a person runs it: its exit code and everything it printed. */
  async function preview(spec: Record<string, unknown>, extraArgs: string[] = []) {
    await env.stack.setConfig("spec", { value: JSON.stringify(spec) });
    const args = ["preview", "--policy-pack", pack, ...extraArgs, "--stack", "e2e", "--non-interactive"];
    const cliEnv = { ...process.env, ...env.stack.workspace.envVars, PULUMI_HOME: path.join(env.root, "home") };
    return new Promise<{ code: number; output: string }>((resolve) =>
      execFile("pulumi", [...args, "--color", "never"], { cwd: env.project, env: cliEnv }, (error, stdout, stderr) =>
        resolve({ code: error ? Number(error.code) : 0, output: `${stdout}${stderr}` }),
      ),
    );
  }

  it("fails a preview with each broken rule, the resource and the fix; passes once fixed", async () => {
    const broken = {
      ...good,
      threshold: 1,
      retention: { keepDaily: 3 },
      disk: path.join(good.target as string, "a.raw"),
    };
    const { result: bad, commandLines } = await watchCommandLines(() => preview(broken));
    expect(bad.code).not.toBe(0);
    expect(bad.output).toContain("coffer@v0.4.0");
    expect(bad.output).toMatch(
      /\[mandatory\]\s+coffer-escrow-threshold\s+\(pulumi-nodejs:dynamic\/coffer:SecretEscrow: zone-passphrase\)/,
    );
    expect(bad.output).toContain(
      'SecretEscrow "zone-passphrase" (escrow of BackupPolicy "gold" (escrow)) recovers with threshold 1; ' +
        "this stack requires at least 2. Fix: set `threshold: 2`",
    );
    expect(bad.output).toMatch(/coffer-retention-min-days\s+\(pulumi-nodejs:dynamic\/coffer:BackupPolicy: gold\)/);
    expect(bad.output).toContain('BackupPolicy "gold" keeps 3 d of points for set "nightly" (keepDaily 3)');
    expect(bad.output).toContain("Fix: set `keepDaily: 7` or `maxAgeDays: 7` in its retention");
    expect(bad.output).toMatch(
      /coffer-target-not-source-storage\s+\(pulumi-nodejs:dynamic\/coffer:EncryptedBackupSet: nightly\)/,
    );
    expect(bad.output).toContain('disk "vm-1-root": its file');
    expect(bad.output).toContain("Fix: give the policy a target on other storage");
    // Policies see secrets in the clear; the rules never print them, and the pack's process never has them in argv.
    expect(bad.output).not.toContain(PASSPHRASE);
    expect([...commandLines].filter((line) => line.includes("run-policy-pack"))).not.toEqual([]);
    expect([...commandLines].filter((line) => line.includes(PASSPHRASE))).toEqual([]);

    const fixed = await preview(good);
    expect(fixed.output).toContain("coffer@v0.4.0");
    expect(fixed.output).not.toMatch(/coffer-[a-z-]+\s+\(pulumi-nodejs/);
    // Every value the rules read was known in this first preview: nothing was skipped as unknown.
    expect(fixed.output).not.toContain("can't");
    expect(fixed.code).toBe(0);
  });

  it("fails a running VM without a FinalStateBackup, naming it and the fix; passes once it has one", async () => {
    const withVm = { ...good, vmSocket: "/run/qemu/web-1.qmp" };
    const bad = await preview(withVm);
    expect(bad.code).not.toBe(0);
    expect(bad.output).toMatch(
      /\[mandatory\]\s+coffer-final-state-backup\s+\(pulumi-nodejs:dynamic\/coffer:EncryptedBackupSet: nightly\)/,
    );
    expect(bad.output).toContain(
      'backs up the running VM of /run/qemu/web-1.qmp (source "web-1-vda"), which has no FinalStateBackup',
    );
    expect(bad.output).toContain('Fix: add new coffer.FinalStateBackup("web-1-vda-final"');
    const fixed = await preview({ ...withVm, finalState: true });
    expect(fixed.output).not.toMatch(/coffer-[a-z-]+\s+\(pulumi-nodejs/);
    expect(fixed.code).toBe(0);
  });

  it("fails an encrypted policy without an escrow", async () => {
    const { threshold: _threshold, ...noEscrow } = good;
    const result = await preview(noEscrow);
    expect(result.code).not.toBe(0);
    expect(result.output).toContain('BackupPolicy "gold" is encrypted but escrows its passphrase nowhere');
  });

  it("counts keepLast by the set's schedule, and takes each rule's settings from --policy-pack-config", async () => {
    // keepLast 6, a point every 12 h: 3 days.
    const spec = { ...good, retention: { keepLast: 6 }, schedule: { every: "12h" } };
    const byDefault = await preview(spec);
    expect(byDefault.output).toContain(
      'keeps 3 d of points for set "nightly" (keepLast 6, a point at most every 12 h)',
    );
    expect(byDefault.code).not.toBe(0);

    const config = path.join(env.root, "policy-config.json");
    await fs.writeFile(
      config,
      JSON.stringify({
        "coffer-escrow-threshold": { minThreshold: 3 },
        "coffer-retention-min-days": { minDays: 3 },
        "coffer-target-not-source-storage": "advisory",
      }),
    );
    const configured = await preview({ ...spec, disk: path.join(good.target as string, "a.raw") }, [
      "--policy-pack-config",
      config,
    ]);
    expect(configured.output).toContain("this stack requires at least 3. Fix: set `threshold: 3`");
    expect(configured.output).not.toContain("coffer-retention-min-days");
    expect(configured.output).toMatch(/\[advisory\]\s+coffer-target-not-source-storage/);
    expect(configured.code).not.toBe(0);
  });
});
