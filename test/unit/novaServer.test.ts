import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import type { ManifestItem } from "../../provider/agent/manifest";
import { cloudConfig } from "../../provider/openstack/config";
import { openCloud } from "../../provider/openstack/index";
import type { CloudTakeContext, StoredCopy } from "../../provider/sources/kind";
import { novaPreflight, restoreToNova, type NovaDisk } from "../../provider/sources/novaRestore";
import { NovaServerItem, novaServerSource, volumeItemName } from "../../provider/sources/novaServer";
import { sourceItemSchema } from "../../provider/sources/registry";
import { FakeNovaCloud, type FakeStep } from "../support/fakeNovaCloud";
import { projectId } from "../support/fakeOpenStack";
import { useTempDir } from "../support/tempDir";
import { fakeAgent } from "../support/fakeAgent";
import { planPoint } from "../../provider/backupSet/plan";
import { backupSetInputs } from "../../provider/backupSet/schema";
import { takePoint } from "../../provider/backupSet/take";

const config = cloudConfig({
  authUrl: "http://127.0.0.1:5000/v3",
  userName: "demo",
  password: "pw",
  projectName: "demo",
});
const rootBytes = randomBytes(64 * 1024);
const dataBytes = randomBytes(32 * 1024);
const bootBytes = randomBytes(48 * 1024);
const take = novaServerSource.cloud!.take;
const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

