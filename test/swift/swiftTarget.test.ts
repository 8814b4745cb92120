import { randomBytes } from "node:crypto";
import { promises as fs, readFileSync } from "node:fs";
import * as path from "node:path";
import { provider as policyProvider } from "../../provider/backupPolicy";
import { provider as setProvider } from "../../provider/backupSet";
import { listAll } from "../../provider/targets/store";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { startVm } from "../support/qemuVm";
import {
  SwiftLoop,
  containerListing,
  swiftLoop,
  swiftLoopNow,
  swiftLoopUp,
  swiftMissingNote,
  swiftStoreOn,
  testContainer,
} from "../support/swiftLoop";
import { useTempDir } from "../support/tempDir";

// EncryptedBackupSet points on a Swift target (tools/swift/swiftloop.sh), taken by the real agent (dist/):
// spooled, uploaded as large objects, verified by fetching them back, restored with `coffer restore --swift`.
jest.setTimeout(300_000);

const swift = swiftLoop();
const describeSwift = swift ? describe : describe.skip;
const PASSPHRASE = "swift-target-passphrase-41";

/** Whether the process `pid` runs (a zombie does not). */
const running = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

/** Every file under `dir`, at any depth (the spool must hold none once a command is done). */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => !e.isDirectory()).map((e) => path.join(e.parentPath, e.name));
}

