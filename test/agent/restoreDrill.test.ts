/**
 * RestoreDrill with the real agent, qemu-img and QEMU: sets are taken with the EncryptedBackupSet
 * provider, then drilled as the SDK wires it (the set's outputs: points, locations, keys).
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { provider as setProvider } from "../../provider/backupSet";
import { DRILL_SCHEMA_VERSION } from "../../provider/restoreDrill/schema";
import { createRestoreDrillProvider } from "../../provider/restoreDrill/provider";
import { localHost } from "../../provider/restoreDrill";
import { makeRawDisk } from "../support/disks";
import { processesMentioning } from "../support/processes";
import { TestSshd, startSshd } from "../support/sshd";
import { watchCommandLines } from "../support/stackProject";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(240_000);
const PASSPHRASE = "drill-test-passphrase-5521";
const MANIFEST_KEY = "bWFuaWZlc3Qta2V5LW9mLXRoZS1kcmlsbC0wMDAwMDA=";
const MARKER = "COFFER-DRILL-BOOTED";
const tempDir = useTempDir();
const progress: string[] = [];
const provider = createRestoreDrillProvider({ ...localHost, progress: (line) => progress.push(line) });

/**
 * A 1 MiB raw disk whose first sector boots: 16-bit code that writes `text` to COM1 (port 0x3f8)
 * and halts; 0x55AA at 510. With an empty `text` it boots and never prints a marker.
 */
async function makeBootDisk(file: string, text: string): Promise<void> {
  const instructions = [
    [0xfa], // cli
    [0x31, 0xc0], // xor ax, ax
    [0x8e, 0xd8], // mov ds, ax
    [0xbe, 0x16, 0x7c], // mov si, 0x7c16 (the text, at offset 22)
    [0xba, 0xf8, 0x03], // mov dx, 0x3f8
    [0xac], // next: lodsb
    [0x84, 0xc0], // test al, al
    [0x74, 0x03], // jz done
    [0xee], // out dx, al
    [0xeb, 0xf8], // jmp next
    [0xf4], // done: hlt
    [0xeb, 0xfd], // jmp done
  ];
  const code = Buffer.from(instructions.flat());
  const disk = Buffer.alloc(1 << 20);
  code.copy(disk, 0);
  Buffer.from(`${text}\r\n\0`).copy(disk, code.length);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  await fs.writeFile(file, disk);
}

/** A set of `sources` taken by the EncryptedBackupSet provider on a fresh target. */
async function takeSet(sources: object[], policy: Record<string, unknown> = {}, more: Record<string, unknown> = {}) {
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  const checked = await setProvider.check(
    {},
    {
      policy: {
        id: "zone-a-1",
        zone: "zone-a",
        target: { kind: "directory", path: target },
        compression: "zstd",
        integrityCheck: "metadata",
        bandwidthLimitMiBps: 0,
        encrypted: true,
        ...policy,
      },
      keys: { passphrase: PASSPHRASE, manifestKey: MANIFEST_KEY },
      sources,
      trigger: "2026-11-27",
      ...more,
    },
  );
  expect(checked.failures).toBeUndefined();
  const { outs } = await setProvider.create(checked.inputs);
  return outs;
}

/** The drill's inputs as sdk/restoreDrill.ts makes them from a set's outputs. */
function drillInputs(set: Record<string, any>, more: Record<string, unknown> = {}) {
  return {
    sets: [{ name: "nightly", setId: set.setId, points: set.points, locations: set.locations }],
    keys: [{ setId: set.setId, keyVersion: set.keyVersion, keys: set.keys, keyring: set.keyring }],
    ...more,
  };
}

async function checkedDrill(inputs: object) {
  const result = await provider.check({}, inputs as Record<string, unknown>);
  expect(result.failures).toBeUndefined();
  return result.inputs as Record<string, unknown>;
}

