import { ChildProcess, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  backupItem,
  deleteSet,
  qemuVersion,
  sweepLeftovers,
  verifySet,
  writeManifest,
} from "../../provider/agent/backupSet";
import { fileSha256, restoreImage } from "../../provider/agent/image";
import { MANIFEST_KIND, Manifest, ManifestItem } from "../../provider/agent/manifest";
import { AGENT_PROTOCOL_VERSION } from "../../provider/agent/protocol";
import { QmpClient } from "../../provider/agent/qmp";
import { withSecretFd } from "../../provider/agent/tempFiles";
import { PLAINTEXT_MARKER, makeRawDisk } from "../support/disks";
import { pollFor, processesMentioning } from "../support/processes";
import { startVm } from "../support/qemuVm";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(180_000);
const PASSPHRASE = "set-test-passphrase-5521";
const tempDir = useTempDir();
const targetDir = () => path.join(tempDir(), "target");
const zoneDir = () => path.join(targetDir(), "sets", "zone-a");
const repoRoot = path.resolve(__dirname, "../..");

async function signedSet(items: ManifestItem[], setId: string, encrypted: boolean) {
  const manifest: Manifest = {
    kind: MANIFEST_KIND,
    schemaVersion: 1,
    setId,
    name: "nightly",
    trigger: "2026-11-24",
    zone: "zone-a",
    policy: { compression: "zstd", encrypted, bandwidthLimitMiBps: 0, integrityCheck: "full" },
    keySource: encrypted ? "passphrase" : "manifest-key",
    qemuVersion: await qemuVersion(),
    createdAt: new Date().toISOString(),
    items,
  };
  return writeManifest(path.join(zoneDir(), setId), manifest, PASSPHRASE);
}

