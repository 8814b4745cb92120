/**
 * The pure parts of incremental chains: when a backup may be a link (linkDecision), which point the
 * next one builds on (chainFrom), what a manifest with links must say (schema 7, keyOf), and how a
 * link is opened over its bases (backupImageOpts).
 */
import { bitmapName } from "../../provider/agent/chainLink";
import { backupImageOpts } from "../../provider/agent/image";
import { MANIFEST_KIND, Manifest, manifestSchema, manifestSchemaVersionFor } from "../../provider/agent/manifest";
import { chainFrom, continueChains, previewChains } from "../../provider/backupSet/chain";
import { planPoint } from "../../provider/backupSet/plan";
import type { AgentClient } from "../../provider/backupSet/agentClient";
import type { PointLocation, PointRecord } from "../../provider/backupSet/state";
import { linkDecision } from "../../provider/sources/qemuCopy";
import { backupSetInputs } from "../../provider/backupSet/schema";

/** A policy as the resource class applies it, on target /t in zone z. */
const policyOf = (encrypted: boolean) => ({
  id: "p",
  zone: "z",
  target: { kind: "directory", path: "/t" },
  compression: "zstd",
  integrityCheck: "full",
  bandwidthLimitMiBps: 0,
  encrypted,
});

const base = {
  pointId: "p1",
  item: "vm",
  file: "vm.qcow2.luks",
  manifestSha256: "a".repeat(64),
  bitmap: bitmapName("s", "p1"),
  depth: 0,
  virtualSize: 1024,
};
const request = { bitmap: bitmapName("s", "p2"), bitmapPrefix: "coffer.s.", base };
const bitmap = { name: base.bitmap, recording: true, persistent: true, busy: false, granularity: 65536, count: 0 };

describe("linkDecision: a link only on a bitmap Coffer can trust", () => {
  test("a qcow2 disk with the base's bitmap, recording and consistent: a link that starts the next bitmap", () => {
    expect(linkDecision(request, { driver: "qcow2", bitmaps: [bitmap], virtualSize: 1024 })).toEqual({
      start: request.bitmap,
      base,
    });
  });

  test.each([
    ["missing", [], /is not on the disk/],
    ["inconsistent", [{ ...bitmap, inconsistent: true, recording: false }], /is inconsistent: its QEMU stopped/],
    ["disabled", [{ ...bitmap, recording: false }], /is not recording writes/],
    ["busy", [{ ...bitmap, busy: true }], /in use by another job/],
    ["another set's", [{ ...bitmap, name: "coffer.other.p1" }], /is not on the disk/],
  ])("%s bitmap: a full backup that starts a new one, and says why", (_case, bitmaps, why) => {
    const decided = linkDecision(request, { driver: "qcow2", bitmaps, virtualSize: 1024 });
    expect(decided).toEqual({ start: request.bitmap, fullBecause: expect.stringMatching(why) });
    expect(decided.fullBecause).toContain("point p1");
  });

  test("a disk resized since the base: a full backup (its bitmap does not cover what the size change did)", () => {
    const resized = { ...request, base: { ...base, virtualSize: 512 } };
    expect(linkDecision(resized, { driver: "qcow2", bitmaps: [bitmap], virtualSize: 1024 })).toEqual({
      start: request.bitmap,
      fullBecause: "the disk's size changed since point p1 (512 to 1024 bytes)",
    });
  });

  test("no base: a full backup with the provider's reason; a raw disk: full, and no bitmap started", () => {
    const { base: _base, ...first } = request;
    expect(
      linkDecision(
        { ...first, fullBecause: "it is the set's first point" },
        { driver: "qcow2", bitmaps: [], virtualSize: 1024 },
      ),
    ).toEqual({
      start: request.bitmap,
      fullBecause: "it is the set's first point",
    });
    expect(linkDecision(request, { driver: "raw", bitmaps: [bitmap], virtualSize: 1024 })).toEqual({
      fullBecause: expect.stringMatching(/the disk is raw: only a qcow2 disk keeps a dirty bitmap/),
    });
  });
});

