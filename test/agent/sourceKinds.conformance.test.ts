/**
 * What every source kind that runs on the agent must do, with real qemu, through the real
 * coffer-agent: back up and verify; name a flipped byte; stop on abort leaving no backup file;
 * keep the passphrase off every command line. A new kind is added to `fixtures` (or this does
 * not compile) and then passes the same tests.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { MANIFEST_KIND, Manifest } from "../../provider/agent/manifest";
import { AgentClient, agentClient } from "../../provider/backupSet/agentClient";
import { AGENT_KINDS, AgentKindName, SourceFields } from "../../provider/sources/registry";
import { makeRawDisk } from "../support/disks";
import { startVm } from "../support/qemuVm";
import { watchCommandLines } from "../support/stackProject";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(120_000);
const PASSPHRASE = "conformance-passphrase-6062";
/** Unencrypted sets sign with it (HKDF, fast); each LUKS open costs seconds, so only the argv test encrypts. */
const MANIFEST_KEY = "conformance-manifest-key-2230";
const MIB = 8;

interface Fixture {
  source: SourceFields;
  stop(): Promise<void>;
}

/** A real source of each agent kind, of `MIB` MiB; a kind without one here does not compile. */
const fixtures: { [K in AgentKindName]: (dir: string) => Promise<Fixture> } = {
  disk: async (dir) => {
    const disk = path.join(dir, "stopped.raw");
    await makeRawDisk(disk, MIB);
    return { source: { disk }, stop: async () => undefined };
  },
  qmp: async (dir) => {
    const disk = path.join(dir, "running.raw");
    await makeRawDisk(disk, MIB);
    const vm = await startVm(dir, disk);
    return { source: { qmpSocket: vm.qmpSocket, device: "vda" }, stop: () => vm.stop() };
  },
};

const agentKinds = AGENT_KINDS.map((kind) => kind.kind);

describe.each(agentKinds)("source kind %s", (kind) => {
  const tempDir = useTempDir();
  let fixture: Fixture;
  let agent: AgentClient;
  const targetDir = () => path.join(tempDir(), "target");
  const zoneDir = () => path.join(targetDir(), "sets", "zone-c");
  const setDir = () => path.join(zoneDir(), "set-1");
  let target: { path: string; id: string };

  beforeEach(async () => {
    target = { path: targetDir(), id: await makeTarget(targetDir()) };
    fixture = await fixtures[kind](tempDir());
    agent = agentClient(undefined);
  });
  afterEach(() => fixture.stop());

  interface BackupOptions {
    encrypted?: boolean;
    bandwidthLimitMiBps?: number;
    signal?: AbortSignal;
    onProgress?: () => void;
  }
  const backup = (options: BackupOptions = {}) =>
    agent.call(
      "backup-item",
      {
        target,
        zoneDir: zoneDir(),
        setId: "set-1",
        name: "item",
        source: fixture.source,
        compression: "zstd",
        encrypted: options.encrypted ?? false,
        bandwidthLimitMiBps: options.bandwidthLimitMiBps ?? 0,
        integrityCheck: "full",
        passphrase: options.encrypted ? PASSPHRASE : undefined,
      },
      { secrets: [PASSPHRASE], signal: options.signal, onProgress: options.onProgress },
    );

  async function signed(items: Manifest["items"]): Promise<void> {
    const manifest: Manifest = {
      kind: MANIFEST_KIND,
      schemaVersion: 2,
      setId: "set-1",
      name: "t",
      trigger: "t",
      zone: "zone-c",
      policy: { compression: "zstd", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "full" },
      keySource: "manifest-key",
      qemuVersion: "test",
      createdAt: new Date().toISOString(),
      items,
    };
    await agent.call("write-manifest", { target, setDir: setDir(), manifest, manifestSecret: MANIFEST_KEY });
  }
  const verify = (level: "none" | "full") =>
    agent.call("verify-set", {
      target,
      setDir: setDir(),
      level,
      manifestSecret: MANIFEST_KEY,
    });

  test("backs up, and the set verifies at every level; the manifest records the kind", async () => {
    const item = await backup();
    expect(item).toMatchObject({ source: { kind }, virtualSize: MIB << 20, verifiedAtBackup: "full" });
    await signed([item]);
    for (const level of ["none", "full"] as const) {
      expect(await verify(level)).toMatchObject({ status: "ok", failures: [] });
    }
    expect((await fs.readdir(setDir())).sort()).toEqual([item.file, "manifest.json"].sort());
  });

  test("a flipped byte in the backup is named by verify", async () => {
    const item = await backup();
    await signed([item]);
    const file = path.join(setDir(), item.file);
    const handle = await fs.open(file, "r+");
    const at = Math.floor(item.sizeBytes / 2);
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, at);
    await handle.write(Buffer.from([byte[0] ^ 0x01]), 0, 1, at);
    await handle.close();
    expect(await verify("none")).toMatchObject({
      status: "failed",
      failures: [expect.stringMatching(/^item item: item\.qcow2 has changed since the backup/)],
    });
  });

  test("an abort stops the backup: ABORTED, and no backup file is left", async () => {
    const abort = new AbortController();
    const error = await backup({ bandwidthLimitMiBps: 1, signal: abort.signal, onProgress: () => abort.abort() }).catch(
      (e) => e,
    );
    expect(abort.signal.aborted).toBe(true);
    expect(error).toMatchObject({ code: "ABORTED" });
    expect(await fs.readdir(setDir()).catch(() => [])).toEqual([]);
  });

  test("the passphrase is on no command line: not the agent's, not a tool's", async () => {
    const { result, commandLines, samples } = await watchCommandLines(() =>
      backup({ encrypted: true, bandwidthLimitMiBps: 4 }),
    );
    expect(result.encrypted).toBe(true);
    expect(samples).toBeGreaterThan(5);
    const lines = [...commandLines];
    // The sampling saw the work: the agent and qemu's tools.
    expect(lines.some((l) => l.includes("coffer-agent.js backup-item"))).toBe(true);
    expect(lines.some((l) => /qemu-(img|nbd)/.test(l))).toBe(true);
    expect(lines.filter((l) => l.includes(PASSPHRASE))).toEqual([]);
  });
});
