import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { makeRawDisk } from "../support/disks";
import { pulumiCliReady } from "../support/pulumiCli";
import { filesContaining, stackProject } from "../support/stackProject";

jest.setTimeout(900_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const PASSPHRASE = "KNOWN-drill-e2e-passphrase-5c1f";

// One set and a drill of it, as a platform team declares them.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const policy = new coffer.BackupPolicy("gold", {
  zone: "gold",
  target: { kind: "directory", path: spec.target },
  encryption: { passphrase: config.requireSecret("passphrase") },
  integrityCheck: "metadata",
});
const set = new coffer.EncryptedBackupSet("nightly", {
  policy,
  sources: [{ name: "vm-root", disk: spec.disk }],
  trigger: "t1",
});
const drill = new coffer.RestoreDrill("weekly", { sets: [set] });
exports.manifestPath = set.manifestPath;
exports.drill = { status: drill.status, results: drill.results, failures: drill.failures };
`;

describeE2e("RestoreDrill through the real Pulumi engine: drills on up, drift on refresh", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let work: string;
  const log = { output: "" };
  const record = { onOutput: (out: string) => (log.output += out) };
  const outputs = async () =>
    Object.fromEntries(Object.entries(await env.stack.outputs()).map(([k, v]) => [k, v.value]));

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-drill-e2e-"));
    await fs.mkdir(path.join(work, "target"));
    const disk = path.join(work, "vm.raw");
    await makeRawDisk(disk, 4);
    env = await stackProject(PROGRAM);
    env.setSecretConfig("passphrase", PASSPHRASE);
    await env.stack.setConfig("spec", { value: JSON.stringify({ target: path.join(work, "target"), disk }) });
  });
  afterAll(async () => {
    await env?.stack.destroy().catch(() => undefined);
    await env?.remove();
    await fs.rm(work, { recursive: true, force: true });
  });

  test("a good point drills ok; a flipped byte is drift on refresh, named; the next up drills the new point", async () => {
    expect((await env.stack.up(record)).summary.result).toBe("succeeded");
    const first = await outputs();
    expect(first.drill).toMatchObject({
      status: "ok",
      failures: [],
      results: [{ set: "nightly", ok: true, checks: { manifest: "ok", hash: "ok", qemuImgCheck: "ok" } }],
    });
    // Every up drills again: a preview says the drill will run.
    expect((await env.stack.preview()).changeSummary).toMatchObject({ update: 1 });

    const stored = path.join(path.dirname(first.manifestPath), "vm-root.qcow2.luks");
    const bytes = await fs.readFile(stored);
    bytes[bytes.length >> 1] ^= 0x01;
    await fs.writeFile(stored, bytes);

    expect((await env.stack.refresh(record)).summary.result).toBe("succeeded");
    // Refresh updates the resources' state (stack outputs change only on up).
    const drifted = env
      .exportedState()
      .deployment.resources.find((r: { type: string }) => r.type.endsWith("coffer:RestoreDrill")).outputs;
    const point = first.drill.results[0].pointId;
    expect(drifted.status).toBe("failed");
    expect(drifted.failures).toEqual([
      expect.stringMatching(new RegExp(`^set nightly \\(.*\\) point ${point}: hash: item vm-root: `)),
    ]);
    // What a review of the next preview sees: the drill's status back to "ok" is the change.
    const diff = env.cli(["preview", "--diff", "--non-interactive"]);
    expect(diff).toMatch(/status\s*:\s*"failed" => "ok"/);

    // The set's refresh saw it too: the next up takes a new point (keeping the damaged one), and the
    // drill, run after the set, drills that one.
    expect((await env.stack.up(record)).summary.result).toBe("succeeded");
    const healed = await outputs();
    expect(healed.drill).toMatchObject({ status: "ok", failures: [], results: [{ ok: true }] });
    expect(healed.drill.results[0].pointId).not.toBe(point);
    expect(log.output).not.toContain(PASSPHRASE);
    expect(await filesContaining(env.root, PASSPHRASE)).toEqual([]);
  });
});
