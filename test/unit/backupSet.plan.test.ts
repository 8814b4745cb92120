import { UNKNOWN } from "../../provider/common/check";
import { provider } from "../../provider/backupSet";
import { boundedAll } from "../../provider/backupSet/provider";

const policy = {
  id: "zone-a-1",
  zone: "zone-a",
  target: { kind: "directory", path: "/srv/b" },
  compression: "zstd",
  integrityCheck: "full",
  bandwidthLimitMiBps: 0,
  encrypted: true,
};
const declared = {
  policy,
  keys: { passphrase: "correct horse battery staple", manifestKey: "k".repeat(44) },
  sources: [
    { name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.qcow2" },
    { name: "db-1-vda", qmpSocket: "/run/qemu/db-1.qmp", device: "vda" },
  ],
  trigger: "2026-11-24",
};

async function failuresFor(change: Record<string, unknown>) {
  return (await provider.check({}, { __provider: "x", ...declared, ...change })).failures ?? [];
}

describe("EncryptedBackupSet check", () => {
  test("accepts the documented example and defaults concurrency to 2", async () => {
    const result = await provider.check({}, { __provider: "x", ...declared });
    expect(result.failures).toBeUndefined();
    expect(result.inputs).toMatchObject({ concurrency: 2, trigger: "2026-11-24" });
  });

  test.each([
    [
      "a source with disk and qmpSocket",
      { sources: [{ name: "a", disk: "/d", qmpSocket: "/s", device: "vda" }] },
      "sources.0.disk",
      /either disk .* or qmpSocket and device .*, not both/,
    ],
    [
      "a source with neither",
      { sources: [{ name: "a" }] },
      "sources.0.disk",
      /give disk .*, qmpSocket and device .* cinderVolume .*, glanceImage .* or novaServer \(a Nova server\)/,
    ],
    [
      "a running VM without device",
      { sources: [{ name: "a", qmpSocket: "/s" }] },
      "sources.0.device",
      /needs both qmpSocket and device/,
    ],
    ["a relative disk path", { sources: [{ name: "a", disk: "images/a.qcow2" }] }, "sources.0.disk", /absolute path/],
    [
      "a duplicate name",
      {
        sources: [
          { name: "a", disk: "/a" },
          { name: "a", disk: "/b" },
        ],
      },
      "sources.1.name",
      /used twice/,
    ],
    [
      "a name that is not a file name",
      { sources: [{ name: "../a", disk: "/a" }] },
      "sources.0.name",
      /letters, digits/,
    ],
    [
      "a format other than raw or qcow2",
      { sources: [{ name: "a", disk: "/d", format: "vmdk" }] },
      "sources.0.format",
      /format must be "raw" or "qcow2"/,
    ],
    [
      "backing files without format qcow2",
      { sources: [{ name: "a", disk: "/d", backingFiles: ["/b"] }] },
      "sources.0.backingFiles",
      /backingFiles needs format: "qcow2"/,
    ],
    [
      "a data file of a raw disk",
      { sources: [{ name: "a", disk: "/d", format: "raw", dataFile: "/x" }] },
      "sources.0.dataFile",
      /dataFile needs format: "qcow2"/,
    ],
    [
      "a format for a running VM",
      { sources: [{ name: "a", qmpSocket: "/s", device: "vda", format: "qcow2" }] },
      "sources.0.format",
      /format only applies to a stopped VM's disk file.*remove format/,
    ],
    [
      "a relative backing file",
      { sources: [{ name: "a", disk: "/d", format: "qcow2", backingFiles: ["b.qcow2"] }] },
      "sources.0.backingFiles.0",
      /backingFiles must be an absolute path/,
    ],
    [
      "backing files that are not a list",
      { sources: [{ name: "a", disk: "/d", format: "qcow2", backingFiles: "/b" }] },
      "sources.0.backingFiles",
      /list of absolute paths/,
    ],
    [
      "a disk that is its own backing file",
      { sources: [{ name: "a", disk: "/d", format: "qcow2", backingFiles: ["/d"] }] },
      "sources.0.backingFiles",
      /\/d is named twice/,
    ],
    ["no sources", { sources: [] }, "sources", /at least one/],
    ["an empty trigger", { trigger: "" }, "trigger", /must not be empty/],
    ["a concurrency of 0", { concurrency: 0 }, "concurrency", /from 1 to 16/],
    ["a host that would be an ssh option", { host: "-oProxyCommand=x" }, "host", /not starting with "-"/],
    [
      "an escrow of another secret",
      { escrow: { recordId: "gold", store: "/srv/escrow", escrowsPassphrase: false } },
      "escrow.escrowsPassphrase",
      /another secret than the policy's passphrase/,
    ],
    [
      "an escrow under an unencrypted policy",
      {
        policy: { ...policy, encrypted: false },
        escrow: { recordId: "gold", store: "/srv/escrow", escrowsPassphrase: true },
      },
      "escrow",
      /does not encrypt: there is no passphrase to escrow/,
    ],
    [
      "an unencrypted policy without its manifest key",
      { policy: { ...policy, encrypted: false }, keys: { passphrase: "x" } },
      "keys.manifestKey",
      /manifest key did not reach/,
    ],
    ["a schedule with every and cron", { schedule: { every: "1h", cron: "0 3 * * *" } }, "schedule.cron", /not both/],
    ["a schedule of no duration", { schedule: { every: "soon" } }, "schedule.every", /a duration such as "24h"/],
    ["a hold without a reason", { holds: [{ point: "p1" }] }, "holds.0.reason", /reason is required/],
    ["deleteBackupsOnDestroy as text", { deleteBackupsOnDestroy: "yes" }, "deleteBackupsOnDestroy", /true or false/],
    [
      "an encrypted policy without its passphrase",
      { keys: { manifestKey: "k" } },
      "keys.passphrase",
      /no passphrase reached/,
    ],
  ])("rejects %s, naming the field", async (_what, change, property, reason) => {
    expect(await failuresFor(change)).toEqual([
      expect.objectContaining({ property, reason: expect.stringMatching(reason) }),
    ]);
  });

  test("lets unknown values through during preview", async () => {
    expect(await failuresFor({ keys: UNKNOWN, sources: [{ name: "a", disk: UNKNOWN }] })).toEqual([]);
  });
});

describe("EncryptedBackupSet check: copyToTarget where the target is reached through a host", () => {
  const volume = { name: "db", cinderVolume: "9d1c6a3e-0b5e-4b8e-9a57-3c1c3b0b7f10" };
  const remotePolicy = { ...policy, host: "kvm-07" };

  test("a source's own copyToTarget is refused, naming the source's field", async () => {
    expect(await failuresFor({ policy: remotePolicy, sources: [{ ...volume, copyToTarget: true }] })).toEqual([
      {
        property: "sources.0.copyToTarget",
        reason:
          "copyToTarget stages the volume's data on the machine that runs Pulumi, but the set's target is reached " +
          "through kvm-07: run Pulumi where the target is mounted (no host), or remove copyToTarget",
      },
    ]);
  });

  test("the policy's copyToTarget inherited by Cinder sources is refused once, naming the policy's field", async () => {
    const sources = [volume, { ...volume, name: "logs" }, { name: "web", disk: "/d" }];
    const copying = { ...policy, copyToTarget: true };
    expect(await failuresFor({ policy: copying, host: "kvm-08", sources })).toEqual([
      {
        property: "policy.copyToTarget",
        reason:
          `the BackupPolicy's copyToTarget applies to the Cinder volume of sources[0] ("db"), sources[1] ("logs"): ` +
          "it stages the volume's data on the machine that runs Pulumi, but the set's target is reached through " +
          "kvm-08: run Pulumi where the target is mounted (no host), set copyToTarget: false on the source, or " +
          "remove copyToTarget from the BackupPolicy",
      },
    ]);
  });

  test.each([
    [
      "the policy's flag without any Cinder source",
      { ...remotePolicy, copyToTarget: true },
      [{ name: "w", disk: "/d" }],
    ],
    [
      "the policy's flag on a source that says false",
      { ...remotePolicy, copyToTarget: true },
      [{ ...volume, copyToTarget: false }],
    ],
    ["the policy's flag on a target mounted here", { ...policy, copyToTarget: true }, [volume]],
  ])("accepts %s", async (_what, setPolicy, sources) => {
    expect(await failuresFor({ policy: setPolicy, sources })).toEqual([]);
  });
});

describe("boundedAll", () => {
  test("never runs more than the limit at once, and stops starting work after a failure", async () => {
    let running = 0;
    let peak = 0;
    const started: number[] = [];
    const results = await boundedAll([1, 2, 3, 4, 5, 6], 2, async (n) => {
      started.push(n);
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 10));
      running--;
      if (n === 3) throw new Error("three");
      return n * 10;
    });
    expect(peak).toBe(2);
    expect(results[0]).toEqual({ status: "fulfilled", value: 10 });
    expect(results[2]).toMatchObject({ status: "rejected", reason: new Error("three") });
    expect(started).not.toContain(6);
    expect(results[5]).toMatchObject({ status: "rejected", reason: expect.objectContaining({ code: "ABORTED" }) });
  });
});
