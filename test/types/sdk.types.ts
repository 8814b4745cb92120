// The public types are a deliverable: `tsc` (tools/test.sh) fails if one of these stops holding.
import * as pulumi from "@pulumi/pulumi";
import * as coffer from "../../sdk";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const holds = <T extends true>(): T => true as T;

export function declaredPolicies(passphrase: pulumi.Output<string>) {
  // Every input takes a pulumi.Input, nested ones included.
  const policy = new coffer.BackupPolicy("gold", {
    zone: pulumi.output("zone-a"),
    target: { kind: "directory", path: pulumi.output("/srv/backups") },
    compression: "zstd",
    encryption: { passphrase },
    bandwidthLimitMiBps: pulumi.output(50),
    integrityCheck: "full",
    retention: { keepLast: 7 },
  });
  holds<Equal<typeof policy.compression, pulumi.Output<coffer.Compression>>>();
  holds<Equal<typeof policy.settings, pulumi.Output<coffer.PolicySettings>>>();
  holds<Equal<typeof policy.documentStatus, pulumi.Output<"ok" | "unreadable" | "owned-elsewhere">>>();
  holds<Equal<coffer.IntegrityCheck, "none" | "metadata" | "full">>();
  const signed = new coffer.BackupPolicy("signed", {
    zone: "z",
    target: { kind: "directory", path: "/x" },
    signing: { privateKey: passphrase },
  });
  holds<Equal<typeof signed.signingPublicKey, pulumi.Output<coffer.SigningPublicKey | null>>>();
  holds<Equal<coffer.SigningPublicKey, { pem: string; fingerprint: string }>>();
  // @ts-expect-error signing needs a privateKey
  new coffer.BackupPolicy("no-key", { zone: "z", target: { kind: "directory", path: "/x" }, signing: {} });

  new coffer.BackupPolicy("bad-compression", {
    zone: "z",
    target: { kind: "directory", path: "/x" },
    // @ts-expect-error compression is one of "none" | "zstd" | "zlib"
    compression: "lz4",
  });
  // @ts-expect-error target is required
  new coffer.BackupPolicy("no-target", { zone: "z" });
  // @ts-expect-error target kind is "directory"
  new coffer.BackupPolicy("bad-kind", { zone: "z", target: { kind: "s3", path: "/x" } });
  // @ts-expect-error encryption needs a passphrase
  new coffer.BackupPolicy("no-passphrase", { zone: "z", target: { kind: "directory", path: "/x" }, encryption: {} });
  return policy;
}

export function declaredEscrow(passphrase: pulumi.Output<string>, publicKey: pulumi.Output<string>) {
  const escrow = new coffer.SecretEscrow("gold-passphrase", {
    secret: passphrase,
    recipients: [{ name: "dr-team", publicKey }],
    threshold: pulumi.output(1),
    store: { kind: "directory", path: "/srv/escrow" },
  });
  holds<Equal<typeof escrow.version, pulumi.Output<number>>>();
  holds<Equal<typeof escrow.recordStatus, pulumi.Output<coffer.RecordStatus>>>();
  holds<Equal<coffer.RecordStatus, "ok" | "missing" | "unreadable" | "recipients-differ" | "altered">>();
  const policy = new coffer.BackupPolicy("gold", {
    zone: "z",
    target: { kind: "directory", path: "/x" },
    encryption: { passphrase },
    escrow,
    requireEscrow: true,
  });
  new coffer.EncryptedBackupSet("nightly", { policy, sources: [{ name: "d", disk: "/d" }], trigger: "t", escrow });
  const chain = {
    name: "c",
    disk: "/c.qcow2",
    format: "qcow2" as const,
    backingFiles: ["/b.qcow2"],
    dataFile: "/c.data",
  };
  new coffer.EncryptedBackupSet("chain", { policy, sources: [chain], trigger: "t" });
  const history = { policy, sources: [chain], trigger: "t", deleteBackupsOnDestroy: true };
  const held = [{ point: "20261126T030000Z-1a2b", reason: "case 4711", until: "2027-06-30T00:00:00Z" }];
  const nightly = new coffer.EncryptedBackupSet("daily", { ...history, schedule: { every: "24h" }, holds: held });
  holds<Equal<typeof nightly.points, pulumi.Output<coffer.RecoveryPoint[]>>>();
  holds<Equal<typeof nightly.overdue, pulumi.Output<boolean>>>();
  new coffer.EncryptedBackupSet("cron", { ...history, schedule: { cron: "0 3 * * *", timeZone: "Europe/Berlin" } });
  // @ts-expect-error a schedule is { every } or { cron, timeZone? }
  new coffer.EncryptedBackupSet("at", { ...history, schedule: { at: "03:00" } });
  // @ts-expect-error format is "raw" or "qcow2"
  new coffer.EncryptedBackupSet("vmdk", { policy, sources: [{ name: "v", disk: "/v", format: "vmdk" }], trigger: "t" });

  // @ts-expect-error recipients are required
  new coffer.SecretEscrow("no-recipients", { secret: passphrase, store: { kind: "directory", path: "/x" } });
  new coffer.SecretEscrow("no-key", {
    secret: passphrase,
    // @ts-expect-error a recipient needs a publicKey
    recipients: [{ name: "a" }],
    store: { kind: "directory", path: "/x" },
  });
  new coffer.BackupPolicy("string-escrow", {
    zone: "z",
    target: { kind: "directory", path: "/x" },
    // @ts-expect-error escrow is a SecretEscrow, not a record id
    escrow: "gold-passphrase",
  });
  return escrow;
}