describe("RestoreDrill with the local agent", () => {
  test("a good point passes every check; a flipped byte fails the drill, naming set, point and check", async () => {
    const disk = path.join(tempDir(), "web-1.raw");
    await makeRawDisk(disk, 4);
    const set = await takeSet([{ name: "web-1-root", disk }]);
    const pointId = set.points[0].id;
    const scratchDir = path.join(tempDir(), "scratch");
    await fs.mkdir(scratchDir);
    const inputs = await checkedDrill(drillInputs(set, { scratchDir }));

    const { id, outs } = await provider.create(inputs);
    expect(outs).toMatchObject({ schemaVersion: DRILL_SCHEMA_VERSION, status: "ok", failures: [], pick: "newest" });
    expect(Date.parse(outs.lastRun)).not.toBeNaN();
    expect(outs.results).toEqual([
      {
        set: "nightly",
        setId: set.setId,
        pointId,
        takenAt: set.points[0].takenAt,
        pick: "newest",
        where: "local",
        ok: true,
        checks: { manifest: "ok", hash: "ok", qemuImgCheck: "ok" },
        items: ["web-1-root"],
        durationMs: expect.any(Number),
      },
    ]);
    // The restored disk is gone with its scratch folder; no secret is in the results.
    expect(await fs.readdir(scratchDir)).toEqual([]);
    expect(JSON.stringify(outs.results)).not.toContain(PASSPHRASE);
    expect(await provider.diff()).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });

    const stored = path.join(path.dirname(set.manifestPath), "web-1-root.qcow2.luks");
    const bytes = await fs.readFile(stored);
    // In the last sector: the tail of the compressed data, past every qcow2 table (a small disk's middle is
    // the qcow2 header, just after the 2 MiB LUKS header).
    bytes[bytes.length - 700] ^= 0x01;
    await fs.writeFile(stored, bytes);

    // Refresh: the failed drill is drift, named; qemu-img check alone does not see a flipped data byte.
    const read = await provider.read(id, outs);
    expect(read.props.status).toBe("failed");
    expect(read.inputs).toMatchObject({ status: "failed" });
    expect(read.props.results[0]).toMatchObject({
      pointId,
      ok: false,
      checks: { manifest: "ok", hash: "failed", qemuImgCheck: "ok" },
      failure: expect.stringMatching(/^hash: item web-1-root: web-1-root\.qcow2\.luks has changed since the backup/),
    });
    expect(read.props.failures).toEqual([
      expect.stringMatching(new RegExp(`^set nightly \\(${set.setId}\\) point ${pointId}: hash: item web-1-root: `)),
    ]);
    expect(await fs.readdir(scratchDir)).toEqual([]);

    // Up: the drill is the test, and the up fails naming what failed.
    const error = await provider.update(id, read.props, inputs).catch((e) => e);
    expect(error).toMatchObject({ code: "VERIFY_FAILED" });
    expect(error.message).toMatch(
      new RegExp(`^restore drill failed: set nightly \\(${set.setId}\\) point ${pointId}: hash: item web-1-root: `),
    );
    expect(error.message).not.toContain(PASSPHRASE);
  });

  test("a changed manifest fails at the manifest check, and nothing else runs", async () => {
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const set = await takeSet([{ name: "d", disk }], { encrypted: false });
    const envelope = JSON.parse(await fs.readFile(set.manifestPath, "utf8"));
    envelope.manifest.trigger = "someone-else";
    await fs.writeFile(set.manifestPath, JSON.stringify(envelope, null, 2));
    const error = await provider.create(await checkedDrill(drillInputs(set))).catch((e) => e);
    expect(error).toMatchObject({ code: "VERIFY_FAILED" });
    expect(error.message).toMatch(
      new RegExp(`point ${set.points[0].id}: manifest: its HMAC does not match: it was changed`),
    );
    const { outs } = await provider
      .read("drill", { ...(await checkedDrill(drillInputs(set))), schemaVersion: 1 } as never)
      .then((r) => ({ outs: r.props }));
    expect(outs.results[0]).toMatchObject({
      ok: false,
      checks: { manifest: "failed", hash: "skipped", qemuImgCheck: "skipped" },
      items: [],
    });
  });

  test("boot: a disk that prints the marker passes; one that never does fails with a timeout, named", async () => {
    const bootable = path.join(tempDir(), "boot.raw");
    await makeBootDisk(bootable, `hello ${MARKER}`);
    // Unencrypted: each LUKS open costs seconds, and the boot is what is tested here.
    const set = await takeSet([{ name: "vm-1-root", disk: bootable }], { encrypted: false });
    const { outs } = await provider.create(
      await checkedDrill(drillInputs(set, { boot: { marker: MARKER, timeoutSeconds: 60 } })),
    );
    expect(outs.results[0]).toMatchObject({
      ok: true,
      checks: { manifest: "ok", hash: "ok", qemuImgCheck: "ok", boot: "ok" },
    });

    const silent = path.join(tempDir(), "silent.raw");
    await makeBootDisk(silent, "");
    const quiet = await takeSet([{ name: "vm-2-root", disk: silent }], { encrypted: false });
    const error = await provider
      .create(await checkedDrill(drillInputs(quiet, { boot: { marker: MARKER, timeoutSeconds: 3 } })))
      .catch((e) => e);
    expect(error).toMatchObject({ code: "VERIFY_FAILED" });
    expect(error.message).toMatch(
      new RegExp(
        `point ${quiet.points[0].id}: boot: item vm-2-root: timed out after 3 s waiting for "${MARKER}" ` +
          "on the serial console",
      ),
    );
  });
});

