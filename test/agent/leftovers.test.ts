import { execFile, spawnSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { backupItem, sweepLeftovers, writeManifest } from "../../provider/agent/backupSet";
import { MANIFEST_KIND } from "../../provider/agent/manifest";
import { bootId } from "../../provider/agent/setOwner";
import { makeRawDisk } from "../support/disks";
import { useTempDir } from "../support/tempDir";
import { promisify } from "node:util";

jest.setTimeout(180_000);
const tempDir = useTempDir();
const zoneDir = () => path.join(tempDir(), "target", "sets", "zone-a");

/** The pid of a process that has exited. */
function deadPid(): number {
  const child = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" });
  return Number(child.stdout.trim());
}

async function item(setId: string, owner: { host: string; pid: number; bootId: string } | undefined) {
  const disk = path.join(tempDir(), `${setId}.raw`);
  await makeRawDisk(disk, 4);
  return backupItem({
    zoneDir: zoneDir(),
    setId,
    name: "vm-root",
    source: { disk },
    compression: "none",
    encrypted: false,
    bandwidthLimitMiBps: 0,
    integrityCheck: "none",
    owner,
  });
}

describe("what a crash leaves in the zone's set folders", () => {
  test("a finished backup in a folder without a manifest, whose owner is dead, is removed by the next run", async () => {
    await item("crashed", { host: os.hostname(), pid: deadPid(), bootId: bootId() });
    expect((await fs.readdir(path.join(zoneDir(), "crashed"))).sort()).toEqual([
      expect.stringMatching(/^\.owner-/),
      "vm-root.qcow2",
    ]);
    // From a boot before this one: dead, whatever process has that number now.
    await item("before-reboot", { host: os.hostname(), pid: process.pid, bootId: "an-earlier-boot" });

    await item("next", { host: os.hostname(), pid: process.pid, bootId: bootId() });
    expect((await fs.readdir(zoneDir())).sort()).toEqual(["next"]);
  });

  test("a folder still being made, one owned on another host, one of an older Coffer and a whole set are kept", async () => {
    const alive = { host: os.hostname(), pid: process.pid, bootId: bootId() };
    await item("in-progress", alive);
    await item("other-host", { host: "kvm-99", pid: deadPid(), bootId: "another-host's-boot" });
    await item("older-coffer", undefined);
    const whole = await item("whole", { host: os.hostname(), pid: deadPid(), bootId: bootId() });
    await writeManifest(
      path.join(zoneDir(), "whole"),
      {
        kind: MANIFEST_KIND,
        schemaVersion: 2,
        setId: "whole",
        name: "n",
        trigger: "t",
        zone: "zone-a",
        policy: { compression: "none", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "none" },
        keySource: "manifest-key",
        qemuVersion: "7.2",
        createdAt: new Date().toISOString(),
        items: [whole],
      },
      "bWFuaWZlc3Qta2V5",
    );
    // Writing the manifest clears the marker: the folder is a set now.
    expect((await fs.readdir(path.join(zoneDir(), "whole"))).sort()).toEqual(["manifest.json", "vm-root.qcow2"]);

    expect(await sweepLeftovers(zoneDir())).toEqual([]);
    expect((await fs.readdir(zoneDir())).sort()).toEqual(["in-progress", "older-coffer", "other-host", "whole"]);
    for (const set of ["in-progress", "older-coffer", "other-host", "whole"]) {
      expect(await fs.readdir(path.join(zoneDir(), set))).toContain("vm-root.qcow2");
    }
  });
});

describe("coffer sets: what is on a target, and which complete sets no stack tracks", () => {
  test("given the stack's export, a complete set that it does not record is named untracked", async () => {
    const sign = async (setId: string) => {
      const made = await item(setId, { host: os.hostname(), pid: process.pid, bootId: bootId() });
      await writeManifest(
        path.join(zoneDir(), setId),
        {
          kind: MANIFEST_KIND,
          schemaVersion: 2,
          setId,
          name: "n",
          trigger: "t",
          zone: "zone-a",
          policy: { compression: "none", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "none" },
          keySource: "manifest-key",
          qemuVersion: "7.2",
          createdAt: "2026-11-24T03:00:00.000Z",
          items: [made],
        },
        "bWFuaWZlc3Qta2V5",
      );
    };
    await sign("tracked-set");
    await sign("untracked-set");
    await item("crashed-set", { host: os.hostname(), pid: deadPid(), bootId: bootId() });
    const exported = path.join(tempDir(), "stack.json");
    await fs.writeFile(
      exported,
      JSON.stringify({
        version: 3,
        deployment: {
          resources: [
            { type: "pulumi:pulumi:Stack", outputs: {} },
            {
              type: "pulumi-nodejs:dynamic/coffer:EncryptedBackupSet",
              outputs: { setId: "tracked-set", setDir: path.join(zoneDir(), "tracked-set") },
            },
          ],
        },
      }),
    );
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [
      path.join(__dirname, "../../bin/coffer.js"),
      "sets",
      "--target",
      path.join(tempDir(), "target"),
      "--state",
      exported,
    ]);
    expect(
      JSON.parse(stdout).sets.map((s: { setId: string; status: string; tracked: boolean }) => [
        s.setId,
        s.status,
        s.tracked,
      ]),
    ).toEqual([
      ["crashed-set", "crashed", false],
      ["tracked-set", "complete", true],
      ["untracked-set", "complete", false],
    ]);
    expect(stderr).toMatch(/1 complete set\(s\) that no given stack tracks: .*untracked-set\n/);
    expect(stderr).toMatch(/1 unfinished set folder\(s\) left by a crash/);
  });
});
