import { UNKNOWN } from "../../provider/common/check";
import { provider } from "../../provider/backupPolicy";

const PASSPHRASE = "correct horse battery staple";
const valid = {
  __provider: "exports.handler = ...",
  zone: "zone-a",
  target: { kind: "directory", path: "/srv/backups" },
  compression: "zstd",
  encryption: { passphrase: PASSPHRASE },
  bandwidthLimitMiBps: 50,
  integrityCheck: "full",
  retention: { keepLast: 7, maxAgeDays: 30 },
};

const SYSTEM_FOLDER = new RegExp(
  "^target.path must be a dedicated backup folder such as /srv/backups \\(a NAS mount\\), not / or a system folder$",
);
const escrow = { recordId: "gold-passphrase", store: "/srv/escrow", escrowsPassphrase: true };

async function failuresFor(news: Record<string, unknown>) {
  const result = await provider.check({}, news);
  return result.failures ?? [];
}

describe("BackupPolicy check", () => {
  test("accepts the documented example and keeps every field", async () => {
    const result = await provider.check({}, valid);
    expect(result.failures).toBeUndefined();
    expect(result.inputs).toEqual({
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/backups" },
      compression: "zstd",
      encryption: { passphrase: PASSPHRASE },
      bandwidthLimitMiBps: 50,
      integrityCheck: "full",
      retention: { keepLast: 7, maxAgeDays: 30 },
      requireEscrow: false,
      rpoHours: null,
      reverifyAfterDays: null,
      host: null,
      escrow: null,
    });
  });

  test("fills defaults, so an explicit default and a left-out field diff the same", async () => {
    const result = await provider.check({}, { zone: "z1", target: { kind: "directory", path: "/srv/b/" } });
    expect(result.inputs).toEqual({
      zone: "z1",
      target: { kind: "directory", path: "/srv/b" },
      compression: "none",
      bandwidthLimitMiBps: 0,
      integrityCheck: "none",
      requireEscrow: false,
      retention: null,
      rpoHours: null,
      reverifyAfterDays: null,
      host: null,
      escrow: null,
    });
  });

  test.each([
    [
      "encryption without a passphrase",
      { encryption: {} },
      "encryption.passphrase",
      /required when encryption is set.*remove `encryption`/,
    ],
    ["an empty passphrase", { encryption: { passphrase: "" } }, "encryption.passphrase", /at least 12 characters/],
    [
      "a negative bandwidth",
      { bandwidthLimitMiBps: -5 },
      "bandwidthLimitMiBps",
      /must not be negative: use 0 or leave it out/,
    ],
    ["a fractional bandwidth", { bandwidthLimitMiBps: 2.5 }, "bandwidthLimitMiBps", /whole number/],
    ["a bandwidth given as text", { bandwidthLimitMiBps: "50" }, "bandwidthLimitMiBps", /whole number of MiB\/s/],
    ["an unknown compression", { compression: "lz4" }, "compression", /one of "none", "zstd", "zlib"/],
    ["an unknown integrity check", { integrityCheck: "deep" }, "integrityCheck", /one of "none", "metadata", "full"/],
    ["a relative target path", { target: { kind: "directory", path: "backups" } }, "target.path", /must be absolute/],
    ["a missing target path", { target: { kind: "directory" } }, "target.path", /target.path is required/],
    ["a missing target", { target: undefined }, "target", /target is required/],
    [
      "a target path with ..",
      { target: { kind: "directory", path: "/srv/../etc" } },
      "target.path",
      /must not contain/,
    ],
    ["another target kind", { target: { kind: "s3", path: "/x" } }, "target.kind", /must be "directory"/],
    ["/ as the target", { target: { kind: "directory", path: "/" } }, "target.path", SYSTEM_FOLDER],
    ["a target under /etc", { target: { kind: "directory", path: "/etc/x" } }, "target.path", SYSTEM_FOLDER],
    ["/usr with trailing slashes", { target: { kind: "directory", path: "/usr//" } }, "target.path", SYSTEM_FOLDER],
    ["/var itself as the target", { target: { kind: "directory", path: "/var" } }, "target.path", SYSTEM_FOLDER],
    ["keepLast of 0", { retention: { keepLast: 0 } }, "retention.keepLast", /at least 1/],
    ["maxAgeDays of -3", { retention: { maxAgeDays: -3 } }, "retention.maxAgeDays", /at least 1/],
    ["a fractional keepLast", { retention: { keepLast: 1.5 } }, "retention.keepLast", /whole number/],
    ["keepWeekly of 0", { retention: { keepWeekly: 0 } }, "retention.keepWeekly", /at least 1/],
    ["an unknown retention zone", { retention: { keepDaily: 7, timeZone: "Mars/Base" } }, "retention.timeZone", /IANA/],
    ["an rpoHours of 0", { rpoHours: 0 }, "rpoHours", /more than 0: leave it out for no limit/],
    ["a reverifyAfterDays as text", { reverifyAfterDays: "30" }, "reverifyAfterDays", /number of days/],
    ["a missing zone", { zone: undefined }, "zone", /zone is required/],
    ["a zone that would escape its folder", { zone: "../other" }, "zone", /letters, digits/],
    ["an ssh host that would be taken for an option", { host: "-oProxyCommand=sh" }, "host", /not starting with "-"/],
    ["an ssh host with a space", { host: "kvm-07 rm" }, "host", /ssh destination/],
    ["a misspelt field", { compresion: "zstd" }, "compresion", /not a known field: check its spelling/],
    ["a misspelt retention field", { retention: { keep: 3 } }, "retention.keep", /not a known field/],
    [
      "a misspelt target field",
      { target: { kind: "directory", path: "/srv/b", host: "kvm-7" } },
      "target.host",
      /not a known field/,
    ],
    [
      "requireEscrow on an encrypted policy without escrow",
      { requireEscrow: true },
      "escrow",
      /escrow is required \(requireEscrow: true\).*coffer.SecretEscrow/,
    ],
    [
      "an escrow of another secret",
      { escrow: { ...escrow, escrowsPassphrase: false } },
      "escrow.escrowsPassphrase",
      /another secret than the policy's passphrase \(encryption.passphrase\)/,
    ],
    ["an escrow without encryption", { encryption: undefined, escrow }, "escrow", /no passphrase to escrow/],
    ["a requireEscrow given as text", { requireEscrow: "yes" }, "requireEscrow", /true or false/],
    ["a copyToTarget given as text", { copyToTarget: "yes" }, "copyToTarget", /copyToTarget must be true or false/],
    [
      "a misspelt encryption field",
      { encryption: { passphrase: "long enough passphrase", cipher: "aes" } },
      "encryption.cipher",
      /not a known field/,
    ],
  ])("rejects %s, naming the field and the fix", async (_what, change, property, reason) => {
    const failures = await failuresFor({ ...valid, ...change });
    expect(failures).toEqual([expect.objectContaining({ property, reason: expect.stringMatching(reason) })]);
  });

  test.each(["/srv/backups", "/mnt/nas/coffer", "/var/backups", "/tmp/coffer-x", "/home/backup/nas", "/etcetera"])(
    "accepts a folder of one's own such as %s",
    async (dir) => {
      expect(await failuresFor({ ...valid, target: { kind: "directory", path: dir } })).toEqual([]);
    },
  );

  test("keeps copyToTarget as declared, and adds none when it is left out", async () => {
    expect((await provider.check({}, { ...valid, copyToTarget: false })).inputs).toMatchObject({ copyToTarget: false });
    expect((await provider.check({}, valid)).inputs).not.toHaveProperty("copyToTarget");
  });

  test("accepts the owner the resource class sets", async () => {
    const result = await provider.check({}, { ...valid, owner: "coffer-demo/dev/gold" });
    expect(result.inputs).toMatchObject({ owner: "coffer-demo/dev/gold" });
  });

  test("accepts an escrow of the passphrase, required or not; requireEscrow does not apply without encryption", async () => {
    expect(await failuresFor({ ...valid, escrow, requireEscrow: true })).toEqual([]);
    expect(await failuresFor({ ...valid, escrow })).toEqual([]);
    expect(await failuresFor({ ...valid, encryption: undefined, requireEscrow: true })).toEqual([]);
  });

  test("lets an escrow that is unknown during preview satisfy requireEscrow", async () => {
    expect(await failuresFor({ ...valid, escrow: UNKNOWN, requireEscrow: true })).toEqual([]);
    expect(
      await failuresFor({ ...valid, escrow: { ...escrow, escrowsPassphrase: UNKNOWN }, requireEscrow: true }),
    ).toEqual([]);
  });

  test("reports an escrow of another secret even while its store is unknown at preview", async () => {
    const failures = await failuresFor({ ...valid, escrow: { ...escrow, store: UNKNOWN, escrowsPassphrase: false } });
    expect(failures).toEqual([
      expect.objectContaining({
        property: "escrow.escrowsPassphrase",
        reason: expect.stringMatching(/another secret/),
      }),
    ]);
  });

  test("never puts the passphrase in a failure", async () => {
    const failures = await failuresFor({ ...valid, encryption: { passphrase: "hunter2-xyz" } });
    expect(failures).toEqual([expect.objectContaining({ property: "encryption.passphrase" })]);
    expect(JSON.stringify(failures)).not.toContain("hunter2-xyz");
  });

  test("lets unknown values through during preview, and still reports the known bad ones", async () => {
    expect(await failuresFor({ ...valid, encryption: { passphrase: UNKNOWN } })).toEqual([]);
    expect(await failuresFor({ ...valid, bandwidthLimitMiBps: UNKNOWN, target: UNKNOWN })).toEqual([]);
    expect(await failuresFor({ ...valid, encryption: UNKNOWN, compression: "lz4" })).toEqual([
      expect.objectContaining({ property: "compression" }),
    ]);
  });
});
