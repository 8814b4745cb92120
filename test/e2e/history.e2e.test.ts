import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { pulumiCliReady } from "../support/pulumiCli";
import { stackProject } from "../support/stackProject";

jest.setTimeout(1_200_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const FIRST = "KNOWN-history-e2e-first-passphrase";
const SECOND = "KNOWN-history-e2e-second-passphrase";

// One policy and one set (on a 5-second schedule from its second point); everything from stack config.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const policy = new coffer.BackupPolicy("gold", {
  zone: "gold",
  target: { kind: "directory", path: spec.target },
  compression: spec.compression,
  encryption: { passphrase: config.requireSecret("passphrase") },
  integrityCheck: "metadata",
  retention: spec.retention,
  reverifyAfterDays: spec.reverifyAfterDays,
});
const set = new coffer.EncryptedBackupSet(spec.setName || "nightly", {
  policy,
  sources: [{ name: "vm-root", disk: spec.disk }],
  trigger: "2026-11-26",
  schedule: spec.schedule,
  holds: spec.holds,
  deleteBackupsOnDestroy: spec.deleteBackupsOnDestroy,
});
exports.set = { setId: set.setId, setDir: set.setDir, points: set.points, verification: set.verification };
`;

const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeE2e(
  "a set's history through the real Pulumi engine: points, rotation, retention, holds, drift, destroy",
  () => {
    let env: Awaited<ReturnType<typeof stackProject>>;
    let work: string;
    let disk: string;
    let spec: Record<string, unknown>;
    const log = { output: "" };
    const record = { onOutput: (out: string) => (log.output += out) };
    const declare = (change: Record<string, unknown>) => {
      spec = { ...spec, ...change };
      return env.stack.setConfig("spec", { value: JSON.stringify(spec) });
    };
    const outputs = async () => (await env.stack.outputs()).set.value;
    /** The disk's content when each point was taken: each point gets a different first MiB. */
    const contentAt = new Map<string, string>();
    let pointCount = 0;
    /** Changes the disk, waits until the schedule makes a point due, runs `up`, and notes what the point holds. */
    async function takePoint(): Promise<string> {
      const handle = await fs.open(disk, "r+");
      await handle.write(Buffer.alloc(1 << 20, ++pointCount), 0, 1 << 20, 0);
      await handle.close();
      await sleep(5_500);
      const up = await env.stack.up(record);
      expect(up.summary.result).toBe("succeeded");
      const { points } = await outputs();
      const id = points.at(-1).id;
      contentAt.set(id, await sha256(disk));
      return id;
    }
    const restore = async (setDir: string, point: string, passphrase: string) => {
      const to = path.join(work, `restored-${point}.raw`);
      const args = [
        "restore",
        "--manifest",
        path.join(setDir, point, "manifest.json"),
        "--item",
        "vm-root",
        "--to",
        to,
      ];
      const result = await runCoffer([...args, "--force", "--quiet"], { COFFER_PASSPHRASE: passphrase });
      expect(result).toMatchObject({ code: 0 });
      return sha256(to);
    };

    beforeAll(async () => {
      work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-history-e2e-"));
      disk = path.join(work, "vm.raw");
      await makeRawDisk(disk, 4);
      await fs.mkdir(path.join(work, "target"));
      env = await stackProject(PROGRAM);
      env.setSecretConfig("passphrase", FIRST);
      spec = { target: path.join(work, "target"), disk, compression: "zstd" };
      await declare({});
    });
    afterAll(async () => {
      await declare({ deleteBackupsOnDestroy: true }).catch(() => undefined);
      await env?.stack.up().catch(() => undefined);
      await env?.stack.destroy().catch(() => undefined);
      await env?.remove();
      await fs.rm(work, { recursive: true, force: true });
    });

    test("the walk", async () => {
      // An up with nothing due changes nothing; then points accumulate on a 5 s schedule.
      expect((await env.stack.up(record)).summary.result).toBe("succeeded");
      const { setId, setDir } = await outputs();
      const p1 = (await outputs()).points[0].id;
      contentAt.set(p1, await sha256(disk));
      const idle = await env.stack.preview(record);
      expect({ summary: idle.changeSummary, out: idle.stdout }).toMatchObject({ summary: { same: 3 } });
      await declare({ schedule: { every: "5s" } });
      await sleep(5_500);
      const due = await env.stack.preview(record);
      expect({ summary: due.changeSummary, out: due.stdout }).toMatchObject({
        summary: { same: 2, update: 1 },
        out: expect.stringMatching(/set .*: takes a point: last point \d+ s ago; every 5s/),
      });
      const p2 = await takePoint();

      // A compression switch applies from the next point; a passphrase rotation too.
      await declare({ compression: "zlib" });
      const p3 = await takePoint();
      env.setSecretConfig("passphrase", SECOND);
      const p4 = await takePoint();
      let out = await outputs();
      expect(out.setId).toBe(setId);
      expect(out.points.map((p: { id: string; key: number }) => [p.id, p.key])).toEqual([
        [p1, 1],
        [p2, 1],
        [p3, 1],
        [p4, 2],
      ]);
      const manifestOf = async (point: string) =>
        JSON.parse(await fs.readFile(path.join(setDir, point, "manifest.json"), "utf8")).manifest;
      expect((await manifestOf(p2)).policy.compression).toBe("zstd");
      expect((await manifestOf(p3)).policy.compression).toBe("zlib");
      // Every point restores byte for byte, each with the passphrase it was made with.
      for (const [point, passphrase] of [
        [p1, FIRST],
        [p2, FIRST],
        [p3, FIRST],
        [p4, SECOND],
      ]) {
        expect(await restore(setDir, point, passphrase)).toBe(contentAt.get(point));
      }

      // Retention with a hold: preview names exactly what the next up prunes.
      await declare({ retention: { keepLast: 2, keepDaily: 1 }, holds: [{ point: p2, reason: "case 4711" }] });
      await sleep(5_500);
      const preview = await env.stack.preview(record);
      const pruneLine = preview.stdout.split("\n").find((l) => l.includes("prunes")) ?? preview.stdout;
      expect(pruneLine).toMatch(
        new RegExp(`after the new point verifies, prunes 2 point\\(s\\) by retention: ${p1} .*, ${p3} `),
      );
      const p5 = await takePoint();
      out = await outputs();
      expect(out.points.map((p: { id: string }) => p.id)).toEqual([p2, p4, p5]);
      expect((await fs.readdir(setDir)).sort()).toEqual([p2, p4, p5, "index.json"].sort());

      // A flipped byte in an old point is drift for that point alone.
      await declare({ reverifyAfterDays: 0.00001 });
      // The schedule is due again: this up takes a point, and keepLast 2 lets p4 go.
      await env.stack.up(record);
      const p6 = (await outputs()).points.at(-1).id;
      contentAt.set(p6, await sha256(disk));
      const file = path.join(setDir, p2, (await manifestOf(p2)).items[0].file);
      const bytes = await fs.readFile(file);
      bytes[bytes.length >> 1] ^= 0x01;
      await fs.writeFile(file, bytes);
      await sleep(1_000);
      const refresh = await env.stack.refresh(record);
      expect(refresh.summary.resourceChanges).toMatchObject({ update: 1 });
      // Refresh does not run the program (stack outputs stay): the set's state says what it found.
      out = env
        .exportedState()
        .deployment.resources.find((r: { type: string }) => r.type.endsWith(":EncryptedBackupSet")).outputs;
      expect(out.verification).toMatchObject({
        status: "failed",
        failures: [expect.stringMatching(new RegExp(`^point ${p2}: item vm-root: .*changed since the backup`))],
      });
      expect(out.points.map((p: { id: string; status: string }) => [p.id, p.status])).toEqual([
        [p2, "failed"],
        [p5, "ok"],
        [p6, "ok"],
      ]);

      // Destroy keeps the points, says where; coffer list shows them; one restores without Pulumi.
      const destroyed = await env.stack.destroy(record);
      expect(destroyed.summary.result).toBe("succeeded");
      expect(log.output).toContain(`set ${setId}: keeps its 3 point(s)`);
      const listed = await runCoffer(["list", "--target", path.join(work, "target"), "--json"]);
      expect(JSON.parse(listed.stdout).points.map((p: { point: string }) => p.point)).toEqual([p2, p5, p6]);
      expect(await restore(setDir, p5, SECOND)).toBe(contentAt.get(p5));

      // A set whose destroy deletes its points leaves nothing of it.
      await declare({ setName: "weekly", deleteBackupsOnDestroy: true, holds: [], reverifyAfterDays: 30 });
      await env.stack.up(record);
      const weekly = await outputs();
      expect(weekly.setId).not.toBe(setId);
      await env.stack.destroy(record);
      await expect(fs.access(weekly.setDir)).rejects.toThrow();
      expect(await fs.readdir(path.join(work, "target", "sets", "gold"))).toEqual([setId]);
      expect(log.output).not.toContain(FIRST);
      expect(log.output).not.toContain(SECOND);
    });
  },
);
