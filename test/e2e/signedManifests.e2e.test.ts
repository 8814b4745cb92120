import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { pulumiCliReady } from "../support/pulumiCli";
import { filesContaining } from "../support/secretScan";
import { ed25519Pair } from "../support/signingKeys";
import { stackProject, watchCommandLines } from "../support/stackProject";

jest.setTimeout(1_200_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const PASSPHRASE = "KNOWN-signed-e2e-passphrase";

// One signed policy and one set; the key, the trigger and the target from stack config.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const policy = new coffer.BackupPolicy("gold", {
  zone: "gold",
  target: { kind: "directory", path: spec.target },
  encryption: { passphrase: config.requireSecret("passphrase") },
  signing: { privateKey: config.requireSecret("signingKey") },
  integrityCheck: "metadata",
  reverifyAfterDays: 0.00001,
});
const set = new coffer.EncryptedBackupSet("nightly", {
  policy,
  sources: [{ name: "vm-root", disk: spec.disk }],
  trigger: spec.trigger,
});
exports.signingPublicKey = policy.signingPublicKey;
exports.set = { setDir: set.setDir, points: set.points, verification: set.verification, signers: set.signers };
`;

describeE2e("signed manifests through the real Pulumi engine: verify by public key, rotation, refresh drift", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let work: string;
  let spec: Record<string, unknown>;
  const first = ed25519Pair();
  const second = ed25519Pair();
  const declare = (change: Record<string, unknown>) => {
    spec = { ...spec, ...change };
    return env.stack.setConfig("spec", { value: JSON.stringify(spec) });
  };
  const outputs = async () => {
    const all = await env.stack.outputs();
    return { publicKey: all.signingPublicKey.value, set: all.set.value };
  };

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-signed-e2e-"));
    const disk = path.join(work, "vm.raw");
    await makeRawDisk(disk, 4);
    await fs.mkdir(path.join(work, "target"));
    env = await stackProject(PROGRAM);
    env.setSecretConfig("passphrase", PASSPHRASE);
    env.setSecretConfig("signingKey", first.privateKey);
    spec = { target: path.join(work, "target"), disk, trigger: "t1" };
    await declare({});
  });
  afterAll(async () => {
    await env?.stack.destroy().catch(() => undefined);
    await env?.remove();
    await fs.rm(work, { recursive: true, force: true });
  });

  test("the walk", async () => {
    const keyBodies = [first, second].map((pair) => pair.privateKey.split("\n")[1]);
    const { result: up, commandLines } = await watchCommandLines(() => env.stack.up());
    expect(up.summary.result).toBe("succeeded");
    const leaked = (text: string) => keyBodies.filter((body) => text.includes(body));
    expect([...commandLines].flatMap(leaked)).toEqual([]);
    expect(leaked(up.stdout + up.stderr)).toEqual([]);

    let { publicKey, set } = await outputs();
    expect(publicKey.pem).toBe(first.publicKey);
    const [p1] = set.points;
    expect(p1.signedBy).toBe(publicKey.fingerprint);
    const firstFingerprint = publicKey.fingerprint;

    // The public key from the stack's outputs checks the point, no passphrase needed.
    const keyFile = path.join(work, "signing.pub");
    await fs.writeFile(keyFile, publicKey.pem);
    const manifestOf = (point: string) => path.join(set.setDir, point, "manifest.json");
    const verified = await runCoffer(["verify", "--manifest", manifestOf(p1.id), "--public-key", keyFile]);
    expect(verified).toMatchObject({ code: 0 });
    expect(JSON.parse(verified.stdout)).toMatchObject({ status: "ok" });

    // A new key: the next point is signed with it; the first keeps being checked with its own.
    env.setSecretConfig("signingKey", second.privateKey);
    await declare({ trigger: "t2" });
    expect((await env.stack.up()).summary.result).toBe("succeeded");
    ({ publicKey, set } = await outputs());
    expect(set.points.map((p: { signedBy: string }) => p.signedBy)).toEqual([firstFingerprint, publicKey.fingerprint]);
    expect(set.signers).toHaveLength(2);
    const refreshed = await env.stack.refresh();
    expect(refreshed.summary.result).toBe("succeeded");
    // Stack outputs keep the last up's values; refresh writes the resource's state.
    const setState = () =>
      env.exportedState().deployment.resources.find((r: { urn: string }) => r.urn.endsWith("::nightly")).outputs;
    set = setState();
    // Both points were checked again (reverifyAfterDays is below a second), each with its own key.
    expect(set.points.map((p: { checkedAt: string }) => p.checkedAt > p1.checkedAt)).toEqual([true, true]);
    expect(set.verification).toMatchObject({ status: "ok", failures: [] });

    // The first point's manifest changed on the target: refresh shows it as drift, naming the signature.
    const manifest = JSON.parse(await fs.readFile(manifestOf(p1.id), "utf8"));
    manifest.manifest.items[0].fileSha256 = "0".repeat(64);
    await fs.writeFile(manifestOf(p1.id), JSON.stringify(manifest, null, 2));
    expect((await env.stack.refresh()).summary.result).toBe("succeeded");
    set = setState();
    expect(set.points[0]).toMatchObject({ id: p1.id, status: "failed" });
    expect(set.verification.failures[0]).toMatch(
      new RegExp(`^point ${p1.id}: manifest: its Ed25519 signature \\(key SHA256:\\S+\\) does not match`),
    );

    // The private keys are nowhere in plaintext state.
    expect(await filesContaining(path.join(env.root, "state"), keyBodies[0])).toEqual([]);
    expect(await filesContaining(path.join(env.root, "state"), keyBodies[1])).toEqual([]);
    expect(leaked(JSON.stringify(env.exportedState()))).toEqual([]);
  });
});
