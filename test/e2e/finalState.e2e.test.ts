import { createHash } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { readManifest } from "../../provider/agent/manifest";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { x25519Pair } from "../support/escrowKeys";
import { pulumiCliReady } from "../support/pulumiCli";
import { RunningVm, startVm } from "../support/qemuVm";
import { ed25519Pair } from "../support/signingKeys";
import { TestSshd, startSshd } from "../support/sshd";
import { filesContaining, stackProject } from "../support/stackProject";

jest.setTimeout(1_200_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const repoRoot = path.resolve(__dirname, "../..");
const PASSPHRASE = "KNOWN-final-e2e-passphrase-7d2e";

// A VM as a platform's program declares one, with a FinalStateBackup that depends on it. The VM is a
// QEMU the test started; deleting its resource kills it, as deleting a real VM's resource stops it.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const vmProvider = {
  async create(inputs) { return { id: "qemu-" + inputs.pid, outs: inputs }; },
  async delete(id, props) { try { process.kill(props.pid, "SIGKILL"); } catch (e) {} },
};
class TestVm extends pulumi.dynamic.Resource {
  constructor(name, args) { super(vmProvider, name, args); }
}
const vm = new TestVm("web-1", { pid: spec.vmPid, qmpSocket: spec.qmpSocket });
const forensics = new coffer.BackupPolicy("forensics", {
  zone: "forensics",
  target: { kind: "directory", path: spec.target },
  encryption: { passphrase: config.requireSecret("passphrase") },
  signing: { privateKey: config.requireSecret("signingKey") },
  compression: "zstd",
  integrityCheck: "full",
});
const finalState = new coffer.FinalStateBackup("web-1-final", {
  vm: { qmpSocket: vm.qmpSocket, devices: ["vda"], host: spec.host },
  policy: forensics,
  recipients: [{ name: "forensics", publicKey: spec.recipientKey }],
  threshold: 1,
  holdDays: 90,
  reason: "security",
});
exports.setId = finalState.setId;
`;

const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex");

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describeE2e("FinalStateBackup end to end: destroying a running VM's stack keeps its final state", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let vm: RunningVm;
  let sshd: TestSshd;
  let work: string;
  let disk: string;
  const signing = ed25519Pair();
  const recipient = x25519Pair();
  const log = { output: "" };
  const record = { onOutput: (out: string) => (log.output += out) };

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-final-e2e-"));
    await fs.mkdir(path.join(work, "target"));
    disk = path.join(work, "web-1.raw");
    await makeRawDisk(disk, 8);
    vm = await startVm(work, disk, "raw", { running: true });
    sshd = await startSshd(path.join(work, "ssh"));
    env = await stackProject(PROGRAM, {
      COFFER_SSH_CONFIG: sshd.configFile,
      COFFER_REMOTE_AGENT: `PATH=${path.dirname(process.execPath)}:$PATH ${process.execPath} ${path.join(repoRoot, "bin/coffer-agent.js")}`,
    });
    env.setSecretConfig("passphrase", PASSPHRASE);
    env.setSecretConfig("signingKey", signing.privateKey);
    const spec = {
      target: path.join(work, "target"),
      vmPid: vm.process.pid,
      qmpSocket: vm.qmpSocket,
      host: sshd.alias,
      recipientKey: recipient.publicKey,
    };
    await env.stack.setConfig("spec", { value: JSON.stringify(spec) });
  });
  afterAll(async () => {
    await env?.stack.destroy().catch(() => undefined);
    await vm?.stop();
    await sshd?.stop();
    await env?.remove();
    await fs.rm(work, { recursive: true, force: true });
  });

  test("a failed final backup blocks the VM's deletion; then destroy takes a sealed, signed, held final point", async () => {
    const up = await env.stack.up(record);
    expect(up.summary.result).toBe("succeeded");
    const setId = (await env.stack.outputs()).setId.value as string;
    const target = path.join(work, "target");

    // The target's disk is not mounted (an empty mount point): the final backup fails, so the VM stays.
    await fs.rename(target, `${target}.away`);
    await fs.mkdir(target);
    const failed = await env.stack.destroy(record).catch((error: Error) => error);
    expect(failed).toBeInstanceOf(Error);
    expect(log.output).toMatch(/the final-state backup of the VM of .* failed, so its deletion is blocked/);
    expect(alive(vm.process.pid!)).toBe(true);
    const types = env.exportedState().deployment.resources.map((r: { urn: string }) => r.urn.split("::").pop());
    expect(types).toEqual(expect.arrayContaining(["web-1", "web-1-final", "forensics"]));
    await fs.rmdir(target);
    await fs.rename(`${target}.away`, target);

    // The disk is back: destroy takes the final point while the VM runs, then the VM goes.
    log.output = "";
    const destroyed = await env.stack.destroy(record);
    expect(destroyed.summary.result).toBe("succeeded");
    const exited = vm.process.exitCode !== null || vm.process.signalCode !== null;
    if (!exited) await new Promise((resolve) => vm.process.once("exit", resolve));
    expect(vm.process.signalCode).toBe("SIGKILL");
    expect(log.output).toMatch(/final-state backup of the VM of .*: point \S+ \(.*\) in .*, held until /);

    const setDir = path.join(target, "sets", "forensics", setId);
    const points = (await fs.readdir(setDir)).filter((f) => f !== "index.json");
    expect(points).toHaveLength(1);
    const manifestPath = path.join(setDir, points[0], "manifest.json");
    const read = readManifest(await fs.readFile(manifestPath, "utf8"));
    if (!read.ok) throw new Error(read.problem);
    expect(read.manifest).toMatchObject({
      keySource: "recipients",
      signing: { keyFingerprint: expect.stringMatching(/^SHA256:/) },
      items: [{ name: "vda", host: expect.any(String), source: { kind: "qmp", device: "vda" } }],
      final: {
        reason: "security",
        operation: "delete",
        takenFor: {
          stack: "e2e",
          project: "coffer-e2e",
          urn: "urn:pulumi:e2e::coffer-e2e::pulumi-nodejs:dynamic/coffer:FinalStateBackup::web-1-final",
        },
      },
    });

    // It opens with the recipient's key, byte for byte; not with the policy's passphrase.
    const keyFile = path.join(work, "forensics.pem");
    await fs.writeFile(keyFile, recipient.privateKey, { mode: 0o600 });
    const publicKey = path.join(work, "signing.pub");
    await fs.writeFile(publicKey, signing.publicKey);
    const verified = await runCoffer([
      "verify",
      "--manifest",
      manifestPath,
      "--key",
      keyFile,
      "--public-key",
      publicKey,
    ]);
    expect([verified.code, verified.stderr]).toEqual([0, expect.any(String)]);
    const to = path.join(work, "restored.raw");
    const restore = ["restore", "--manifest", manifestPath, "--item", "vda", "--to", to];
    expect((await runCoffer([...restore, "--key", keyFile])).code).toBe(0);
    expect(await sha256(to)).toBe(await sha256(disk));
    const withPassphrase = await runCoffer([...restore, "--force"], { COFFER_PASSPHRASE: PASSPHRASE });
    expect(withPassphrase.code).not.toBe(0);

    // Held: a person can't prune it before its hold ends.
    const prune = await runCoffer([
      "prune",
      "--target",
      target,
      "--zone",
      "forensics",
      "--set",
      setId,
      "--point",
      points[0],
    ]);
    expect(prune.code).not.toBe(0);
    expect(existsSync(manifestPath)).toBe(true);
    expect(await filesContaining(env.root, PASSPHRASE)).toEqual([]);
  });
});
