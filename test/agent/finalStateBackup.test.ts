import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { readManifest } from "../../provider/agent/manifest";
import { agentClient } from "../../provider/backupSet/agentClient";
import type { SetHost } from "../../provider/backupSet/provider";
import { newPointId } from "../../provider/backupSet/state";
import { createFinalStateProvider } from "../../provider/finalState/provider";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { rsaPair, x25519Pair } from "../support/escrowKeys";
import { RunningVm, startVm } from "../support/qemuVm";
import { ed25519Pair } from "../support/signingKeys";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const PASSPHRASE = "the policy's passphrase, final-state test";
const URN = "urn:pulumi:dev::fleet::pulumi-nodejs:dynamic/coffer:FinalStateBackup::web-1-final";
const tempDir = useTempDir();
const signing = ed25519Pair();
const [forensics, audit, stranger] = [x25519Pair(), rsaPair(), x25519Pair()];

const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex");

function testHost(notes: string[]): SetHost {
  let n = 0;
  return {
    agent: agentClient,
    now: () => new Date(),
    progress: (message) => notes.push(message),
    note: (message) => notes.push(message),
    newSetId: (trigger) => `${trigger}-${(++n).toString(16).padStart(8, "0")}`,
    newPointId: (now) => newPointId(now, (++n).toString(16).padStart(4, "0")),
  };
}

