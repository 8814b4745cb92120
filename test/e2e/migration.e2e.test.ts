import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { previousRelease } from "../support/previousRelease";
import { pulumiCliReady } from "../support/pulumiCli";
import { stackProject } from "../support/stackProject";
import { SET_SCHEMA_VERSION } from "../../provider/backupSet/state";

jest.setTimeout(900_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const PASSPHRASE = "KNOWN-migration-e2e-passphrase";

// A program both releases run unchanged: only inputs 0.2 already had.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const policy = new coffer.BackupPolicy("gold", {
  zone: "gold",
  target: { kind: "directory", path: spec.target },
  compression: "zstd",
  encryption: { passphrase: config.requireSecret("passphrase") },
  integrityCheck: "metadata",
  retention: { keepLast: 7 },
});
const set = new coffer.EncryptedBackupSet("nightly", { policy, sources: [{ name: "vm-root", disk: spec.disk }], trigger: spec.trigger });
exports.set = { setId: set.setId, setDir: set.setDir, manifestPath: set.manifestPath, points: set.points };
`;

const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex");

describeE2e("a stack made with the previous release (0.2), then refreshed and updated with this one", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let work: string;

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-migration-e2e-"));
    env = await stackProject(PROGRAM, {}, { nodeModules: path.join(await previousRelease(), "node_modules") });
    env.setSecretConfig("passphrase", PASSPHRASE);
  });
  afterAll(async () => {
    await env?.stack.destroy().catch(() => undefined);
    await env?.remove();
    await fs.rm(work, { recursive: true, force: true });
  });

  test("the backup is kept as the set's first point, verifies, restores, and a second point is taken beside it", async () => {
    const disk = path.join(work, "vm.raw");
    await makeRawDisk(disk, 4);
    const original = await sha256(disk);
    const target = path.join(work, "target");
    await fs.mkdir(target);
    const declare = (trigger: string) =>
      env.stack.setConfig("spec", { value: JSON.stringify({ target, disk, trigger }) });
    await declare("2026-11-24");
    expect((await env.stack.up()).summary.result).toBe("succeeded");
    const before = (await env.stack.outputs()).set.value;
    // What 0.2 made: one set, its manifest in the set's folder, no points.
    expect(before.points).toBeUndefined();
    expect(before.manifestPath).toBe(path.join(before.setDir, "manifest.json"));

    await env.useThisCoffer();
    const refresh = await env.stack.refresh();
    expect(refresh.summary.result).toBe("succeeded");
    // Refresh does not run the program: the set's state shows what this release read.
    const refreshed = env
      .exportedState()
      .deployment.resources.find((r: { type: string }) => r.type.endsWith(":EncryptedBackupSet")).outputs;
    expect(refreshed).toMatchObject({
      setId: before.setId,
      schemaVersion: SET_SCHEMA_VERSION,
      verification: { status: "ok" },
    });
    expect(refreshed.points).toEqual([expect.objectContaining({ id: before.setId, status: "ok", key: 1 })]);
    // Nothing is replaced or deleted (the policy's retention reaching the set shows as its update).
    const preview = (await env.stack.preview()).changeSummary;
    expect(preview.replace).toBeUndefined();
    expect(preview.delete).toBeUndefined();

    // A new trigger takes a point by update: the old backup stays, in its folder.
    await fs.writeFile(disk, Buffer.alloc(1 << 20, 7), { flag: "r+" });
    await declare("2026-11-25");
    const up = await env.stack.up();
    expect(up.summary.resourceChanges).toMatchObject({ update: 1 });
    expect(up.summary.resourceChanges?.replace).toBeUndefined();
    const set = (await env.stack.outputs()).set.value;
    expect(set.setId).toBe(before.setId);
    expect(set.points.map((p: { status: string }) => p.status)).toEqual(["ok", "ok"]);
    expect(set.points[0].id).toBe(before.setId);
    expect(set.manifestPath).toBe(path.join(before.setDir, set.points[1].id, "manifest.json"));

    const restored = path.join(work, "restored.raw");
    const args = ["restore", "--manifest", before.manifestPath, "--item", "vm-root", "--to", restored, "--quiet"];
    expect(await runCoffer(args, { COFFER_PASSPHRASE: PASSPHRASE })).toMatchObject({ code: 0 });
    expect(await sha256(restored)).toBe(original);
    const listed = JSON.parse((await runCoffer(["list", "--target", target, "--json"])).stdout);
    expect(listed.points.map((p: { point: string }) => p.point)).toEqual(set.points.map((p: { id: string }) => p.id));
  });
});
