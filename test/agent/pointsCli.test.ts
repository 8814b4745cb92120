import { promises as fs } from "node:fs";
import * as path from "node:path";
import { provider } from "../../provider/backupSet";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const tempDir = useTempDir();

/** A set of three points taken with the real agent; the first held. */
async function threePoints() {
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  const disk = path.join(tempDir(), "d.raw");
  await makeRawDisk(disk, 4);
  const declared = (trigger: string) => ({
    policy: {
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: target },
      compression: "none",
      integrityCheck: "none",
      bandwidthLimitMiBps: 0,
      encrypted: false,
    },
    keys: { manifestKey: "bWFuaWZlc3Qta2V5" },
    sources: [{ name: "vm-root", disk }],
    trigger,
  });
  const checked = async (trigger: string, extra: object = {}) =>
    (await provider.check({}, { ...declared(trigger), ...extra })).inputs;
  let { id, outs } = await provider.create(await checked("t1"));
  const first = (outs as BackupSetOutputs).points[0].id;
  const holds = [{ point: first, reason: "case 4711" }];
  for (const trigger of ["t2", "t3"]) {
    outs = (await provider.update(id, outs, await checked(trigger, { holds }))).outs;
  }
  return { target, id, outs: outs as BackupSetOutputs, first, checked: () => checked("t3", { holds }) };
}

describe("coffer list and coffer prune, from the target alone", () => {
  test("list shows every point with its status, hold and size; prune keeps the held and newest, and refresh follows", async () => {
    const { target, id, outs, first } = await threePoints();
    const [, second, third] = outs.points.map((p) => p.id);

    const listed = await runCoffer(["list", "--target", target, "--json"]);
    expect(listed.code).toBe(0);
    const { points } = JSON.parse(listed.stdout);
    expect(points.map((p: { point: string; status: string; held?: string }) => [p.point, p.status, p.held])).toEqual([
      [first, "ok", "case 4711"],
      [second, "ok", undefined],
      [third, "ok", undefined],
    ]);
    const table = await runCoffer(["list", "--target", target]);
    expect(table.stdout.split("\n")[0]).toMatch(/^SET\s+POINT\s+TAKEN\s+SIZE\s+STATUS\s+HOLD\s+ESCROW$/);
    expect(table.stdout).toContain(`zone-a/${id}  ${first}`);

    const args = ["prune", "--target", target, "--zone", "zone-a", "--set", id, "--keep-last", "1"];
    const dry = await runCoffer([...args, "--dry-run"]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`would prune ${second}: `);
    expect(dry.stdout).toMatch(new RegExp(`keep ${first}: held: case 4711`));
    expect(await fs.readdir(outs.setDir)).toContain(second);

    const pruned = await runCoffer(args);
    expect(pruned.code).toBe(0);
    expect((await fs.readdir(outs.setDir)).sort()).toEqual([first, third, "index.json"].sort());

    const held = await runCoffer(["prune", "--target", target, "--zone", "zone-a", "--set", id, "--point", first]);
    expect(held.code).toBe(1);
    expect(held.stderr).toMatch(new RegExp(`point ${first} is held \\(case 4711\\): remove the hold`));

    const refreshed = await provider.read(id, outs);
    expect((refreshed.props as BackupSetOutputs).points.map((p) => p.id)).toEqual([first, third]);
    expect(refreshed.props.verification.status).toBe("ok");
  });

  test("a missing index is rebuilt from the manifests; unchecked points are listed and never pruned", async () => {
    const { target, id, outs } = await threePoints();
    await fs.rm(path.join(outs.setDir, "index.json"));
    const { points } = JSON.parse((await runCoffer(["list", "--target", target, "--set", id, "--json"])).stdout);
    expect(points.map((p: { status: string }) => p.status)).toEqual(["unchecked", "unchecked", "unchecked"]);
    const pruned = await runCoffer(["prune", "--target", target, "--zone", "zone-a", "--set", id, "--keep-last", "1"]);
    expect(pruned.stdout).toMatch(/kept, not verified since the index was rebuilt: /);
    expect((await fs.readdir(outs.setDir)).filter((f) => f !== "index.json")).toHaveLength(3);
  });
});