describe("FinalStateBackup with the real agent and a running QEMU VM", () => {
  let vm: RunningVm;
  let disk: string;
  let target: string;

  const inputs = (extra: Record<string, unknown> = {}) => ({
    vm: { qmpSocket: vm.qmpSocket, devices: ["vda"] },
    policy: {
      id: "forensics-1",
      zone: "forensics",
      target: { kind: "directory", path: target },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 0,
      encrypted: true,
    },
    keys: { signingKey: signing.privateKey },
    recipients: [
      { name: "forensics", publicKey: forensics.publicKey },
      { name: "audit", publicKey: audit.publicKey },
    ],
    threshold: 1,
    holdDays: 90,
    reason: "security",
    takenFor: { stack: "dev", project: "fleet", urn: URN },
    ...extra,
  });

  async function file(name: string, text: string): Promise<string> {
    const at = path.join(tempDir(), name);
    await fs.writeFile(at, text, { mode: 0o600 });
    return at;
  }

  beforeEach(async () => {
    target = path.join(tempDir(), "target");
    await makeTarget(target);
    disk = path.join(tempDir(), "web-1.raw");
    await makeRawDisk(disk, 8);
    vm = await startVm(tempDir(), disk);
  });
  afterEach(async () => vm?.stop());

  test("delete takes one final point: sealed for the recipients, signed, held, restorable byte for byte", async () => {
    const notes: string[] = [];
    const provider = createFinalStateProvider(testHost(notes));
    expect((await provider.check({}, inputs())).failures ?? []).toEqual([]);
    const { id, outs } = await provider.create(inputs());
    expect(outs).toMatchObject({ schemaVersion: 1, setId: id, targetId: expect.any(String) });
    expect(id).toMatch(/^final-web-1-final-/);
    // Armed: nothing is taken until the VM goes.
    expect(await fs.readdir(path.join(target, "sets")).catch(() => [])).toEqual([]);

    const before = Date.now();
    await provider.delete(id, outs);
    const setDir = path.join(target, "sets", "forensics", id);
    const [pointId] = (await fs.readdir(setDir)).filter((f) => f !== "index.json");
    const manifestPath = path.join(setDir, pointId, "manifest.json");
    const read = readManifest(await fs.readFile(manifestPath, "utf8"));
    if (!read.ok) throw new Error(read.problem);
    const { manifest } = read;
    expect(manifest).toMatchObject({
      schemaVersion: 5,
      keySource: "recipients",
      signing: { keyFingerprint: expect.stringMatching(/^SHA256:/) },
      items: [{ name: "vda", source: { kind: "qmp", device: "vda" }, encrypted: true, format: "qcow2-in-luks" }],
      final: {
        reason: "security",
        operation: "delete",
        takenFor: { stack: "dev", project: "fleet", urn: URN },
        vm: { qmpSocket: vm.qmpSocket, devices: ["vda"] },
      },
    });
    expect(manifest.sealedKey?.recipients.map((r) => r.name)).toEqual(["forensics", "audit"]);
    const holdUntil = Date.parse(manifest.final!.holdUntil);
    expect(holdUntil).toBeGreaterThanOrEqual(before + 90 * 86_400_000);
    expect(holdUntil).toBeLessThan(Date.now() + 90 * 86_400_000 + 1000);
    expect(notes.join("\n")).toMatch(/point .* held until .*; it opens with the private key of 1 of: forensics, audit/);

    // A recipient's key opens it, byte for byte; the policy's passphrase and a stranger's key don't.
    const key = await file("forensics.pem", forensics.privateKey);
    const to = path.join(tempDir(), "restored.raw");
    const restore = ["restore", "--manifest", manifestPath, "--item", "vda", "--to", to];
    const restored = await runCoffer([...restore, "--key", key]);
    expect([restored.code, restored.stderr]).toEqual([0, expect.any(String)]);
    expect(await sha256(to)).toBe(await sha256(disk));
    const withPassphrase = await runCoffer([...restore, "--force"], { COFFER_PASSPHRASE: PASSPHRASE });
    expect(withPassphrase.code).not.toBe(0);
    expect(withPassphrase.stderr).toMatch(/sealed for recipients/);
    const strangerKey = await file("stranger.pem", stranger.privateKey);
    expect((await runCoffer([...restore, "--force", "--key", strangerKey])).code).not.toBe(0);

    // Listed as final, and held.
    const listed = await runCoffer(["list", "--target", target, "--final", "--json"]);
    expect(JSON.parse(listed.stdout).points).toEqual([
      expect.objectContaining({
        set: id,
        point: pointId,
        held: "final state: security",
        final: { reason: "security", operation: "delete", urn: URN },
      }),
    ]);
    const table = await runCoffer(["list", "--target", target, "--final"]);
    expect(table.stdout).toMatch(/FINAL STATE\n.*delete of web-1-final \(security\)/);
    // A person can't prune it before the hold ends; nor after the index is lost: the signed manifest holds it.
    const pruneRefused = async () => {
      const args = ["prune", "--target", target, "--zone", "forensics", "--set", id, "--point", pointId];
      const prune = await runCoffer(args);
      expect(prune.code).not.toBe(0);
      expect(prune.stderr).toMatch(/is held \(final state: security\): it can be deleted after 20\d\d-/);
      await expect(fs.stat(manifestPath)).resolves.toBeTruthy();
    };
    await pruneRefused();
    await fs.rm(path.join(setDir, "index.json"));
    await pruneRefused();
  });

  test("a failed final backup blocks the deletion and leaves nothing; allowDeleteWithoutBackup lets it go", async () => {
    const notes: string[] = [];
    const provider = createFinalStateProvider(testHost(notes));
    const { id, outs } = await provider.create(inputs({ vm: { qmpSocket: vm.qmpSocket, devices: ["vdz"] } }));
    const error = await provider.delete(id, outs).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(
      /^the final-state backup of the VM of .* \(vdz\) failed, so its deletion is blocked and the VM keeps running: /,
    );
    expect((error as Error).message).toMatch(/allowDeleteWithoutBackup: true/);
    // Nothing that looks like a backup: no manifest anywhere under the set.
    const setDir = path.join(target, "sets", "forensics", id);
    const left = await fs.readdir(setDir, { recursive: true }).catch(() => [] as string[]);
    expect(left.filter((f) => String(f).endsWith("manifest.json"))).toEqual([]);

    const { outs: allowing } = await provider.update(
      id,
      outs,
      inputs({ vm: { qmpSocket: vm.qmpSocket, devices: ["vdz"] }, allowDeleteWithoutBackup: true }),
    );
    await expect(provider.delete(id, allowing as never)).resolves.toBeUndefined();
    expect(notes.join("\n")).toMatch(/WARNING: the VM of .* goes WITHOUT a final-state backup/);
  });

  test("another VM replaces the backup, whose delete is then recorded as a replacement", async () => {
    const provider = createFinalStateProvider(testHost([]));
    const { id, outs } = await provider.create(inputs());
    const otherDevices = await provider.diff(
      id,
      outs as never,
      inputs({ vm: { qmpSocket: vm.qmpSocket, devices: ["vda", "vdb"] } }),
    );
    expect(otherDevices).toMatchObject({ changes: true, replaces: [] });
    const otherVm = await provider.diff(
      id,
      outs as never,
      inputs({ vm: { qmpSocket: "/run/vm-2.qmp", devices: ["vda"] } }),
    );
    expect(otherVm).toMatchObject({ changes: true, replaces: ["vm"], deleteBeforeReplace: false });
    await provider.delete(id, outs as never);
    const setDir = path.join(target, "sets", "forensics", id);
    const [pointId] = (await fs.readdir(setDir)).filter((f) => f !== "index.json");
    const read = readManifest(await fs.readFile(path.join(setDir, pointId, "manifest.json"), "utf8"));
    expect(read.ok && read.manifest.final?.operation).toBe("replace");
  });
});
