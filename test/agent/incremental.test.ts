/**
 * Incremental backups of a running VM's qcow2 disk, through the provider and a real QEMU: the
 * first point is full and starts a persistent dirty bitmap; later points copy only what the guest
 * wrote since (writes go through QEMU, HMP qemu-io); every point restores byte for byte with
 * `coffer restore`; a bitmap QEMU could not save (kill -9) makes the next point full, and says why.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { QmpClient } from "../../provider/agent/qmp";
import { readManifest } from "../../provider/agent/manifest";
import { localHost, provider } from "../../provider/backupSet";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import { runCoffer } from "../support/cofferCli";
import { RunningVm, startVm } from "../support/qemuVm";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const PASSPHRASE = "incremental-test-passphrase-5521";
const MiB = 1024 * 1024;
const DISK_MIB = 16;
const tempDir = useTempDir();

/** A qcow2 disk of random bytes (they don't compress), and the same bytes in memory: the guest's view. */
async function makeDisk(file: string): Promise<Buffer> {
  const bytes = randomBytes(DISK_MIB * MiB);
  await fs.writeFile(`${file}.raw`, bytes);
  execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", `${file}.raw`, file]);
  await fs.rm(`${file}.raw`);
  return bytes;
}

/** Writes `length` bytes of `byte` at `offset` through the VM's QEMU (as its guest would), and into `mirror`. */
async function guestWrite(vm: RunningVm, mirror: Buffer, offset: number, length: number, byte: number) {
  const qmp = await QmpClient.connect(vm.qmpSocket, "test");
  try {
    const command = `qemu-io -d vda/virtio-backend "write -P 0x${byte.toString(16)} ${offset} ${length}"`;
    const said = await qmp.execute<string>("human-monitor-command", { "command-line": command });
    // qemu-io reports to QEMU's stderr; the monitor's reply is empty unless the command failed.
    expect(said).toBe("");
  } finally {
    qmp.close();
  }
  mirror.fill(byte, offset, offset + length);
}

async function bitmapsOf(vm: RunningVm): Promise<string[]> {
  const qmp = await QmpClient.connect(vm.qmpSocket, "test");
  try {
    const blocks = await qmp.execute<{ inserted?: { "dirty-bitmaps"?: { name: string }[] } }[]>("query-block");
    return (blocks[0].inserted?.["dirty-bitmaps"] ?? []).map((b) => b.name).sort();
  } finally {
    qmp.close();
  }
}

/** Stops QEMU the way a clean shutdown does: it saves persistent bitmaps into the disk. */
async function quit(vm: RunningVm) {
  const qmp = await QmpClient.connect(vm.qmpSocket, "test");
  const exited = new Promise((resolve) => vm.process.once("exit", resolve));
  await qmp.execute("quit").catch(() => undefined);
  qmp.close();
  await exited;
}

/** Writes `length` bytes of `byte` at `offset` into a stopped VM's disk (qemu-io keeps its bitmaps), and into `mirror`. */
function diskWrite(disk: string, mirror: Buffer, offset: number, length: number, byte: number) {
  const write = `write -P 0x${byte.toString(16)} ${offset} ${length}`;
  execFileSync("qemu-io", ["-f", "qcow2", "-c", write, disk], { stdio: "ignore" });
  mirror.fill(byte, offset, offset + length);
}

const bitmapsIn = (disk: string): string[] =>
  (
    JSON.parse(execFileSync("qemu-img", ["info", "--output=json", disk], { encoding: "utf8" }))["format-specific"].data
      .bitmaps ?? []
  )
    .map((b: { name: string }) => b.name)
    .sort();

function inputsOf(target: string, qmpSocket: string, trigger: string, source: object = {}) {
  return {
    policy: {
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: target },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 0,
      encrypted: true,
    },
    keys: { passphrase: PASSPHRASE, manifestKey: "bWFuaWZlc3Qta2V5LW9mLXRoZS1wb2xpY3ktMDAwMDA=" },
    sources: [
      qmpSocket.endsWith(".qcow2")
        ? { name: "vm", disk: qmpSocket, format: "qcow2", incremental: true, ...source }
        : { name: "vm", qmpSocket, device: "vda", incremental: true, ...source },
    ],
    trigger,
  };
}