describe("chainFrom: links build on the newest point, when it is good, current and here", () => {
  const here: PointLocation = { targetPath: "/t", zone: "z", manifestHost: "local", hosts: ["local"] };
  const point = (id: string, takenAt: string, more: Partial<PointRecord> = {}): PointRecord => ({
    id,
    takenAt,
    loc: 0,
    sizeBytes: 1,
    itemsSha256: "x",
    key: 1,
    status: "ok",
    checkedAt: takenAt,
    ...more,
  });
  const now = { keyVersion: 1, location: { targetPath: "/t", zone: "z", manifestHost: "local" } };
  const dirOf = (p: PointRecord) => `/t/sets/z/s/${p.id}`;

  test("the newest point by time, whatever the order in state", () => {
    const points = [point("p2", "2026-11-27T02:00:00Z"), point("p1", "2026-11-27T01:00:00Z")];
    expect(chainFrom(points, [here], now, dirOf)).toEqual({ pointId: "p2", pointDir: "/t/sets/z/s/p2" });
  });

  test.each([
    ["no point yet", [], /the set's first point/],
    ["a failed newest point", [point("p1", "2026-11-27T01:00:00Z", { status: "failed" })], /did not pass its last/],
    ["other keys", [point("p1", "2026-11-27T01:00:00Z", { key: 0 })], /the keys changed/],
    ["another location", [point("p1", "2026-11-27T01:00:00Z", { loc: 1 })], /another target, zone or host/],
  ])("%s: a full point, and why", (_case, points, why) => {
    const elsewhere = { ...here, targetPath: "/old" };
    expect(chainFrom(points as PointRecord[], [here, elsewhere], now, dirOf)).toEqual({
      fullBecause: expect.stringMatching(why),
    });
  });
});

describe("manifests with links", () => {
  const item = {
    name: "vm",
    host: "h",
    source: { kind: "qmp", socket: "/run/vm.qmp", device: "vda" },
    file: "vm.qcow2",
    format: "qcow2",
    compression: "zstd",
    encrypted: false,
    virtualSize: 1,
    sizeBytes: 1,
    streamSha256: "b".repeat(64),
    fileSha256: "c".repeat(64),
    verifiedAtBackup: "full",
    startedAt: "t",
    finishedAt: "t",
  } as const;
  const link = { ...item, chain: { bitmap: "coffer.s.p2", depth: 1, base: { ...base, bitmap: undefined } } };
  const manifest = (items: object[], more: object = {}) => ({
    kind: MANIFEST_KIND,
    setId: "s",
    pointId: "p2",
    name: "t",
    trigger: "t",
    zone: "z",
    policy: { compression: "zstd", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "full" },
    keySource: "manifest-key",
    qemuVersion: "7.2",
    createdAt: "t",
    items,
    ...more,
  });

  test("a link makes schema 7, which an older schema number can't claim; a full item with a chain stays older", () => {
    const { base: _base, ...fullChain } = link.chain;
    const withLink = manifest([link]);
    expect(manifestSchemaVersionFor(withLink as unknown as Manifest)).toBe(7);
    expect(manifestSchemaVersionFor(manifest([{ ...item, chain: fullChain }]) as unknown as Manifest)).toBe(4);
    expect(manifestSchema.safeParse({ ...withLink, schemaVersion: 7 }).success).toBe(true);
    const claimed = manifestSchema.safeParse({ ...withLink, schemaVersion: 6 });
    expect(claimed.success).toBe(false);
    expect(claimed.error?.issues[0].message).toMatch(/incremental backups .* are in schema 7 manifests/);
  });

  test("keyOf comes with a wrapped key", () => {
    const parsed = manifestSchema.safeParse({ ...manifest([item]), schemaVersion: 7, keyOf: "p1" });
    expect(parsed.error?.issues[0].message).toMatch(/keyOf names the point whose id binds the wrappedKey/);
  });
});

describe("backupImageOpts over a chain", () => {
  test("each base is the backing of the one above, with the one key, and the last has none", () => {
    expect(backupImageOpts("/p3/vm.qcow2.luks", true, ["/p2/vm.qcow2.luks", "/p,1/vm.qcow2.luks"])).toBe(
      [
        "driver=qcow2,file.driver=luks,file.key-secret=coffer-key,file.file.driver=file,file.file.filename=/p3/vm.qcow2.luks",
        "backing.driver=qcow2,backing.file.driver=luks,backing.file.key-secret=coffer-key,backing.file.file.driver=file",
        "backing.file.file.filename=/p2/vm.qcow2.luks",
        "backing.backing.driver=qcow2,backing.backing.file.driver=luks,backing.backing.file.key-secret=coffer-key",
        "backing.backing.file.file.driver=file,backing.backing.file.file.filename=/p,,1/vm.qcow2.luks",
        "backing.backing.backing=",
      ].join(","),
    );
    expect(backupImageOpts("/p1/vm.qcow2", false)).toBe(
      "driver=qcow2,file.driver=file,file.filename=/p1/vm.qcow2,backing=",
    );
  });
});

describe("the incremental source fields", () => {
  const inputs = (source: object) => ({
    policy: policyOf(false),
    keys: { manifestKey: "k" },
    sources: [{ name: "vm", ...source }],
    trigger: "t",
  });
  const problems = (source: object) => {
    const parsed = backupSetInputs.safeParse(inputs(source));
    return parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
  };

  test("incremental and fullEvery go with a running VM; incremental with a Cinder volume too", () => {
    expect(problems({ qmpSocket: "/run/q", device: "vda", incremental: true, fullEvery: 10 })).toEqual([]);
    expect(problems({ cinderVolume: "0b1c", incremental: true })).toEqual([]);
  });

  test("each misuse names its field and the fix", () => {
    expect(problems({ qmpSocket: "/run/q", device: "vda", fullEvery: 10 })).toEqual([
      "sources.0.fullEvery: fullEvery bounds a chain of incremental backups: add incremental: true, or remove fullEvery",
    ]);
    expect(problems({ qmpSocket: "/run/q", device: "vda", incremental: true, fullEvery: 1 })).toEqual([
      expect.stringMatching(/^sources.0.fullEvery: fullEvery must be a whole number of at least 2/),
    ]);
    expect(problems({ disk: "/d.raw", incremental: true })).toEqual([
      'sources.0.incremental: incremental needs format: "qcow2": a raw disk keeps no dirty bitmap, so each of its ' +
        "backups is full; remove incremental",
    ]);
    expect(problems({ disk: "/d.qcow2", format: "qcow2", incremental: true, fullEvery: 5 })).toEqual([]);
    expect(problems({ glanceImage: "0b1c", incremental: true })).toEqual([
      "sources.0.incremental: incremental only applies to a stopped VM's disk file (disk) or a running VM " +
        "(qmpSocket and device) or a Cinder volume (cinderVolume): remove incremental",
    ]);
  });
});

describe("previewChains: what preview says of a point's incremental sources", () => {
  const sources = [{ name: "vm", source: { qmpSocket: "/run/q", device: "vda", incremental: true } }];
  const where = { target: { path: "/t", zone: "z" } };
  const agentThat = (call: (command: string) => Promise<unknown>) => () =>
    ({ where: "local", call: call as never }) as AgentClient;

  test("no base point: a full backup each, and why, without asking any agent", async () => {
    const asked: string[] = [];
    const agent = agentThat(async (command) => {
      asked.push(command);
      return {};
    });
    const from = { fullBecause: "the keys change with this update" };
    expect(await previewChains("s", from, sources, agent, where)).toEqual([
      "source vm: a full backup: the keys change with this update",
    ]);
    expect(asked).toEqual([]);
  });

  test("a base point's manifest that can't be read: decided when the point is taken, and why", async () => {
    const agent = agentThat(async () => {
      throw new Error("ssh: connect to host kvm-7 port 22: Connection refused");
    });
    expect(await previewChains("s", { pointId: "p1", pointDir: "/t/sets/z/s/p1" }, sources, agent, where)).toEqual([
      "source vm: a link on point p1 or a full backup, decided when the point is taken " +
        "(ssh: connect to host kvm-7 port 22: Connection refused)",
    ]);
  });

  test("a base point whose manifest is gone or unreadable: a full backup", async () => {
    const from = { pointId: "p1", pointDir: "/t/sets/z/s/p1" };
    const gone = agentThat(async () => ({}));
    expect(await previewChains("s", from, sources, gone, where)).toEqual([
      "source vm: a full backup: the previous point p1's manifest is gone",
    ]);
    const unreadable = agentThat(async () => ({ text: "{" }));
    expect(await previewChains("s", from, sources, unreadable, where)).toEqual([
      expect.stringMatching(
        /^source vm: a full backup: the previous point p1's manifest can't be read \(manifest is not valid JSON/,
      ),
    ]);
  });
});

describe("continueChains: which sources link, on what, with which key", () => {
  const declared = (encrypted: boolean, sources: object[]) =>
    backupSetInputs.parse({
      policy: policyOf(encrypted),
      keys: { passphrase: "a passphrase of this set", manifestKey: "bWFuaWZlc3Qta2V5" },
      sources,
      trigger: "t",
    });
  const vm = { name: "vm", qmpSocket: "/run/q", device: "vda", incremental: true };
  const from = { pointId: "p1", pointDir: "/t/sets/z/s/p1" };
  /** An agent whose read-manifest answers with point p1's manifest, policy `encrypted`. */
  const agentWith = (encrypted: boolean) =>
    ({
      where: "local",
      call: async () => ({
        text: JSON.stringify({
          manifest: {
            kind: MANIFEST_KIND,
            schemaVersion: 4,
            setId: "s",
            pointId: "p1",
            name: "t",
            trigger: "t",
            zone: "z",
            policy: { compression: "zstd", encrypted, bandwidthLimitMiBps: 0, integrityCheck: "full" },
            keySource: encrypted ? "passphrase" : "manifest-key",
            qemuVersion: "7.2",
            createdAt: "t",
            items: [],
          },
          hmacSha256: "0".repeat(64),
        }),
      }),
    }) as unknown as AgentClient;

  test("only a qcow2 disk's sources chain through QEMU; a Cinder volume's incrementals stay Cinder's", () => {
    const plan = planPoint(declared(false, [vm, { name: "db", cinderVolume: "0b1c", incremental: true }]), {
      setId: "s",
      pointId: "p2",
    });
    expect(plan.items.map((i) => [i.name, i.incremental])).toEqual([
      ["vm", {}],
      ["db", undefined],
    ]);
  });

  test.each([
    [true, false, /^encryption is on now, and was not at point p1$/],
    [false, true, /^encryption is off now, and was not at point p1$/],
    [true, true, /^the previous point p1 has no key of its own \(made before per-point keys\)$/],
  ])("encrypted now %s, at the base %s: a full backup, never a link across keys", async (now, then, why) => {
    const plan = planPoint(declared(now, [vm]), { setId: "s", pointId: "p2" }, [], from);
    const continued = await continueChains(plan, agentWith(then), { path: "/t" });
    expect(continued.items[0].chain).toEqual({
      bitmap: "coffer.s.p2",
      bitmapPrefix: "coffer.s.",
      keep: "coffer.s.p1",
      fullBecause: expect.stringMatching(why),
    });
    expect(continued.keyOf).toBeUndefined();
    expect(continued.keys).toEqual(plan.keys);
  });
});