describe("RestoreDrill stopped", () => {
  test("a drill stopped while QEMU boots ends ABORTED; QEMU is gone, and so is the scratch folder", async () => {
    const silent = path.join(tempDir(), "silent.raw");
    await makeBootDisk(silent, "");
    const set = await takeSet([{ name: "vm-3-root", disk: silent }], { encrypted: false });
    const scratchDir = path.join(tempDir(), "scratch");
    await fs.mkdir(scratchDir);
    const engine = new AbortController();
    const stoppable = createRestoreDrillProvider({
      ...localHost,
      progress: () => undefined,
      engineGone: engine.signal,
    });
    const inputs = await checkedDrill(drillInputs(set, { scratchDir, boot: { marker: MARKER, timeoutSeconds: 120 } }));
    const drilling = stoppable.create(inputs).catch((e) => e);
    // Stopped once QEMU runs on the scratch folder's disk (the agent makes the serial file before it starts QEMU).
    const booting = () => processesMentioning(scratchDir).some((p) => p.command.includes("qemu-system-x86_64"));
    const deadline = Date.now() + 60_000;
    while (!booting() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(booting()).toBe(true);
    engine.abort();
    const error = await drilling;
    expect(error).toMatchObject({ code: "ABORTED" });
    expect(await fs.readdir(scratchDir)).toEqual([]);
    expect(processesMentioning(scratchDir)).toEqual([]);
  });
});

describe("RestoreDrill of a set on another host (a real sshd on 127.0.0.1)", () => {
  let sshd: TestSshd;
  const saved = { ...process.env };
  const repoRoot = path.resolve(__dirname, "../..");

  beforeAll(async () => {
    sshd = await startSshd(path.join(require("node:os").tmpdir(), `coffer-sshd-drill-${process.pid}`));
    process.env.COFFER_SSH_CONFIG = sshd.configFile;
    // On the "remote" host the agent is this checkout's; the ssh session's PATH is sshd's default.
    const agent = path.join(repoRoot, "bin/coffer-agent.js");
    process.env.COFFER_REMOTE_AGENT = `PATH=${path.dirname(process.execPath)}:$PATH ${process.execPath} ${agent}`;
  });
  afterAll(async () => {
    process.env = saved;
    await sshd?.stop();
  });

  test("the drill runs where the point is, through its agent, with the passphrase on no command line", async () => {
    const disk = path.join(tempDir(), "there.raw");
    await makeRawDisk(disk, 4);
    const set = await takeSet([{ name: "there", disk }], {}, { host: sshd.alias });
    expect(set.manifestHost).toBe(sshd.alias);
    const inputs = await checkedDrill(drillInputs(set));
    const { result, commandLines } = await watchCommandLines(() => provider.create(inputs));
    expect(result.outs.results[0]).toMatchObject({
      where: sshd.alias,
      ok: true,
      checks: { manifest: "ok", hash: "ok", qemuImgCheck: "ok" },
    });
    expect([...commandLines].some((l) => l.includes(`-- ${sshd.alias}`) && l.includes("drill-point"))).toBe(true);
    expect([...commandLines].filter((l) => l.includes(PASSPHRASE))).toEqual([]);
  });
});
