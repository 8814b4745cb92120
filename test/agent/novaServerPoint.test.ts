/**
 * A Nova server's point taken by takePoint (the fake cloud's API, the real agent and qemu-img): each
 * disk its own manifest item, each restored byte for byte by the coffer CLI; scrubStaging zeroes the
 * staged copies before they are removed.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { readManifest } from "../../provider/agent/manifest";
import { AgentClient, agentClient } from "../../provider/backupSet/agentClient";
import { planPoint } from "../../provider/backupSet/plan";
import { backupSetInputs } from "../../provider/backupSet/schema";
import { takePoint } from "../../provider/backupSet/take";
import { cloudConfig } from "../../provider/openstack/config";
import { openCloud } from "../../provider/openstack/index";
import { runCoffer } from "../support/cofferCli";
import { FakeNovaCloud } from "../support/fakeNovaCloud";
import { projectId } from "../support/fakeOpenStack";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const MANIFEST_KEY = "the policy's manifest key, nova point test";
const tempDir = useTempDir("coffer-nova-point-");
const MiB = 1024 * 1024;

/** A raw disk of `mib` MiB: zeros with random bytes at its start and end. */
function diskBytes(mib: number): Buffer {
  const bytes = Buffer.alloc(mib * MiB);
  randomBytes(4096).copy(bytes, 0);
  randomBytes(4096).copy(bytes, bytes.length - 4096);
  return bytes;
}

test("a server's root disk and attached volume become items web and web.vdb, restored byte for byte", async () => {
  const root = diskBytes(4);
  const data = diskBytes(2);
  const cloud = new FakeNovaCloud({ id: "srv-1", image: "base-1", root, rootFormat: "raw" }, [
    { id: "vol-data", device: "/dev/vdb", bytes: data },
  ]);
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  const inputs = backupSetInputs.parse({
    policy: {
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: target },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 0,
      encrypted: false,
    },
    keys: { manifestKey: MANIFEST_KEY },
    sources: [{ name: "web", novaServer: "srv-1" }],
    trigger: "t1",
  });
  const plan = { ...planPoint(inputs, { setId: "set-nova", pointId: "p-1" }), scrubStaging: true };
  // What the agent stored was zeroed before removal: the staged files, read through fds kept open.
  const stagedFds: fs.FileHandle[] = [];
  const agent = (host: string | undefined): AgentClient => {
    const real = agentClient(host);
    return {
      where: real.where,
      call: (async (command: string, request: { source?: { disk?: string } }, options?: object) => {
        if (command === "backup-item") stagedFds.push(await fs.open(request.source!.disk!, "r"));
        return real.call(command as "backup-item", request as never, options);
      }) as AgentClient["call"],
    };
  };
  const config = cloudConfig({ authUrl: "http://127.0.0.1:5000/v3", userName: "d", password: "pw", projectName: "d" });
  const access = {
    cloud: openCloud(config, cloud.fake.deps()),
    project: { authUrl: config.authUrl, projectId },
    waits: cloud.fake.deps(),
  };
  const taken = await takePoint(plan, {
    agent,
    cloud: async () => access,
    now: () => new Date(),
    progress: () => undefined,
  });

  expect(taken.items.map((i) => [i.name, i.source.kind, i.virtualSize])).toEqual([
    ["web", "novaServer", root.length],
    ["web.vdb", "novaServer", data.length],
  ]);
  expect(taken.cloudItems).toEqual([]);
  expect(taken.refs).toEqual([]);
  const read = readManifest(await fs.readFile(taken.manifestPath, "utf8"));
  if (!read.ok) throw new Error(read.problem);
  expect(read.manifest.schemaVersion).toBe(4);
  expect(read.manifest.items.map((i) => [i.name, i.source.kind === "novaServer" && i.source.disk.role])).toEqual([
    ["web", "root"],
    ["web.vdb", "volume"],
  ]);
  expect(cloud.leftovers()).toEqual([]);

  expect(stagedFds).toHaveLength(2);
  for (const handle of stagedFds) {
    const { size } = await handle.stat();
    const bytes = Buffer.alloc(size);
    await handle.read(bytes, 0, size, 0);
    await handle.close();
    expect([size > 0, bytes.every((b) => b === 0)]).toEqual([true, true]);
  }
  const stagingDir = path.join(target, ".coffer", "staging");
  expect(await fs.readdir(stagingDir).catch(() => [])).toEqual([]);

  const keyFile = path.join(tempDir(), "manifest.key");
  await fs.writeFile(keyFile, MANIFEST_KEY, { mode: 0o600 });
  const verified = await runCoffer([
    "verify",
    "--manifest",
    taken.manifestPath,
    "--full",
    "--manifest-key-file",
    keyFile,
  ]);
  expect([verified.code, JSON.parse(verified.stdout).status]).toEqual([0, "ok"]);
  for (const [item, bytes] of [
    ["web", root],
    ["web.vdb", data],
  ] as const) {
    const to = path.join(tempDir(), `${item}.raw`);
    const restore = ["restore", "--manifest", taken.manifestPath, "--item", item, "--to", to];
    const restored = await runCoffer([...restore, "--manifest-key-file", keyFile]);
    expect([item, restored.code, restored.stderr]).toEqual([item, 0, expect.any(String)]);
    expect((await fs.readFile(to)).equals(bytes)).toBe(true);
  }

  // restore --to-nova refuses, before it reaches any cloud, what it can't do.
  const toNova = ["restore", "--manifest", taken.manifestPath, "--to-nova"];
  const refusals: [string[], RegExp][] = [
    [["--item", "web.vdb", "--manifest-key-file", keyFile], /item web.vdb is a volume of server web: give --item web/],
    [["--item", "web"], /the manifest must be checked before a server is made from it/],
    [["--item", "web", "--without-metadata"], /--without-metadata .*: give --flavor and --network/],
    [
      ["--item", "web", "--to-cinder", "--manifest-key-file", keyFile],
      /give one of --to-cinder, --to-glance and --to-nova/,
    ],
  ];
  for (const [args, message] of refusals) {
    const refused = await runCoffer([...toNova, ...args]);
    expect([args, refused.code, refused.stdout]).toEqual([args, 2, ""]);
    expect(refused.stderr).toMatch(message);
  }
  const flavorAlone = await runCoffer(["restore", "--manifest", taken.manifestPath, "--item", "web", "--flavor", "x"]);
  expect(flavorAlone.stderr).toMatch(/--flavor and --network go with --to-nova/);
});