describe("backup sets on the host agent", () => {
  test("a stopped disk and a running VM: verified, signed, re-verified, and drift named per item", async () => {
    const stopped = path.join(tempDir(), "web-1.raw");
    const running = path.join(tempDir(), "db-1.raw");
    await makeRawDisk(stopped, 8);
    await makeRawDisk(running, 8);
    const vm = await startVm(tempDir(), running);
    const progress: number[] = [];
    try {
      const common = {
        zoneDir: zoneDir(),
        setId: "set-1",
        compression: "zstd" as const,
        encrypted: true,
        bandwidthLimitMiBps: 0,
        integrityCheck: "full" as const,
        passphrase: PASSPHRASE,
      };
      const web = await backupItem({ ...common, name: "web-1-root", source: { disk: stopped } });
      const db = await backupItem(
        { ...common, name: "db-1-vda", source: { qmpSocket: vm.qmpSocket, device: "vda" }, bandwidthLimitMiBps: 4 },
        { progress: (_i, p) => progress.push(p) },
      );
      expect(web).toMatchObject({
        file: "web-1-root.qcow2.luks",
        format: "qcow2-in-luks",
        encrypted: true,
        verifiedAtBackup: "full",
        source: { kind: "disk", format: "raw" },
      });
      expect(db).toMatchObject({
        file: "db-1-vda.qcow2.luks",
        source: { kind: "qmp", device: "vda" },
        virtualSize: 8 << 20,
      });
      // The throttled job reported its way up, not just its end.
      expect(progress.filter((p) => p > 0 && p < 100).length).toBeGreaterThan(0);
      // Nothing Coffer added stays in the VM.
      const qmp = await QmpClient.connect(vm.qmpSocket, "check");
      expect(await qmp.execute("query-jobs")).toEqual([]);
      expect(
        (await qmp.execute<{ "node-name": string }[]>("query-named-block-nodes"))
          .map((n) => n["node-name"])
          .filter((n) => n.startsWith("coffer-")),
      ).toEqual([]);
      qmp.close();

      const manifestPath = await signedSet([web, db], "set-1", true);
      const setDir = path.dirname(manifestPath);
      expect((await fs.readdir(setDir)).sort()).toEqual([
        "db-1-vda.qcow2.luks",
        "manifest.json",
        "web-1-root.qcow2.luks",
      ]);
      for (const file of ["db-1-vda.qcow2.luks", "web-1-root.qcow2.luks", "manifest.json"]) {
        expect((await fs.readFile(path.join(setDir, file))).includes(PLAINTEXT_MARKER)).toBe(false);
      }
      const secrets = { manifestSecret: PASSPHRASE, passphrase: PASSPHRASE };
      expect(await verifySet(setDir, "full", secrets)).toMatchObject({ status: "ok", failures: [] });

      // The running VM's disk restores byte for byte (it is paused, so it did not change).
      const restored = path.join(tempDir(), "db-restored.raw");
      const dbFile = path.join(setDir, db.file);
      await withSecretFd(PASSPHRASE, (key) =>
        restoreImage({ file: dbFile, encrypted: true, key, to: restored, format: "raw", subject: "test" }),
      );
      expect(await fileSha256(restored)).toBe(await fileSha256(running));

      // A flipped byte in the middle of a backup file.
      const web1 = path.join(setDir, web.file);
      const handle = await fs.open(web1, "r+");
      const at = Math.floor(web.sizeBytes / 2);
      const byte = Buffer.alloc(1);
      await handle.read(byte, 0, 1, at);
      await handle.write(Buffer.from([byte[0] ^ 0xff]), 0, 1, at);
      await handle.close();
      expect(await verifySet(setDir, "none", secrets)).toMatchObject({
        status: "failed",
        failures: [expect.stringMatching(/item web-1-root: .* has changed since the backup/)],
      });

      await fs.rm(path.join(setDir, db.file));
      const both = await verifySet(setDir, "full", secrets);
      expect(both.status).toBe("failed");
      expect(both.failures).toEqual(expect.arrayContaining([expect.stringMatching(/item db-1-vda: .* is missing/)]));

      const manifestText = await fs.readFile(manifestPath, "utf8");
      await fs.writeFile(manifestPath, manifestText.replace('"zone": "zone-a"', '"zone": "zone-b"'));
      expect(await verifySet(setDir, "none", secrets)).toMatchObject({
        status: "failed",
        failures: [expect.stringMatching(/HMAC does not match/)],
      });
      expect(await verifySet(setDir, "none", { ...secrets, manifestSecret: "a wrong key entirely" })).toMatchObject({
        status: "failed",
      });

      await fs.rm(manifestPath);
      expect(await verifySet(setDir, "full", secrets)).toMatchObject({ status: "missing" });

      await fs.writeFile(path.join(tempDir(), "target", "unrelated.qcow2"), "not Coffer's");
      await deleteSet(setDir, path.join(tempDir(), "target"), [web.file, db.file]);
      expect(await fs.readdir(path.join(tempDir(), "target"))).toEqual(["unrelated.qcow2"]);
    } finally {
      await vm.stop();
    }
  });

  test("a backup never overwrites an existing one", async () => {
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const request = {
      zoneDir: zoneDir(),
      setId: "set-o",
      name: "d",
      source: { disk },
      compression: "none" as const,
      encrypted: false,
      bandwidthLimitMiBps: 0,
      integrityCheck: "none" as const,
    };
    const first = await backupItem(request);
    const file = path.join(zoneDir(), "set-o", first.file);
    const before = await fileSha256(file);
    await expect(backupItem(request)).rejects.toThrow(/already exists; a set never overwrites a backup/);
    expect(await fileSha256(file)).toBe(before);
    expect(await fs.readdir(path.join(zoneDir(), "set-o"))).toEqual(["d.qcow2"]);
  });

  test("truncation of a backup file is named", async () => {
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const item = await backupItem({
      zoneDir: zoneDir(),
      setId: "set-t",
      name: "d",
      source: { disk },
      compression: "none",
      encrypted: false,
      bandwidthLimitMiBps: 0,
      integrityCheck: "metadata",
    });
    const manifest = await signedSet([item], "set-t", false);
    await fs.truncate(path.join(path.dirname(manifest), item.file), 1000);
    expect(await verifySet(path.dirname(manifest), "metadata", { manifestSecret: PASSPHRASE })).toMatchObject({
      status: "failed",
      failures: [
        expect.stringMatching(/item d: d.qcow2 is 1000 bytes, the manifest says \d+ \(truncated or changed\)/),
      ],
    });
  });

  test("errors name the source and the cause: missing disk, missing VM, unknown device, QEMU dying mid-job", async () => {
    const base = {
      zoneDir: zoneDir(),
      setId: "set-e",
      compression: "none" as const,
      encrypted: false,
      bandwidthLimitMiBps: 0,
      integrityCheck: "none" as const,
    };
    await expect(
      backupItem({ ...base, name: "gone", source: { disk: path.join(tempDir(), "nope.raw") } }),
    ).rejects.toMatchObject({ code: "SOURCE_MISSING", message: expect.stringMatching(/^source gone: /) });
    await expect(
      backupItem({ ...base, name: "novm", source: { qmpSocket: path.join(tempDir(), "none.sock"), device: "vda" } }),
    ).rejects.toMatchObject({
      code: "SOURCE_MISSING",
      message: expect.stringMatching(/^source novm: no QEMU answers/),
    });
    const disk = path.join(tempDir(), "vm.raw");
    await makeRawDisk(disk, 16);
    const vm = await startVm(tempDir(), disk);
    try {
      await expect(
        backupItem({ ...base, name: "wrongdev", source: { qmpSocket: vm.qmpSocket, device: "vdb" } }),
      ).rejects.toMatchObject({ message: expect.stringMatching(/has no disk "vdb" \(it has: vda\)/) });
      const dying = backupItem({
        ...base,
        name: "dies",
        bandwidthLimitMiBps: 1,
        source: { qmpSocket: vm.qmpSocket, device: "vda" },
      });
      setTimeout(() => vm.process.kill("SIGKILL"), 1500);
      await expect(dying).rejects.toMatchObject({
        code: "QEMU_FAILED",
        message: expect.stringMatching(/^source dies: QEMU closed its QMP socket/),
      });
    } finally {
      await vm.stop();
    }
    // No failure left a file behind.
    const left = await fs.readdir(path.join(zoneDir(), "set-e")).catch(() => []);
    expect(left).toEqual([]);
  });

  test("a killed agent leaves only a partial file, never a finished-looking one; the next run removes it", async () => {
    const disk = path.join(tempDir(), "big.raw");
    await makeRawDisk(disk, 64);
    await makeTarget(targetDir());
    const request = {
      zoneDir: zoneDir(),
      setId: "set-k",
      name: "big",
      source: { disk },
      compression: "zstd",
      encrypted: true,
      passphrase: PASSPHRASE,
      bandwidthLimitMiBps: 4,
      integrityCheck: "full",
    };
    const agent: ChildProcess = spawn(process.execPath, [path.join(repoRoot, "bin/coffer-agent.js"), "backup-item"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    agent.stdin!.end(JSON.stringify({ ...request, target: { path: targetDir() } }));
    // Wait for the copy to be under way, then kill without warning.
    await new Promise<void>((resolve) =>
      agent.stderr!.on("data", (c) => String(c).includes('"progress"') && resolve()),
    );
    agent.kill("SIGKILL");
    await new Promise((r) => agent.once("exit", r));
    const setDir = path.join(zoneDir(), "set-k");
    const left = await fs.readdir(setDir);
    expect(left.filter((f) => !f.includes(".partial-"))).toEqual([]);
    expect(left.some((f) => f.startsWith(".big.qcow2.luks.partial-" + os.hostname()))).toBe(true);
    // The qemu-img the agent started dies with it (pdeathsig): nothing writes on.
    const writers = () => processesMentioning(`partial-${os.hostname()}-${agent.pid}`);
    await pollFor(() => (writers().length === 0 ? true : undefined), 2000);
    expect(writers()).toEqual([]);
    expect(await sweepLeftovers(zoneDir())).toHaveLength(1);
    expect(await fs.readdir(setDir)).toEqual([]);
  });

  test("SIGTERM stops a backup and cleans up before exiting", async () => {
    const disk = path.join(tempDir(), "big.raw");
    await makeRawDisk(disk, 64);
    await makeTarget(targetDir());
    const request = {
      zoneDir: zoneDir(),
      setId: "set-s",
      name: "big",
      source: { disk },
      compression: "none",
      encrypted: true,
      passphrase: PASSPHRASE,
      bandwidthLimitMiBps: 4,
      integrityCheck: "none",
    };
    const agent = spawn(process.execPath, [path.join(repoRoot, "bin/coffer-agent.js"), "backup-item"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    agent.stdout!.on("data", (c) => (out += c));
    agent.stdin!.end(JSON.stringify({ ...request, target: { path: targetDir() } }));
    await new Promise<void>((resolve) =>
      agent.stderr!.on("data", (c) => String(c).includes('"progress"') && resolve()),
    );
    agent.kill("SIGTERM");
    const code = await new Promise((r) => agent.once("exit", r));
    expect(code).toBe(1);
    expect(JSON.parse(out)).toMatchObject({ ok: false, error: { code: "ABORTED" } });
    expect(await fs.readdir(path.join(zoneDir(), "set-s"))).toEqual([]);
    expect(out).not.toContain(PASSPHRASE);
  });

  test("the agent refuses to back up, verify or delete where the target is not, before writing anything", async () => {
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const target = targetDir();
    await fs.mkdir(target);
    const item = {
      zoneDir: zoneDir(),
      setId: "set-u",
      name: "d",
      source: { disk },
      compression: "none",
      encrypted: false,
      bandwidthLimitMiBps: 0,
      integrityCheck: "none",
    };
    const setDir = path.join(zoneDir(), "set-u");
    const requests: [string, object][] = [
      ["check-target", {}],
      ["backup-item", item],
      ["write-manifest", { setDir, manifest: {}, manifestSecret: "k" }],
      ["verify-set", { setDir, level: "none", manifestSecret: "k" }],
      ["delete-set", { setDir, knownFiles: [] }],
    ];
    // No identity: the empty mount point of an unmounted NAS.
    for (const [command, request] of requests) {
      expect(await agentReply(command, { ...request, target: { path: target } })).toMatchObject({
        ok: false,
        error: { code: "TARGET_UNREACHABLE", message: expect.stringContaining(`${target} has no Coffer target id`) },
      });
    }
    expect(await fs.readdir(target)).toEqual([]);
    // Another target's identity than the one the request expects.
    const targetId = await makeTarget(target);
    const other = "0".repeat(32);
    for (const [command, request] of requests) {
      expect(await agentReply(command, { ...request, target: { path: target, id: other } })).toMatchObject({
        ok: false,
        error: { code: "TARGET_UNREACHABLE", message: expect.stringMatching(/is another target/) },
      });
    }
    expect(await fs.readdir(target)).toEqual([".coffer"]);
    // A request without a target, or working outside it, is refused too.
    const invalid = { ok: false, error: { code: "INVALID_INPUT" } };
    expect(await agentReply("backup-item", item)).toMatchObject(invalid);
    const elsewhere = { path: path.join(tempDir(), "elsewhere") };
    expect(await agentReply("backup-item", { ...item, target: elsewhere })).toMatchObject(invalid);
    expect(await agentReply("check-target", { target: { path: target } })).toEqual({
      ok: true,
      protocol: AGENT_PROTOCOL_VERSION,
      result: { targetId },
    });
  });
});

/** The reply of the real coffer-agent to one request. */
async function agentReply(command: string, request: object): Promise<unknown> {
  const agent = spawn(process.execPath, [path.join(repoRoot, "bin/coffer-agent.js"), command], { stdio: "pipe" });
  let out = "";
  agent.stdout!.on("data", (c) => (out += c));
  agent.stdin!.end(JSON.stringify(request));
  await new Promise((r) => agent.once("exit", r));
  return JSON.parse(out);
}