describe("novaServer: a Nova server's disks copied into the target", () => {
  const tempDir = useTempDir("coffer-nova-unit-");

  /** A take's context on `cloud`; storeCopy records each staged file's bytes as the agent would read them. */
  function contextOn(cloud: FakeNovaCloud, options: { failStore?: boolean; scrub?: boolean } = {}) {
    const stored: { name: string; format: string; bytes: Buffer; file: string }[] = [];
    const progress: string[] = [];
    const stagingDir = path.join(tempDir(), "staging");
    const ctx: CloudTakeContext = {
      cloud: openCloud(config, cloud.fake.deps()),
      project: { authUrl: config.authUrl, projectId },
      waits: cloud.fake.deps(),
      subject: "source web",
      progress: (line) => progress.push(line),
      label: { setId: "set-1", pointId: "p1", source: "web" },
      earlier: [],
      stagingDir,
      ...(options.scrub ? { scrubStaging: true } : {}),
      storeCopy: async (file, copy = {}) => {
        const bytes = await fs.readFile(file);
        if (options.failStore) throw new Error("the agent failed");
        const name = copy.name ?? "web";
        stored.push({ name, format: copy.format ?? "raw", bytes, file });
        return storedCopy(name, bytes);
      },
    };
    return { ctx, stored, progress, stagingDir };
  }

  const stagedFiles = async (dir: string) => fs.readdir(dir).catch(() => []);

  test("image-backed: the root through createImage, each volume through a snapshot, nothing left", async () => {
    const cloud = new FakeNovaCloud({ id: "srv-1", image: "base-1", root: rootBytes, rootFormat: "qcow2" }, [
      { id: "vol-data", device: "/dev/vdb", bytes: dataBytes },
    ]);
    const { ctx, stored, stagingDir } = contextOn(cloud);
    const taken = await take({ novaServer: "srv-1" }, ctx);

    expect(stored.map(({ name, format, bytes }) => ({ name, format, sha: sha256(bytes) }))).toEqual([
      { name: "web", format: "qcow2", sha: sha256(rootBytes) },
      { name: "web.vdb", format: "raw", sha: sha256(dataBytes) },
    ]);
    expect(taken.refs).toEqual([]);
    expect(taken.stored).toBeUndefined();
    expect(taken.copies!.map((c) => c.stored.name)).toEqual(["web", "web.vdb"]);
    const [root, data] = taken.copies!.map((c) => c.source);
    expect(taken.source).toBe(root);
    expect(root).toMatchObject({
      kind: "novaServer",
      serverId: "srv-1",
      cloud: { projectId },
      disk: { role: "root", via: "image", format: "qcow2", hashAlgo: "sha512", sizeBytes: rootBytes.length },
      server: {
        name: "web-1",
        flavor: { name: "coffer.tiny", vcpus: 1, ramMiB: 64, diskGiB: 1 },
        imageId: "base-1",
        bootedFromVolume: false,
        metadata: { role: "web" },
        keyName: "ops",
        securityGroups: ["default", "web"],
        networks: [{ name: "private", addresses: [{ addr: "10.0.0.5", version: 4, type: "fixed" }] }],
        blockDeviceMapping: [
          { volumeId: "vol-data", device: "/dev/vdb", boot: false, deleteOnTermination: false, item: "web.vdb" },
        ],
        userData: Buffer.from("#cloud-config\n").toString("base64"),
      },
    });
    expect(root.disk.hashValue).toBe(createHash("sha512").update(rootBytes).digest("hex"));
    expect(data).toMatchObject({
      disk: {
        role: "volume",
        device: "/dev/vdb",
        volumeId: "vol-data",
        via: "snapshot",
        format: "raw",
        volume: { sizeGiB: 1, bootable: false, type: "lvmdriver-1", metadata: { role: "data" } },
      },
    });
    expect(data.server).toBeUndefined();
    // Each is a manifest item's source, as the manifest reads it back.
    for (const copy of taken.copies!) expect(sourceItemSchema.parse(copy.source)).toEqual(copy.source);

    // The snapshots were all taken before the first copy: the disks are from one moment.
    const firstVolume = cloud.made.findIndex((m) => m.startsWith("volume"));
    expect(cloud.made.slice(0, firstVolume)).toEqual(["image img-1", "snapshot snap-2"]);
    expect(cloud.leftovers()).toEqual([]);
    expect(await stagedFiles(stagingDir)).toEqual([]);
    const snapshotRequest = cloud.fake.requests.find(
      (r) => r.method === "POST" && r.url.pathname.endsWith("/snapshots"),
    );
    expect(JSON.parse(snapshotRequest!.body as string).snapshot).toMatchObject({ volume_id: "vol-data", force: true });
  });

  test("a server booted from a volume: its boot volume is the root item; no createImage", async () => {
    const cloud = new FakeNovaCloud({ id: "srv-2" }, [
      { id: "vol-boot", device: "/dev/vda", bytes: bootBytes },
      { id: "vol-data", device: "/dev/vdb", bytes: dataBytes },
    ]);
    const { ctx, stored } = contextOn(cloud);
    const taken = await take({ novaServer: "srv-2" }, ctx);
    expect(stored.map(({ name, bytes }) => ({ name, sha: sha256(bytes) }))).toEqual([
      { name: "web", sha: sha256(bootBytes) },
      { name: "web.vdb", sha: sha256(dataBytes) },
    ]);
    const [root, data] = taken.copies!.map((c) => c.source);
    expect(root.disk).toMatchObject({ role: "root", volumeId: "vol-boot", device: "/dev/vda", via: "snapshot" });
    expect(root.server).toMatchObject({
      bootedFromVolume: true,
      blockDeviceMapping: [
        { volumeId: "vol-boot", boot: true, item: "web" },
        { volumeId: "vol-data", boot: false, item: "web.vdb" },
      ],
    });
    expect(root.server!.imageId).toBeUndefined();
    expect(data.disk.role).toBe("volume");
    expect(
      cloud.fake.requests.some((r) => r.url.pathname.endsWith("/action") && r.url.pathname.includes("servers")),
    ).toBe(false);
    expect(cloud.leftovers()).toEqual([]);
  });

  // Each step, what fails, and how many things the cloud had made by then.
  const steps: [FakeStep, RegExp, number][] = [
    ["createImage", /Cannot 'createImage'/, 0],
    ["imageKilled", /glance image img-1 .*killed/, 2],
    ["download", /does not match the image's record/, 2],
    ["snapshot", /snapshot refused/, 1],
    ["volume", /Invalid input/, 2],
    ["upload", /upload refused/, 3],
  ];
  test.each(steps)("a failure at %s leaves no image, snapshot, volume or staged file", async (step, error, made) => {
    const cloud = new FakeNovaCloud({ id: "srv-1", image: "base-1", root: rootBytes }, [
      { id: "vol-data", device: "/dev/vdb", bytes: dataBytes },
    ]);
    cloud.failAt = step;
    const { ctx, stagingDir } = contextOn(cloud);
    await expect(take({ novaServer: "srv-1" }, ctx)).rejects.toThrow(error);
    expect(cloud.made.length).toBe(made);
    expect(cloud.leftovers()).toEqual([]);
    expect(await stagedFiles(stagingDir)).toEqual([]);
  });

  test("a failure to store a copy leaves nothing either (scrubStaging on)", async () => {
    const cloud = new FakeNovaCloud({ id: "srv-1", image: "base-1", root: rootBytes }, [
      { id: "vol-data", device: "/dev/vdb", bytes: dataBytes },
    ]);
    const { ctx, stagingDir } = contextOn(cloud, { failStore: true, scrub: true });
    await expect(take({ novaServer: "srv-1" }, ctx)).rejects.toThrow("the agent failed");
    expect(cloud.leftovers()).toEqual([]);
    expect(await stagedFiles(stagingDir)).toEqual([]);
  });

  test("an encrypted attached volume is refused before anything is made", async () => {
    const cloud = new FakeNovaCloud({ id: "srv-1", image: "base-1", root: rootBytes }, [
      { id: "vol-luks", device: "/dev/vdb", bytes: dataBytes, encrypted: true },
    ]);
    const { ctx } = contextOn(cloud);
    await expect(take({ novaServer: "srv-1" }, ctx)).rejects.toThrow(
      /source web: volume vol-luks is encrypted: .* cinderVolume source with the set's keyEscrow/,
    );
    expect(cloud.made).toEqual([]);
  });

  test("a volume's item is named by its device, and the input takes a server's id", () => {
    expect(volumeItemName("web", { device: "/dev/vdb", volumeId: "5c0e" })).toBe("web.vdb");
    expect(volumeItemName("web", { device: null, volumeId: "5c0e1234-aaaa" })).toBe("web.5c0e1234");
    expect(novaServerSource.input.safeParse({ novaServer: "9b1e-77" }).success).toBe(true);
    expect(novaServerSource.input.safeParse({ novaServer: "my server" }).error?.issues[0].message).toMatch(
      /a Nova server's id \(a UUID\), not its name/,
    );
  });
});

describe("restore --to-nova's preflight: decided before anything is made", () => {
  const flavors = [
    { id: "f-1", name: "coffer.tiny", vcpus: 1, ram: 64, disk: 1 },
    { id: "f-2", name: "m1.small", vcpus: 1, ram: 2048, disk: 20 },
  ];
  async function rootOf(extra: object = {}): Promise<NovaDisk> {
    const cloud = new FakeNovaCloud({ id: "srv-1", image: "base-1", root: rootBytes, extra }, []);
    const ctx = {
      cloud: openCloud(config, cloud.fake.deps()),
      project: { authUrl: config.authUrl, projectId },
      waits: cloud.fake.deps(),
      subject: "source web",
      progress: () => undefined,
      label: { setId: "set-1", pointId: "p1", source: "web" },
      earlier: [],
      stagingDir: path.join(tempDir(), "staging"),
      storeCopy: async (_file: string, copy: { name?: string } = {}) => storedCopy(copy.name ?? "web", rootBytes),
    };
    const taken = await take({ novaServer: "srv-1" }, ctx);
    const source = taken.source as NovaServerItem;
    return { name: "web", source, withFile: () => Promise.reject(new Error("no data in a preflight")) };
  }
  const tempDir = useTempDir("coffer-nova-preflight-");
  const cloudWithFlavors = () => {
    const cloud = new FakeNovaCloud({ id: "x" });
    cloud.fake.on("GET", /\/flavors\/detail$/, () => ({ json: { flavors } }));
    return openCloud(config, cloud.fake.deps());
  };

  test("the recorded flavor by name, and networks the server did not have: none", async () => {
    const root = await rootOf({ addresses: {} });
    const checked = await novaPreflight(root, [], cloudWithFlavors(), {}, []);
    expect(checked).toMatchObject({ ok: true, flavorId: "f-1", networks: "none" });
  });

  test("a flavor that is not there, recorded networks, and a missing item: each says what to give", async () => {
    const root = await rootOf();
    const checked = await novaPreflight(root, [], cloudWithFlavors(), { flavor: "m9.huge" }, ["web.vdc"]);
    expect(checked.ok).toBe(false);
    expect(checked.checks).toEqual([
      {
        check: "flavor",
        ok: false,
        detail: "no flavor m9.huge in this cloud: give --flavor with one of coffer.tiny, m1.small",
      },
      {
        check: "networks",
        ok: false,
        detail:
          "the server was on network(s) private: give --network <id> for each (its id in this cloud), " +
          "or --network none",
      },
      { check: "disks", ok: false, detail: "the manifest has no item web.vdc: restore another point" },
    ]);
    const given = await novaPreflight(root, [], cloudWithFlavors(), { flavor: "f-2", networks: ["net-1"] }, []);
    expect(given).toMatchObject({ ok: true, flavorId: "f-2", networks: [{ uuid: "net-1" }] });
  });
});

describe("restore --to-nova: volumes first, then the root disk and the server; nothing temporary left", () => {
  const tempDir = useTempDir("coffer-nova-restore-");

  /** A point of an image-backed server with one volume, taken on `cloud`; its disks as a restore reads them. */
  async function pointOf(cloud: FakeNovaCloud) {
    const files = new Map<string, Buffer>();
    const ctx: CloudTakeContext = {
      cloud: openCloud(config, cloud.fake.deps()),
      project: { authUrl: config.authUrl, projectId },
      waits: cloud.fake.deps(),
      subject: "source web",
      progress: () => undefined,
      label: { setId: "set-1", pointId: "p1", source: "web" },
      earlier: [],
      stagingDir: path.join(tempDir(), "staging"),
      storeCopy: async (file, copy = {}) => {
        files.set(copy.name ?? "web", await fs.readFile(file));
        return storedCopy(copy.name ?? "web", files.get(copy.name ?? "web")!);
      },
    };
    const taken = await take({ novaServer: "srv-1" }, ctx);
    const disks = taken.copies!.map(({ source, stored }): NovaDisk => ({
      name: stored.name,
      source,
      withFile: async (_format, work) => {
        const file = path.join(tempDir(), `${stored.name}.img`);
        await fs.writeFile(file, files.get(stored.name)!);
        try {
          return await work(file);
        } finally {
          await fs.rm(file, { force: true });
        }
      },
    }));
    cloud.made.length = 0;
    return { root: disks[0], volumes: disks.slice(1), cloud: ctx.cloud };
  }

  const sourceCloud = () =>
    new FakeNovaCloud({ id: "srv-1", image: "base-1", root: rootBytes, extra: { addresses: {} } }, [
      { id: "vol-data", device: "/dev/vdb", bytes: dataBytes, sizeGiB: 2 },
    ]);
  const checked = { ok: true, checks: [], flavorId: "f-1", networks: "none" as const };

  test("makes the volume, then the root image and the server, attaches the volume, deletes the images", async () => {
    const fake = sourceCloud();
    const { root, volumes, cloud } = await pointOf(fake);
    const progress: string[] = [];
    const options = { applyMetadata: true, waits: fake.fake.deps(), progress: (line: string) => progress.push(line) };
    const restored = await restoreToNova(root, volumes, cloud, checked, options);

    expect(fake.made).toEqual([
      "image img-5",
      "volume vol-6 from img-5",
      "image img-7",
      "server srv-8",
      "attach vol-6",
    ]);
    expect(restored).toEqual({
      serverId: "srv-8",
      flavorId: "f-1",
      volumes: [{ item: "web.vdb", volumeId: "vol-6", device: "/dev/vdb" }],
      metadataApplied: true,
    });
    expect(fake.volumes.get("vol-6")).toMatchObject({ size: 2, bytes: dataBytes, status: "in-use" });
    const { request, attached } = fake.created.get("srv-8")!;
    expect(attached).toEqual(["vol-6"]);
    expect(request).toEqual({
      name: "web-1-restored",
      imageRef: "img-7",
      flavorRef: "f-1",
      networks: "none",
      metadata: { role: "web" },
      key_name: "ops",
      user_data: Buffer.from("#cloud-config\n").toString("base64"),
    });
    // Only the restored server and volume are left: every image made for the transfer is gone.
    expect(fake.leftovers()).toEqual(["server srv-8", "volume vol-6"]);
    const uploads = fake.fake.requests.filter((r) => r.method === "POST" && r.url.pathname === "/v2/images");
    expect(uploads.map((r) => JSON.parse(r.body as string).disk_format)).toEqual(["raw", "qcow2"]);
  });

  test("without an authentic manifest's metadata, the server gets none of it", async () => {
    const fake = sourceCloud();
    const { root, volumes, cloud } = await pointOf(fake);
    const options = { applyMetadata: false, waits: fake.fake.deps(), progress: () => undefined, name: "web-back" };
    await restoreToNova(root, volumes, cloud, checked, options);
    expect(fake.created.get("srv-8")!.request).toEqual({
      name: "web-back",
      imageRef: "img-7",
      flavorRef: "f-1",
      networks: "none",
    });
  });

  test.each(["createServer", "attach"] as const)(
    "a failure at %s deletes what the restore made, and says so",
    async (step) => {
      const fake = sourceCloud();
      const { root, volumes, cloud } = await pointOf(fake);
      fake.failAt = step;
      const options = { applyMetadata: true, waits: fake.fake.deps(), progress: () => undefined };
      await expect(restoreToNova(root, volumes, cloud, checked, options)).rejects.toThrow(
        /^restore --to-nova failed, and what it had made was deleted: .*(Invalid flavorRef|attach refused)/,
      );
      expect(fake.leftovers()).toEqual([]);
    },
  );
});

describe("takePoint with a server: each disk its own item, and no item name taken twice", () => {
  const tempDir = useTempDir("coffer-nova-point-");

  async function pointOf(sources: object[]) {
    const cloud = new FakeNovaCloud({ id: "srv-1", image: "base-1", root: rootBytes }, [
      { id: "vol-data", device: "/dev/vdb", bytes: dataBytes },
    ]);
    const agent = fakeAgent({ now: () => new Date() });
    const inputs = backupSetInputs.parse({
      policy: {
        id: "zone-a-1",
        zone: "zone-a",
        target: { kind: "directory", path: path.join(tempDir(), "target") },
        compression: "none",
        integrityCheck: "metadata",
        bandwidthLimitMiBps: 0,
        encrypted: false,
      },
      keys: { manifestKey: "unit-test-manifest-key" },
      sources,
      trigger: "t1",
    });
    const access = {
      cloud: openCloud(config, cloud.fake.deps()),
      project: { authUrl: config.authUrl, projectId },
      waits: cloud.fake.deps(),
    };
    const taking = takePoint(planPoint(inputs, { setId: "set-1", pointId: "p1" }), {
      agent: agent.host.agent,
      cloud: async () => access,
      now: () => new Date(),
      progress: () => undefined,
    });
    return { taking, cloud, agent };
  }

  test("the root disk and the volume are items web and web.vdb, the server's source in each", async () => {
    const { taking, cloud, agent } = await pointOf([{ name: "web", novaServer: "srv-1" }]);
    const taken = await taking;
    expect(taken.items.map((i) => [i.name, i.source.kind])).toEqual([
      ["web", "novaServer"],
      ["web.vdb", "novaServer"],
    ]);
    expect(taken.manifest.items.map((i) => i.name)).toEqual(["web", "web.vdb"]);
    const stores = agent.calls
      .filter((c) => c.command === "backup-item")
      .map((c) => [c.request.name, c.request.source.format]);
    expect(stores).toEqual([
      ["web", "qcow2"],
      ["web.vdb", "raw"],
    ]);
    expect(cloud.leftovers()).toEqual([]);
  });

  test("a volume's item that would have another source's name fails the point, which keeps nothing", async () => {
    const { taking, cloud, agent } = await pointOf([
      { name: "web", novaServer: "srv-1" },
      { name: "web.vdb", disk: "/srv/disks/other.raw", format: "raw" },
    ]);
    await expect(taking).rejects.toThrow(/source web: its copy web.vdb is another item's name: rename that source/);
    expect(cloud.leftovers()).toEqual([]);
    expect(agent.calls.some((c) => c.command === "delete-set")).toBe(true);
    expect(agent.manifests.size).toBe(0);
  });
});

function storedCopy(name: string, bytes: Buffer): StoredCopy {
  const item: Omit<ManifestItem, "source"> = {
    name,
    host: "h",
    file: `${name}.qcow2`,
    format: "qcow2",
    compression: "none",
    encrypted: false,
    virtualSize: bytes.length,
    sizeBytes: bytes.length,
    streamSha256: sha256(bytes),
    fileSha256: sha256(bytes),
    verifiedAtBackup: "metadata",
    startedAt: "2026-11-26T12:00:00Z",
    finishedAt: "2026-11-26T12:00:01Z",
  };
  return item;
}
