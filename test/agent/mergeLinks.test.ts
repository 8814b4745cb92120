/**
 * Retention merging a pruned link of a qcow2 chain into the kept point after it, with real qemu-img
 * and QEMU: a stopped VM's disk backed up as a chain of four points (qemu-io writes between them),
 * retention prunes a middle link, and the kept point's backup takes in its data. Every kept point
 * restores byte for byte with `coffer restore`, refresh verifies them all, the index says what is
 * left, and the chain goes on. A merge killed mid-way, or refused at its commit, leaves every point
 * as it was. (test/unit/mergeLinks.test.ts: the planning, the rewritten manifests, the journal.)
 */
import { ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Manifest, pointSecret, readManifest } from "../../provider/agent/manifest";
import { bootId } from "../../provider/agent/setOwner";
import { localHost, provider } from "../../provider/backupSet";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import type { BackupSetOutputs } from "../../provider/backupSet/state";
import { runCoffer } from "../support/cofferCli";
import { killLeftovers, pollFor } from "../support/processes";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(600_000);
const PASSPHRASE = "merge-links-test-passphrase-7731";
const MiB = 1024 * 1024;
const DISK_MIB = 16;
const tempDir = useTempDir();
const agentBin = path.resolve(__dirname, "../../bin/coffer-agent.js");
afterEach(() => killLeftovers(tempDir()));

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** A qcow2 disk of random bytes, and the same bytes in memory: the guest's view. */
async function makeDisk(file: string): Promise<Buffer> {
  const bytes = randomBytes(DISK_MIB * MiB);
  await fs.writeFile(`${file}.raw`, bytes);
  execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", `${file}.raw`, file]);
  await fs.rm(`${file}.raw`);
  return bytes;
}

