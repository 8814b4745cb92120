import { promises as fs } from "node:fs";
import * as path from "node:path";
import { fileSha256 } from "../../provider/agent/image";
import { provider } from "../../provider/backupSet";
import { makeRawDisk } from "../support/disks";
import { makeTarget } from "../support/targets";
import { runCoffer } from "../support/cofferCli";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const PASSPHRASE = "binding-test-passphrase-42";
const tempDir = useTempDir();

/** `coffer <args>` with the passphrase in the environment. */
const coffer = (args: string[]) => runCoffer(args, { COFFER_PASSPHRASE: PASSPHRASE });

/** One encrypted set of one source named "vm-root" under a shared policy, as the provider makes it. */
async function takeSet(target: string, disk: string, trigger: string) {
  const news = {
    policy: {
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: target },
      compression: "zstd",
      integrityCheck: "none",
      bandwidthLimitMiBps: 0,
      encrypted: true,
    },
    keys: { passphrase: PASSPHRASE },
    sources: [{ name: "vm-root", disk }],
    trigger,
  };
  const checked = await provider.check({}, news);
  expect(checked.failures).toBeUndefined();
  return provider.create(checked.inputs);
}

describe("a set's manifest is bound to its folder and to what Pulumi recorded", () => {
  test("set A's manifest and backup copied into set B's folder: refresh, verify and restore of B all refuse", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const diskA = path.join(tempDir(), "a.raw");
    const diskB = path.join(tempDir(), "b.raw");
    await makeRawDisk(diskA, 4);
    await makeRawDisk(diskB, 4);
    const a = await takeSet(target, diskA, "monday");
    const b = await takeSet(target, diskB, "tuesday");
    const [pointA, pointB] = [path.dirname(a.outs.manifestPath), path.dirname(b.outs.manifestPath)];
    for (const file of ["manifest.json", "vm-root.qcow2.luks"])
      await fs.copyFile(path.join(pointA, file), path.join(pointB, file));
    const [idA, idB] = [a.outs.points[0].id, b.outs.points[0].id];

    const refreshed = await provider.read(b.id, b.outs);
    expect(refreshed.props.verification).toMatchObject({
      status: "failed",
      failures: [
        expect.stringMatching(
          new RegExp(`^point ${idB}: .*belongs to point ${idA}, not to this folder's point ${idB}`),
        ),
      ],
    });
    expect(await provider.diff(b.id, refreshed.props, b.outs)).toMatchObject({ changes: true, replaces: [] });

    const verify = await coffer(["verify", "--manifest", b.outs.manifestPath]);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toMatch(/belongs to point/);

    const to = path.join(tempDir(), "restored.raw");
    const restore = await coffer(["restore", "--manifest", b.outs.manifestPath, "--item", "vm-root", "--to", to]);
    expect(restore.code).toBe(1);
    expect(restore.stderr).toMatch(/belongs to point .*restore from the set's own folder/);
    await expect(fs.access(to)).rejects.toThrow();
    // A's own set still restores, to A's disk.
    expect((await coffer(["restore", "--manifest", a.outs.manifestPath, "--item", "vm-root", "--to", to])).code).toBe(
      0,
    );
    expect(await fileSha256(to)).toBe(await fileSha256(diskA));
  });

  test("refresh compares the manifest's hashes with the state's: a set that is not the one recorded failed", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "a.raw");
    await makeRawDisk(disk, 4);
    const { id, outs } = await takeSet(target, disk, "monday");
    expect((await provider.read(id, outs)).props.verification).toMatchObject({ status: "ok" });
    // State that recorded other content for the same set id (as if the set had been re-signed since).
    const recorded = {
      ...outs,
      points: outs.points.map((point: object) => ({ ...point, itemsSha256: "f".repeat(64) })),
    };
    expect((await provider.read(id, recorded)).props.verification).toMatchObject({
      status: "failed",
      failures: [
        `point ${outs.points[0].id}: manifest: its items (files, sizes or hashes) differ from what Pulumi recorded`,
      ],
    });
  });
});

describe("files a backup and a restore write", () => {
  test("backups and restored disks are 0600; restore refuses an existing file without --force; of two restores to one path one fails", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "a.raw");
    await makeRawDisk(disk, 4);
    const { outs } = await takeSet(target, disk, "monday");
    const pointDir = path.dirname(outs.manifestPath);
    for (const file of await fs.readdir(pointDir))
      expect([file, (await fs.stat(path.join(pointDir, file))).mode & 0o777]).toEqual([file, 0o600]);

    const to = path.join(tempDir(), "restored.raw");
    const restore = (extra: string[] = []) =>
      coffer(["restore", "--manifest", outs.manifestPath, "--item", "vm-root", "--to", to, ...extra]);
    expect((await restore()).code).toBe(0);
    expect((await fs.stat(to)).mode & 0o777).toBe(0o600);

    await fs.writeFile(to, "the disk someone was working on");
    const refused = await restore();
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/already exists: restore to another path, or add --force/);
    expect(await fs.readFile(to, "utf8")).toBe("the disk someone was working on");
    expect((await restore(["--force"])).code).toBe(0);
    expect(await fileSha256(to)).toBe(await fileSha256(disk));

    await fs.rm(to);
    const both = await Promise.all([restore(), restore()]);
    expect(both.map((r) => r.code).sort()).toEqual([0, 1]);
    expect(await fileSha256(to)).toBe(await fileSha256(disk));
    expect((await fs.readdir(tempDir())).filter((f) => f.includes(".partial-"))).toEqual([]);
  });
});