describeSwift(`EncryptedBackupSet on a Swift target${swift ? "" : ` (${swiftMissingNote})`}`, () => {
  const tempDir = useTempDir();
  const loop = swift as SwiftLoop;
  let prefix = "";

  afterEach(async () => {
    // Whatever a test left in its folder of the container goes (segments with their large objects).
    const store = swiftStoreOn(loop, { prefix });
    for (const { key } of await listAll(store, "")) await store.remove(key);
  });

  /** A policy on a new folder of the test container (1 MiB segments: every backup is a large object). */
  async function swiftPolicy() {
    prefix = `run-${randomBytes(6).toString("hex")}`;
    const target = {
      kind: "swift",
      authUrl: loop.authUrl,
      user: loop.user,
      container: testContainer,
      prefix,
      segmentMiB: 1,
      scratch: { path: path.join(tempDir(), "spool"), maxGiB: 1 },
    };
    const declared = { zone: "zone-a", target, targetKey: loop.key, encryption: { passphrase: PASSPHRASE } };
    const checked = await policyProvider.check({}, declared);
    expect(checked.failures).toBeUndefined();
    const { id, outs } = await policyProvider.create(checked.inputs!);
    expect(outs.documentPath).toBe(`swift:${testContainer}/${prefix}/.coffer/zones/zone-a/policy.json`);
    return { id, outs };
  }

  async function setInputs(policy: Awaited<ReturnType<typeof swiftPolicy>>, sources: object[], more = {}) {
    const declared = {
      policy: {
        id: policy.id,
        zone: "zone-a",
        target: policy.outs.target,
        compression: "zstd",
        integrityCheck: "full",
        bandwidthLimitMiBps: 0,
        encrypted: true,
      },
      keys: { passphrase: PASSPHRASE, targetKey: loop.key },
      sources,
      trigger: "2026-11-27",
      ...more,
    };
    const checked = await setProvider.check({}, declared);
    expect(checked.failures).toBeUndefined();
    return checked.inputs!;
  }

  const objectsUnder = async (folder: string) =>
    (await containerListing(loop, testContainer, `${prefix}/${folder}`)).map((name) => name.slice(prefix.length + 1));

  /** `coffer <command> --swift` of a point's manifest key, with the key and passphrase in files. */
  async function cofferOnSwift(command: string, manifestKey: string, args: string[]) {
    const config = path.join(tempDir(), "swift.json");
    const keyFile = path.join(tempDir(), "swift.key");
    const passphraseFile = path.join(tempDir(), "passphrase");
    const access = { authUrl: loop.authUrl, user: loop.user, container: testContainer, prefix };
    await fs.writeFile(config, JSON.stringify(access));
    await fs.writeFile(keyFile, loop.key);
    await fs.writeFile(passphraseFile, PASSPHRASE);
    const scratch = path.join(tempDir(), "cli-scratch");
    await fs.mkdir(scratch, { recursive: true });
    const common = ["--swift", config, "--swift-key-file", keyFile, "--passphrase-file", passphraseFile];
    const result = await runCoffer([command, "--manifest", manifestKey, ...common, "--scratch", scratch, ...args]);
    expect(await filesUnder(scratch)).toEqual([]);
    expect(`${result.stdout}${result.stderr}`).not.toContain(loop.key);
    return result;
  }

  test("a stopped disk and a running VM: a point onto Swift, verified, restored, pruned, deleted", async () => {
    const policy = await swiftPolicy();
    const web = path.join(tempDir(), "web-1.raw");
    const db = path.join(tempDir(), "db-1.raw");
    await makeRawDisk(web, 8);
    await makeRawDisk(db, 8);
    const vm = await startVm(tempDir(), db);
    try {
      const sources = [
        { name: "web-1-root", disk: web },
        { name: "db-1-vda", qmpSocket: vm.qmpSocket, device: "vda" },
      ];
      const inputs = await setInputs(policy, sources, {
        deleteBackupsOnDestroy: true,
      });
      const { id, outs } = await setProvider.create(inputs);
      expect(outs.verification).toMatchObject({ status: "ok", level: "full", failures: [] });
      expect(outs.schemaVersion).toBe(5);
      const pointId = outs.points[0].id;
      const pointFolder = `sets/zone-a/${id}/${pointId}`;
      expect(outs.manifestPath).toBe(`swift:${testContainer}/${prefix}/${pointFolder}/manifest.json`);
      expect(outs.locations[0]).toMatchObject({ swift: { container: testContainer, prefix } });
      expect(JSON.stringify(outs.locations)).not.toContain(loop.key);
      expect((await objectsUnder("sets/")).sort()).toEqual(
        [
          `${pointFolder}/db-1-vda.qcow2.luks`,
          `${pointFolder}/manifest.json`,
          `${pointFolder}/web-1-root.qcow2.luks`,
          `sets/zone-a/${id}/index.json`,
        ].sort(),
      );
      // Each backup is a large object of 1 MiB segments; nothing is left in the spool.
      expect((await containerListing(loop, `${testContainer}_segments`, prefix)).length).toBeGreaterThan(2);
      expect(await filesUnder(path.join(tempDir(), "spool"))).toEqual([]);

      // Refresh fetches the point back and verifies it in full.
      const read = await setProvider.read(id, outs);
      expect(read.props.verification).toMatchObject({ status: "ok", failures: [] });
      expect(read.props.points[0]).toMatchObject({ id: pointId, status: "ok" });
      expect(await filesUnder(path.join(tempDir(), "spool"))).toEqual([]);

      const manifestKey = `${pointFolder}/manifest.json`;
      const verified = await cofferOnSwift("verify", manifestKey, ["--full", "--quiet"]);
      expect(verified.code).toBe(0);
      expect(JSON.parse(verified.stdout)).toMatchObject({ status: "ok", level: "full" });
      for (const [item, disk] of [
        ["web-1-root", web],
        ["db-1-vda", db],
      ]) {
        const to = path.join(tempDir(), `${item}.restored.raw`);
        const restored = await cofferOnSwift("restore", manifestKey, ["--item", item, "--to", to, "--quiet"]);
        expect(restored).toMatchObject({ code: 0 });
        expect((await fs.readFile(to)).equals(await fs.readFile(disk))).toBe(true);
      }

      // A new point; retention keeps the newest only, so the first one's objects and segments go.
      const next = { ...inputs, trigger: "2026-11-28", history: { retention: { keepLast: 1 } } };
      const { outs: updated } = await setProvider.update(id, read.props, next);
      expect(updated.points.map((p: { id: string }) => p.id)).not.toContain(pointId);
      expect(updated.points).toHaveLength(1);
      expect(await objectsUnder(`${pointFolder}/`)).toEqual([]);
      const second = `sets/zone-a/${id}/${updated.points[0].id}`;
      expect((await objectsUnder(`${second}/`)).sort()).toEqual(
        [`${second}/db-1-vda.qcow2.luks`, `${second}/manifest.json`, `${second}/web-1-root.qcow2.luks`].sort(),
      );

      await setProvider.delete(id, updated);
      expect(await objectsUnder("sets/")).toEqual([]);
      expect(await containerListing(loop, `${testContainer}_segments`, `${prefix}/sets/`)).toEqual([]);
      expect(await objectsUnder(".coffer/")).toEqual([".coffer/target.json", ".coffer/zones/zone-a/policy.json"]);
    } finally {
      await vm.stop();
    }
  });

  test("an object server killed mid-backup: the point completes or leaves nothing; verifies, restores", async () => {
    const policy = await swiftPolicy();
    const disk = path.join(tempDir(), "big-1.raw");
    await makeRawDisk(disk, 96);
    // The server swiftStore.test.ts kills too: two runs at once on one cluster then never stop two of three.
    const victim = swiftLoopNow().objectServers[1]; // as swift.json says now: an up may have restarted it
    expect(running(victim.pid)).toBe(true);
    const inputs = await setInputs(policy, [{ name: "big-1", disk }]);
    let killed = false;
    let settled = false;
    // Kill the server once the first segments of the point are stored: the upload is under way.
    const watcher = (async () => {
      while (!killed && !settled) {
        const segments = await containerListing(loop, `${testContainer}_segments`, `${prefix}/sets/`);
        if (segments.length >= 2) {
          process.kill(victim.pid, "SIGKILL");
          killed = true;
        } else await new Promise((resolve) => setTimeout(resolve, 25));
      }
    })();
    let outcome: { id: string; outs: any } | Error;
    try {
      outcome = await setProvider
        .create(inputs)
        .then(({ id, outs }) => ({ id, outs }))
        .catch((error: Error) => error)
        .finally(() => (settled = true));
      await watcher;
      expect(killed).toBe(true);
      expect(running(victim.pid)).toBe(false);
      if (outcome instanceof Error) {
        // Failed cleanly: no manifest, nothing of the point, no segments.
        expect(outcome.message).toMatch(/point not taken, nothing of it was kept/);
        expect(outcome.message).not.toContain(loop.key);
        expect((await objectsUnder("sets/")).filter((k) => k.endsWith("/manifest.json"))).toEqual([]);
        expect(await containerListing(loop, `${testContainer}_segments`, `${prefix}/sets/`)).toEqual([]);
        return;
      }
      expect(outcome.outs.verification).toMatchObject({ status: "ok", failures: [] });
    } finally {
      await watcher;
      await swiftLoopUp(loop);
    }
    expect(running(swiftLoopNow().objectServers[1].pid)).toBe(true);
    // With every server up again: it verifies on refresh and restores byte for byte.
    const { id, outs } = outcome;
    const read = await setProvider.read(id, outs);
    expect(read.props.verification).toMatchObject({ status: "ok", failures: [] });
    const manifestKey = `sets/zone-a/${id}/${outs.points[0].id}/manifest.json`;
    const to = path.join(tempDir(), "big-1.restored.raw");
    const restored = await cofferOnSwift("restore", manifestKey, ["--item", "big-1", "--to", to, "--quiet"]);
    expect(restored).toMatchObject({ code: 0 });
    expect((await fs.readFile(to)).equals(await fs.readFile(disk))).toBe(true);
    expect(await filesUnder(path.join(tempDir(), "spool"))).toEqual([]);
  });

  test("a wrong key fails at the policy's create, naming the target and never the key", async () => {
    prefix = `run-${randomBytes(6).toString("hex")}`;
    const target = { kind: "swift", authUrl: loop.authUrl, user: loop.user, container: testContainer, prefix };
    const wrongKey = "not-the-key-of-this-user-93";
    const checked = await policyProvider.check({}, { zone: "zone-a", target, targetKey: wrongKey });
    const error = (await policyProvider.create(checked.inputs!).then(
      () => new Error("created"),
      (e: Error) => e,
    )) as Error & { code?: string };
    expect(error).toMatchObject({ code: "TARGET_UNREACHABLE" });
    expect(error.message).toMatch(/check target.authUrl, target.user and target.key/);
    expect(error.message).not.toContain(wrongKey);
  });
});