async function checked(input: object) {
  const result = await provider.check({}, input as Record<string, unknown>);
  expect(result.failures).toBeUndefined();
  return result.inputs;
}

/** The lines `pulumi preview` shows for an update of the set to `news`. */
async function previewOf(id: string, outs: BackupSetOutputs, news: Record<string, unknown>): Promise<string[]> {
  const notes: string[] = [];
  await createBackupSetProvider({ ...localHost, note: (line) => notes.push(line) }).diff(id, outs, news);
  return notes;
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

async function manifestOf(outs: BackupSetOutputs) {
  const read = readManifest(await fs.readFile(outs.manifestPath, "utf8"));
  if (!read.ok) throw new Error(read.problem);
  return read.manifest;
}

/** `coffer restore` of the point whose manifest is `manifestPath`: the restored disk's SHA-256. */
async function restored(manifestPath: string): Promise<string> {
  const passFile = path.join(tempDir(), "pass.txt");
  await fs.writeFile(passFile, PASSPHRASE, { mode: 0o600 });
  const to = path.join(tempDir(), `restored-${path.basename(path.dirname(manifestPath))}.raw`);
  const args = ["restore", "--manifest", manifestPath, "--item", "vm", "--to", to, "--quiet"];
  const run = await runCoffer([...args, "--passphrase-file", passFile]);
  expect([run.code, run.stderr]).toEqual([0, ""]);
  return sha256(await fs.readFile(to));
}

describe("incremental backups of a running VM's qcow2 disk", () => {
  test("a full point, then links holding only what the guest wrote; each point restores byte for byte", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "vm.qcow2");
    const mirror = await makeDisk(disk);
    const vm = await startVm(tempDir(), disk, "qcow2");
    try {
      const expected: string[] = [sha256(mirror)];
      const first = await provider.create(await checked(inputsOf(target, vm.qmpSocket, "t1")));
      const full = await manifestOf(first.outs);
      expect(full.items[0].chain).toEqual({
        bitmap: `coffer.${first.id}.${full.pointId}`,
        depth: 0,
        fullBecause: "it is the set's first point",
      });

      let outs = first.outs as BackupSetOutputs;
      const manifests = [first.outs.manifestPath as string];
      for (const [step, byte] of [
        [1, 0x22],
        [2, 0x33],
      ]) {
        await guestWrite(vm, mirror, step * MiB, 256 * 1024, byte);
        await guestWrite(vm, mirror, (DISK_MIB - step) * MiB - 4096, 4096, byte);
        expected.push(sha256(mirror));
        const news = await checked(inputsOf(target, vm.qmpSocket, `t${step + 1}`));
        // Preview says what the point will be, with QEMU's count of what changed (five 64 KiB clusters).
        expect(await previewOf(first.id, outs, news)).toContainEqual(
          `source vm: a link on point ${outs.points.at(-1)!.id}: about 320 KiB to copy (QEMU's count of what changed)`,
        );
        outs = (await provider.update(first.id, outs, news)).outs as BackupSetOutputs;
        manifests.push(outs.manifestPath);
        const link = await manifestOf(outs);
        const previous = outs.points.at(-2)!;
        expect(link.schemaVersion).toBe(7);
        expect(link.keyOf).toBe(full.pointId);
        expect(link.wrappedKey).toEqual(full.wrappedKey);
        expect(link.items[0].chain).toEqual({
          bitmap: `coffer.${first.id}.${link.pointId}`,
          base: {
            pointId: previous.id,
            item: "vm",
            file: "vm.qcow2.luks",
            manifestSha256: sha256(await fs.readFile(manifests.at(-2)!)),
          },
          depth: step,
        });
        // Only the clusters written: a link is a small part of the full backup.
        expect(link.items[0].sizeBytes).toBeLessThan(full.items[0].sizeBytes / 4);
        expect(outs.points.at(-1)).toMatchObject({ dependsOn: [previous.id], status: "ok" });
        // The point's bitmap and its base's stay on the disk; older ones go.
        const point = link.pointId!;
        expect(await bitmapsOf(vm)).toEqual(
          [`coffer.${first.id}.${point}`, `coffer.${first.id}.${previous.id}`].sort(),
        );
      }

      // Every point is what the disk held when it was taken, byte for byte, restored without Pulumi.
      for (const [i, manifestPath] of manifests.entries()) expect(await restored(manifestPath)).toBe(expected[i]);
      const read = await provider.read(first.id, outs);
      expect(read.props.verification).toMatchObject({ status: "ok", failures: [] });
      expect(read.props.points.map((p: { status: string }) => p.status)).toEqual(["ok", "ok", "ok"]);

      // A person can't prune a point a kept link builds on: not with the index Pulumi wrote, nor one rebuilt.
      const pointIds = outs.points.map((p) => p.id);
      const prune = ["prune", "--target", target, "--zone", "zone-a", "--set", first.id, "--point", pointIds[0]];
      for (const index of ["written by the provider", "rebuilt from the manifests"]) {
        if (index === "rebuilt from the manifests") await fs.rm(path.join(outs.setDir, "index.json"));
        const refused = await runCoffer(prune);
        expect([index, refused.code, refused.stderr]).toEqual([
          index,
          expect.any(Number),
          expect.stringContaining(`point ${pointIds[0]} is needed by ${pointIds[1]}`),
        ]);
        expect(refused.code).not.toBe(0);
      }

      // A link whose base point's manifest changed is found before any read.
      const baseManifest = manifests[1];
      const text = await fs.readFile(baseManifest, "utf8");
      const changed = text.replace(/"trigger": ?"t2"/, '"trigger": "t2 "');
      expect(changed).not.toBe(text);
      await fs.writeFile(baseManifest, changed);
      const passFile = path.join(tempDir(), "pass.txt");
      const to = path.join(tempDir(), "broken.raw");
      const broken = await runCoffer([
        "restore",
        "--manifest",
        manifests[2],
        "--item",
        "vm",
        "--to",
        to,
        "--quiet",
        "--passphrase-file",
        passFile,
      ]);
      expect(broken.code).not.toBe(0);
      expect(broken.stderr).toMatch(/not the one it was built on/);
    } finally {
      await vm.stop();
    }
  });

  test("a bitmap QEMU could not save (killed) makes the next point a full one that says why", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "vm.qcow2");
    const mirror = await makeDisk(disk);
    // Each QEMU its own folder: a stale QMP socket would look like a listening one.
    let starts = 0;
    const restart = async () => {
      const dir = path.join(tempDir(), `qemu-${++starts}`);
      await fs.mkdir(dir);
      return startVm(dir, disk, "qcow2");
    };
    let vm = await restart();
    try {
      const first = await provider.create(await checked(inputsOf(target, vm.qmpSocket, "t1")));
      let outs = first.outs as BackupSetOutputs;
      const take = async (trigger: string) => {
        const news = await checked(inputsOf(target, vm.qmpSocket, trigger));
        outs = (await provider.update(first.id, outs, news)).outs as BackupSetOutputs;
        return manifestOf(outs);
      };

      // A clean restart keeps the bitmap: the next point is still a link.
      await quit(vm);
      vm = await restart();
      await guestWrite(vm, mirror, 2 * MiB, 64 * 1024, 0x44);
      const afterRestart = await take("t2");
      expect(afterRestart.items[0].chain).toMatchObject({ depth: 1, base: { pointId: outs.points[0].id } });
      expect(await restored(outs.manifestPath)).toBe(sha256(mirror));

      // Saved, loaded again (QEMU marks it in use in the disk), then killed: the next QEMU loads it inconsistent.
      await quit(vm);
      vm = await restart();
      await guestWrite(vm, mirror, 3 * MiB, 64 * 1024, 0x55);
      await vm.stop();
      vm = await restart();
      const news = await checked(inputsOf(target, vm.qmpSocket, "t3"));
      expect(await previewOf(first.id, outs, news)).toContainEqual(
        expect.stringMatching(/^source vm: a full backup: the dirty bitmap of point .* is inconsistent/),
      );
      const afterKill = await take("t3");
      expect(afterKill.items[0].chain).toEqual({
        bitmap: `coffer.${first.id}.${afterKill.pointId}`,
        depth: 0,
        fullBecause: expect.stringMatching(/dirty bitmap of point .* is inconsistent: its QEMU stopped without saving/),
      });
      expect(outs.points.at(-1)!.dependsOn).toBeUndefined();
      expect(await restored(outs.manifestPath)).toBe(sha256(mirror));
      // The untrusted bitmaps are gone; the new point's is there.
      expect(await bitmapsOf(vm)).toEqual([`coffer.${first.id}.${afterKill.pointId}`]);

      // Killed before it ever saved the new bitmap: it is not on the disk at all.
      await vm.stop();
      vm = await restart();
      await guestWrite(vm, mirror, 4 * MiB, 64 * 1024, 0x66);
      const afterLoss = await take("t4");
      expect(afterLoss.items[0].chain?.fullBecause).toMatch(/dirty bitmap of point .* is not on the disk/);
      expect(await restored(outs.manifestPath)).toBe(sha256(mirror));

      // And the chain goes on from there.
      await guestWrite(vm, mirror, 5 * MiB, 64 * 1024, 0x77);
      const link = await take("t5");
      expect(link.items[0].chain).toMatchObject({ depth: 1, base: { pointId: afterLoss.pointId } });
      expect(await restored(outs.manifestPath)).toBe(sha256(mirror));
    } finally {
      await vm.stop();
    }
  });

  test("a stopped VM's qcow2 disk: links through qemu-storage-daemon, checked against the disk, byte for byte", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "stopped.qcow2");
    const mirror = await makeDisk(disk);
    const expected = [sha256(mirror)];
    // A stopped disk is its own source (inputsOf takes a .qcow2 path for a disk).
    const first = await provider.create(await checked(inputsOf(target, disk, "t1")));
    let outs = first.outs as BackupSetOutputs;
    const manifests = [outs.manifestPath];
    const full = await manifestOf(outs);
    expect(full.items[0]).toMatchObject({ verifiedAtBackup: "full", chain: { depth: 0 } });
    expect(bitmapsIn(disk)).toEqual([`coffer.${first.id}.${full.pointId}`]);
    for (const step of [1, 2]) {
      diskWrite(disk, mirror, step * 3 * MiB, 128 * 1024, 0x20 + step);
      expected.push(sha256(mirror));
      const news = await checked(inputsOf(target, disk, `t${step + 1}`, { fullEvery: 3 }));
      // A stopped disk's header holds no dirty count: preview names the base only.
      expect(await previewOf(first.id, outs, news)).toContainEqual(
        `source vm: a link on point ${outs.points.at(-1)!.id}`,
      );
      outs = (await provider.update(first.id, outs, news)).outs as BackupSetOutputs;
      manifests.push(outs.manifestPath);
      const link = await manifestOf(outs);
      // "full": the link over its bases equals the disk itself.
      expect(link.items[0]).toMatchObject({ verifiedAtBackup: "full", chain: { depth: step } });
      expect(link.items[0].sizeBytes).toBeLessThan(full.items[0].sizeBytes / 4);
    }
    // fullEvery 3: the fourth backup starts a new chain.
    diskWrite(disk, mirror, 9 * MiB, 4096, 0x30);
    expected.push(sha256(mirror));
    const fourth = await checked(inputsOf(target, disk, "t4", { fullEvery: 3 }));
    expect(await previewOf(first.id, outs, fourth)).toContainEqual(
      "source vm: a full backup: fullEvery is 3, and its chain has 3 backups",
    );
    outs = (await provider.update(first.id, outs, fourth)).outs;
    manifests.push(outs.manifestPath);
    expect((await manifestOf(outs)).items[0].chain).toMatchObject({
      depth: 0,
      fullBecause: "fullEvery is 3, and its chain has 3 backups",
    });
    for (const [i, manifestPath] of manifests.entries()) expect(await restored(manifestPath)).toBe(expected[i]);

    // A base whose file changed since it was made (bit rot on the NAS) is never built on: a link would carry
    // the change into every later point with hashes that match.
    const baseFile = path.join(path.dirname(outs.manifestPath), "vm.qcow2.luks");
    const bytes = await fs.readFile(baseFile);
    bytes[bytes.length - 1000] ^= 0x01;
    await fs.writeFile(baseFile, bytes);
    diskWrite(disk, mirror, 10 * MiB, 4096, 0x31);
    outs = (await provider.update(first.id, outs, await checked(inputsOf(target, disk, "t5", { fullEvery: 3 })))).outs;
    expect((await manifestOf(outs)).items[0].chain).toMatchObject({
      depth: 0,
      fullBecause: expect.stringMatching(/builds on point .*'s vm.qcow2.luks, which has changed since it was made/),
    });
    expect(await restored(outs.manifestPath)).toBe(sha256(mirror));
  });
});
