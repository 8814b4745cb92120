import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { pulumiCliReady } from "../support/pulumiCli";
import { filesContaining } from "../support/stackProject";

jest.setTimeout(300_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const repoRoot = path.resolve(__dirname, "../..");

describeE2e("the README's demo command (tools/demo.sh) with plain pulumi commands", () => {
  let demoDir: string;
  // Setup already ran (tools/test.sh); rebuilding dist/ now would race the other tiers.
  const demo = (...args: string[]) =>
    promisify(execFile)("bash", ["tools/demo.sh", ...args], {
      cwd: repoRoot,
      env: { ...process.env, COFFER_DEMO_DIR: demoDir, COFFER_DEMO_STACK: "e2e-demo", COFFER_SKIP_SETUP: "1" },
    });

  beforeAll(async () => {
    demoDir = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-demo-"));
  });
  afterAll(async () => {
    await demo("destroy", "--yes").catch(() => undefined);
    await fs.rm(demoDir, { recursive: true, force: true });
  });

  test("up writes the policy, the passphrase's escrow and a verified backup of the generated disk; the escrow recovers the passphrase; destroy leaves target and store empty", async () => {
    const up = await demo();
    expect(up.stdout).toMatch(/\+ 4 created/);
    expect(up.stdout).toMatch(/backupVerification: \{[^}]*status\s*: "ok"/s);
    const doc = JSON.parse(await fs.readFile(path.join(demoDir, "target/.coffer/zones/demo-zone/policy.json"), "utf8"));
    expect(doc.settings).toMatchObject({ compression: "zstd", encryption: { enabled: true }, integrityCheck: "full" });

    await demo("preview", "--diff", "--expect-no-changes");

    const passphrase = (await demo("config", "get", "passphrase")).stdout.trim();
    expect(passphrase.length).toBeGreaterThanOrEqual(24);
    expect(await filesContaining(path.join(demoDir, "state"), passphrase)).toEqual([]);

    const manifest = (await demo("stack", "output", "backupManifest")).stdout.trim();
    const verify = await promisify(execFile)(
      process.execPath,
      [path.join(repoRoot, "bin/coffer.js"), "verify", "--manifest", manifest, "--full"],
      {
        env: { ...process.env, COFFER_PASSPHRASE: passphrase },
      },
    );
    expect(JSON.parse(verify.stdout)).toMatchObject({ status: "ok", level: "full" });

    // The comment in the demo program, followed: the generated private key recovers the passphrase.
    const recovered = await promisify(execFile)(process.execPath, [
      path.join(repoRoot, "bin/coffer.js"),
      "escrow",
      "recover",
      "--store",
      path.join(demoDir, "escrow"),
      "--id",
      "demo-passphrase",
      "--key",
      path.join(demoDir, "escrow-keys/demo-dr-team.pem"),
    ]);
    expect(recovered.stdout).toBe(passphrase + "\n");
    expect(await filesContaining(path.join(demoDir, "escrow"), passphrase)).toEqual([]);
    expect(JSON.parse(await fs.readFile(manifest, "utf8")).manifest.escrow).toMatchObject({
      recordId: "demo-passphrase",
      version: 1,
    });

    await demo("destroy", "--yes");
    // Only the target's identity stays (it is the target's, not the policy's).
    expect(await fs.readdir(path.join(demoDir, "target"))).toEqual([".coffer"]);
    expect(await fs.readdir(path.join(demoDir, "escrow"))).toEqual([]);
    // The demo writes nothing into the repository's root.
    await expect(fs.access(path.join(repoRoot, "Pulumi.e2e-demo.yaml"))).rejects.toThrow();
  });
});