/** Writes into the stopped disk through qemu-io (it keeps the disk's bitmaps), and into `mirror`. */
function diskWrite(disk: string, mirror: Buffer, offset: number, length: number, byte: number) {
  execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -P 0x${byte.toString(16)} ${offset} ${length}`, disk], {
    stdio: "ignore",
  });
  mirror.fill(byte, offset, offset + length);
}

function inputsOf(target: string, disk: string, trigger: string, more: object = {}) {
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
    sources: [{ name: "vm", disk, format: "qcow2", incremental: true }],
    trigger,
    ...more,
  };
}

async function checked(input: object) {
  const result = await provider.check({}, input as Record<string, unknown>);
  expect(result.failures).toBeUndefined();
  return result.inputs;
}

async function manifestAt(file: string): Promise<Manifest> {
  const read = readManifest(await fs.readFile(file, "utf8"));
  if (!read.ok) throw new Error(read.problem);
  return read.manifest;
}

/** `coffer restore` of the point whose manifest is `manifestPath`: the restored disk's SHA-256. */
async function restored(manifestPath: string): Promise<string> {
  const passFile = path.join(tempDir(), "pass.txt");
  await fs.writeFile(passFile, PASSPHRASE, { mode: 0o600 });
  const to = path.join(tempDir(), `restored-${randomBytes(4).toString("hex")}.raw`);
  const args = ["restore", "--manifest", manifestPath, "--item", "vm", "--to", to, "--quiet"];
  const run = await runCoffer([...args, "--passphrase-file", passFile]);
  expect([run.code, run.stderr]).toEqual([0, ""]);
  const hash = sha256(await fs.readFile(to));
  await fs.rm(to);
  return hash;
}

/** Every file under `dir`, relative, sorted. */
async function filesUnder(dir: string): Promise<string[]> {
  return ((await fs.readdir(dir, { recursive: true, withFileTypes: true })) as import("node:fs").Dirent[])
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

/** A chain of four points of a stopped disk (a full one, then three links), and what each restores to. */
async function fourPointChain() {
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  const disk = path.join(tempDir(), "vm.qcow2");
  const mirror = await makeDisk(disk);
  const expected = new Map<string, string>();
  const created = await provider.create(await checked(inputsOf(target, disk, "t1")));
  const setId = created.id;
  let outs = created.outs as BackupSetOutputs;
  expected.set(outs.points[0].id, sha256(mirror));
  for (const step of [1, 2, 3]) {
    diskWrite(disk, mirror, step * 3 * MiB, 256 * 1024, 0x20 + step);
    diskWrite(disk, mirror, step * MiB + 4096, 4096, 0x40 + step);
    outs = (await provider.update(setId, outs, await checked(inputsOf(target, disk, `t${step + 1}`)))).outs;
    expected.set(outs.points.at(-1)!.id, sha256(mirror));
  }
  const ids = outs.points.map((p) => p.id);
  expect((await manifestAt(outs.manifestPath)).items[0].chain).toMatchObject({ depth: 3, base: { pointId: ids[2] } });
  const manifestOf = (id: string) => path.join(outs.setDir, id, "manifest.json");
  return { target, disk, mirror, setId, outs, ids, expected, manifestOf };
}

describe("retention merges a pruned link of a qcow2 chain into the kept point after it", () => {
  test("a middle link merges into its kept point: every kept point restores byte for byte and verifies", async () => {
    const chain = await fourPointChain();
    const { target, disk, setId, ids, expected, manifestOf } = chain;
    let outs = chain.outs;
    const [p1, p2, p3, p4] = ids;
    const p3Before = await manifestAt(manifestOf(p3));

    // keepLast 2 keeps p4 and p3; p1 is held; p2, which p3 builds on, is merged into p3.
    const news = await checked(
      inputsOf(target, disk, "t4", {
        history: { retention: { keepLast: 2 } },
        holds: [{ point: p1, reason: "audit" }],
      }),
    );
    const notes: string[] = [];
    await createBackupSetProvider({ ...localHost, note: (line) => notes.push(line) }).diff(setId, outs, news);
    expect(notes).toContainEqual(
      expect.stringMatching(new RegExp(`^set ${setId}: merges ${p2} \\(.* old\\) into ${p3}`)),
    );

    outs = (await provider.update(setId, outs, news)).outs;
    expect(outs.points.map((p) => [p.id, p.status, p.dependsOn])).toEqual([
      [p1, "ok", undefined],
      [p3, "ok", [p1]],
      [p4, "ok", [p3]],
    ]);
    // p2's folder is gone; p3 holds the merged backup alone; nothing of the merge is left.
    expect(await filesUnder(outs.setDir)).toEqual([
      `${p1}/manifest.json`,
      `${p1}/vm.qcow2.luks`,
      `${p3}/manifest.json`,
      `${p3}/vm.merged-${p2}.qcow2.luks`,
      `${p4}/manifest.json`,
      `${p4}/vm.qcow2.luks`,
      "index.json",
    ]);
    const p3After = await manifestAt(manifestOf(p3));
    const p4After = await manifestAt(manifestOf(p4));
    expect(p3After.items[0]).toMatchObject({
      file: `vm.merged-${p2}.qcow2.luks`,
      streamSha256: p3Before.items[0].streamSha256,
      chain: { bitmap: p3Before.items[0].chain!.bitmap, depth: 1, merged: [p2], base: { pointId: p1 } },
    });
    const p3Text = await fs.readFile(manifestOf(p3));
    expect(p4After.items[0].chain).toMatchObject({ depth: 2, base: { pointId: p3, manifestSha256: sha256(p3Text) } });

    // Every kept point is the disk as it was, restored without Pulumi.
    for (const id of [p1, p3, p4]) expect([id, await restored(manifestOf(id))]).toEqual([id, expected.get(id)]);
    const read = await provider.read(setId, outs);
    expect(read.props.verification).toMatchObject({ status: "ok", failures: [] });
    const verified = await runCoffer([
      "verify",
      "--manifest",
      manifestOf(p4),
      "--full",
      "--quiet",
      "--passphrase-file",
      path.join(tempDir(), "pass.txt"),
    ]);
    expect([verified.code, verified.stderr]).toEqual([0, ""]);
    expect(verified.stdout).toMatch(/"status": ?"ok"/);
    const index = JSON.parse(await fs.readFile(path.join(outs.setDir, "index.json"), "utf8"));
    expect(index.points.map((p: { id: string; dependsOn?: string[] }) => [p.id, p.dependsOn])).toEqual([
      [p1, undefined],
      [p3, [p1]],
      [p4, [p3]],
    ]);

    // The chain goes on from the rewritten newest point.
    diskWrite(disk, chain.mirror, 12 * MiB, 4096, 0x77);
    outs = (await provider.update(setId, read.props as BackupSetOutputs, await checked({ ...news, trigger: "t5" })))
      .outs;
    const p5 = outs.points.at(-1)!.id;
    // keepLast 2 now keeps p5 and p4: p3 (with p2 in it) merges into p4 in the same up, and p5 follows.
    expect(outs.points.map((p) => p.id)).toEqual([p1, p4, p5]);
    expect((await manifestAt(manifestOf(p4))).items[0].chain).toMatchObject({ depth: 1, merged: [p3] });
    expect((await manifestAt(manifestOf(p5))).items[0].chain).toMatchObject({ depth: 2, base: { pointId: p4 } });
    expect(await restored(manifestOf(p5))).toBe(sha256(chain.mirror));
    expect(await restored(manifestOf(p4))).toBe(expected.get(p4));
  });

  test("a merge killed mid-way, or refused at its commit, leaves every point as it was", async () => {
    const chain = await fourPointChain();
    const { target, setId, ids, expected, manifestOf } = chain;
    const [, p2, p3] = ids;
    const setDir = chain.outs.setDir;
    const before = await filesUnder(setDir);
    // Every point's files, byte for byte (the index is rewritten by every refresh).
    const bytesOf = async () =>
      Object.fromEntries(
        await Promise.all(
          before
            .filter((f) => f !== "index.json")
            .map(async (f) => [f, sha256(await fs.readFile(path.join(setDir, f)))]),
        ),
      );
    const original = await bytesOf();
    const p3Manifest = await manifestAt(manifestOf(p3));
    const chainKey = (await pointSecret(p3Manifest, PASSPHRASE))!;
    // The provider that started it is gone (a process that has exited).
    const gone = spawn("true");
    await new Promise((resolve) => gone.once("exit", resolve));
    const owner = { host: os.hostname(), pid: gone.pid!, bootId: bootId() };
    const request = {
      target: { path: target },
      setDir,
      from: p2,
      into: p3,
      manifestSecret: chainKey,
      owner,
    };

    // Killed while it builds the merged backup: its partial file is there from the copy of the base through
    // qemu-img commit and the read-back (qemu-img commit alone can end between two looks on a busy machine).
    const agent = startAgent("merge-prepare", request);
    const building = async () => (await fs.readdir(path.join(setDir, p3))).some((f) => f.includes(".partial-"));
    await pollFor(async () => {
      if (agent.exitCode !== null) throw new Error("the agent ended before it built the merged backup");
      return (await building()) ? true : undefined;
    }, 120_000);
    agent.kill("SIGKILL");
    await new Promise((resolve) => agent.once("close", resolve));
    expect(await fs.readdir(setDir)).toContain("merge.json");
    // The next command on the set undoes it: its owner is gone.
    const read = await provider.read(setId, chain.outs);
    expect(read.props.verification).toMatchObject({ status: "ok", failures: [] });
    expect(await filesUnder(setDir)).toEqual(before);
    expect(await bytesOf()).toEqual(original);

    // Prepared (by a live provider: this one), then refused at its commit (a manifest that is not the
    // chain's): undone at once.
    const live = { ...request, owner: { host: os.hostname(), pid: process.pid, bootId: bootId() } };
    const prepared = await callAgent<{ files: { file: string }[] }>("merge-prepare", live);
    expect(prepared.files.map((f) => f.file)).toEqual([`vm.merged-${p2}.qcow2.luks`]);
    const manifests = [{ pointId: p3, text: (await fs.readFile(manifestOf(p3), "utf8")).replace('"t3"', '"t3 "') }];
    await expect(callAgent("merge-commit", { ...live, manifests })).rejects.toThrow(
      `point ${p3}: its rewritten manifest: its HMAC is not the chain's`,
    );
    expect(await filesUnder(setDir)).toEqual(before);
    expect(await bytesOf()).toEqual(original);
    for (const id of ids) expect([id, await restored(manifestOf(id))]).toEqual([id, expected.get(id)]);

    // A person prunes p2 with coffer: without the key refused, saying how; with it, merged into p3.
    const prune = ["prune", "--target", target, "--zone", "zone-a", "--set", setId, "--point", p2];
    const refused = await runCoffer(prune);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`point ${p2} is needed by ${p3}: their incrementals build on its backups; give`);
    const merged = await runCoffer([...prune, "--passphrase-file", path.join(tempDir(), "pass.txt")]);
    expect([merged.code, merged.stdout]).toEqual([0, expect.stringContaining(`merged ${p2} into ${p3}`)]);
    // Refresh drops p2 and takes p3's and p4's rewritten records: every point verifies.
    const refreshed = await provider.read(setId, read.props as BackupSetOutputs);
    expect(refreshed.props.verification).toMatchObject({ status: "ok", failures: [] });
    expect(refreshed.props.points.map((p: { id: string; status: string }) => [p.id, p.status])).toEqual(
      [ids[0], p3, ids[3]].map((id) => [id, "ok"]),
    );
    for (const id of [p3, ids[3]]) expect([id, await restored(manifestOf(id))]).toEqual([id, expected.get(id)]);
  });
});

function startAgent(command: string, request: object): ChildProcess {
  const agent = spawn(process.execPath, [agentBin, command], { stdio: ["pipe", "pipe", "pipe"] });
  agent.stdin!.end(JSON.stringify(request));
  return agent;
}

async function callAgent<T>(command: string, request: object): Promise<T> {
  const agent = startAgent(command, request);
  let out = "";
  agent.stdout!.on("data", (chunk) => (out += chunk));
  await new Promise((resolve) => agent.once("close", resolve));
  const reply = JSON.parse(out);
  if (!reply.ok) throw new Error(`${command}: ${reply.error.message}`);
  return reply.result as T;
}
