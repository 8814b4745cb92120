import { execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { x25519Pair } from "../support/escrowKeys";
import { pulumiCliReady } from "../support/pulumiCli";
import { stackProject } from "../support/stackProject";

jest.setTimeout(600_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const repoRoot = path.resolve(__dirname, "../..");
const PACK = path.join(repoRoot, "policy-pack");

// A policy whose settings, escrow and set's disk come from stack config, so each case is one preview.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const spec = new pulumi.Config().requireObject("spec");
const escrow = spec.threshold === undefined ? undefined : new coffer.SecretEscrow("zone-passphrase", {
  secret: "KNOWN-policy-pack-e2e-passphrase",
  recipients: spec.recipients,
  threshold: spec.threshold,
  store: { kind: "directory", path: spec.store },
});
const policy = new coffer.BackupPolicy("gold", {
  zone: "gold",
  target: { kind: "directory", path: spec.target },
  encryption: { passphrase: "KNOWN-policy-pack-e2e-passphrase" },
  escrow,
  retention: spec.retention,
});
new coffer.EncryptedBackupSet("nightly", { policy, sources: [{ name: "vm-1-root", disk: spec.disk }], trigger: "t1" });
`;

describeE2e("Coffer's policy pack with the real Pulumi CLI", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let good: Record<string, unknown>;

  beforeAll(async () => {
    env = await stackProject(PROGRAM);
    const dirs = Object.fromEntries(
      await Promise.all(
        ["target", "store", "disks"].map(async (d) => {
          await fs.mkdir(path.join(env.root, d));
          return [d, path.join(env.root, d)] as const;
        }),
      ),
    );
    good = {
      target: dirs.target,
      store: dirs.store,
      disk: path.join(dirs.disks, "vm-1.raw"),
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
    try {
      const out = execFileSync(
        "pulumi",
        ["preview", "--policy-pack", PACK, ...extraArgs, "--stack", "e2e", "--non-interactive", "--color", "never"],
        {
          cwd: env.project,
          env: { ...process.env, ...env.stack.workspace.envVars, PULUMI_HOME: path.join(env.root, "home") },
          stdio: "pipe",
        },
      );
      return { code: 0, output: out.toString() };
    } catch (error) {
      const e = error as { status: number; stdout: Buffer; stderr: Buffer };
      return { code: e.status, output: `${e.stdout}${e.stderr}` };
    }
  }

  it("fails a preview with each broken rule, the resource and the fix; passes once fixed", async () => {
    const bad = await preview({
      ...good,
      threshold: 1,
      retention: { keepDaily: 3 },
      disk: path.join(good.target as string, "vm-1.raw"),
    });
    expect(bad.code).not.toBe(0);
    expect(bad.output).toContain("coffer@v0.4.0");
    expect(bad.output).toMatch(
      /\[mandatory\]\s+coffer-encrypted-policy-escrow\s+\(pulumi-nodejs:dynamic\/coffer:SecretEscrow: zone-passphrase\)/,
    );
    expect(bad.output).toContain('escrows its passphrase in SecretEscrow "zone-passphrase" with threshold 1');
    expect(bad.output).toContain("Fix: set `threshold: 2`");
    expect(bad.output).toMatch(/coffer-retention-min-days\s+\(pulumi-nodejs:dynamic\/coffer:BackupPolicy: gold\)/);
    expect(bad.output).toContain('BackupPolicy "gold" keeps 3 day(s) of points; this stack requires at least 7');
    expect(bad.output).toMatch(
      /coffer-target-not-source-storage\s+\(pulumi-nodejs:dynamic\/coffer:EncryptedBackupSet: nightly\)/,
    );
    expect(bad.output).toContain('backs up disk "vm-1-root" that lies in its policy "gold"\'s target');
    // Policies see secrets in the clear; Coffer's rules never print them.
    expect(bad.output).not.toContain("KNOWN-policy-pack-e2e-passphrase");

    const fixed = await preview(good);
    expect(fixed.output).toContain("✅ coffer@v0.4.0");
    expect(fixed.output).not.toMatch(/coffer-[a-z-]+\s+\(pulumi-nodejs/);
    // No rule was skipped for reading a value unknown in a first preview (that would pass silently).
    expect(fixed.output).not.toContain("can't run policy");
    expect(fixed.code).toBe(0);
  });

  it("flags an encrypted policy without an escrow", async () => {
    const { threshold: _threshold, ...noEscrow } = good;
    const result = await preview(noEscrow);
    expect(result.code).not.toBe(0);
    expect(result.output).toContain('BackupPolicy "gold" is encrypted but has no escrow');
  });

  it("takes each rule's settings from --policy-pack-config", async () => {
    const config = path.join(env.root, "policy-config.json");
    await fs.writeFile(
      config,
      JSON.stringify({
        "coffer-encrypted-policy-escrow": { minThreshold: 3 },
        "coffer-retention-min-days": { minDays: 3 },
        "coffer-target-not-source-storage": "advisory",
      }),
    );
    const result = await preview(
      { ...good, retention: { keepDaily: 3 }, disk: path.join(good.target as string, "vm-1.raw") },
      ["--policy-pack-config", config],
    );
    expect(result.output).toContain("this stack requires at least 3. Fix: set `threshold: 3`");
    expect(result.output).not.toContain("coffer-retention-min-days");
    expect(result.output).toMatch(/\[advisory\]\s+coffer-target-not-source-storage/);
    expect(result.code).not.toBe(0);
  });
});
