import * as pulumi from "@pulumi/pulumi";
// Types only: erased when compiled, so a user's program never loads the implementation or zod.
import type { PolicySettings } from "../provider/backupPolicy/document";
import type { Compression, IntegrityCheck } from "../provider/backupPolicy/schema";
import { delegatingProvider } from "./delegatingProvider";
import type { EscrowLink, SecretEscrow } from "./secretEscrow";
import { escrowLink } from "./secretEscrow";
import { COFFER_MODULE, COFFER_RESOURCE_NAMES } from "./resourceTypes";

export type { Compression, IntegrityCheck, PolicySettings };

/**
 * One shared provider object: Pulumi serializes it once per object, not once per resource.
 * @internal Exported for the serialization tests.
 */
export const backupPolicyProvider = delegatingProvider("coffer/provider/backupPolicy");

export interface DirectoryTarget {
  kind: "directory";
  /** Absolute path of the folder (usually a NAS mount) the host agents write backups to. */
  path: string;
}

/**
 * An OpenStack Swift container (tempauth). Agents spool each item through `scratch` on their host, upload it
 * in parallel Static Large Object segments, and write each point's manifest last. Swift has no object lock:
 * `immutable: true` is refused at preview.
 */
export interface SwiftTargetArgs {
  kind: "swift";
  /** The tempauth URL, e.g. "https://swift.example:8080/auth/v1.0". */
  authUrl: pulumi.Input<string>;
  /** "account:user". */
  user: pulumi.Input<string>;
  /** The user's key: always kept as a Pulumi secret, even when given as a plain string; agents get it on stdin. */
  key: pulumi.Input<string>;
  /** The container of the backups (created when missing; segments go to `<container>_segments`). */
  container: pulumi.Input<string>;
  /** A folder of keys in the container; default: all of it. */
  prefix?: pulumi.Input<string>;
  /** Segment size of large objects in MiB (default 64). */
  segmentMiB?: pulumi.Input<number>;
  /** The agents' local spool: default { path: "/var/tmp/coffer-scratch", maxGiB: 64 } (one item's most). */
  scratch?: pulumi.Input<{ path?: pulumi.Input<string>; maxGiB?: pulumi.Input<number> }>;
  /** Refused: Swift has no object lock. */
  immutable?: pulumi.Input<boolean>;
}

/** A Swift target as outputs show it: without its key (the policy's `targetKey`, a secret). */
export type SwiftTarget = Omit<SwiftTargetArgs, "key" | "scratch" | "segmentMiB"> & {
  authUrl: string;
  user: string;
  container: string;
  prefix?: string;
  segmentMiB: number;
  scratch: { path: string; maxGiB: number };
};

export interface BackupPolicyArgs {
  /** The zone this policy governs; one policy per zone and target. Changing it replaces the policy. */
  zone: pulumi.Input<string>;
  /**
   * Where backups go: a folder (the policy document under `<path>/.coffer/zones/<zone>/`) or a Swift container
   * (SwiftTargetArgs). Changing it replaces the policy (a Swift key's change does not).
   */
  target: pulumi.Input<{ kind: pulumi.Input<"directory">; path: pulumi.Input<string> }> | SwiftTargetArgs;
  /** qcow2 cluster compression. Default "none". zstd is as small as zlib and about 6x faster. */
  compression?: pulumi.Input<Compression>;
  /** LUKS encryption of backups; absent means off. The passphrase is always kept as a Pulumi secret. */
  encryption?: pulumi.Input<{ passphrase: pulumi.Input<string> }>;
  /** Upper bound on backup read rate in MiB/s; 0 or absent means unlimited. */
  bandwidthLimitMiBps?: pulumi.Input<number>;
  /** What to verify after each backup. Default "none". */
  integrityCheck?: pulumi.Input<IntegrityCheck>;
  /**
   * Which points of each set to keep (Proxmox Backup Server's rules): each rule keeps the newest point
   * of each of its last N periods; a point any rule keeps stays. Absent: every point is kept.
   */
  retention?: pulumi.Input<RetentionArgs>;
  /**
   * Recovery point objective in hours: a set whose newest good point is older is overdue, and its
   * next up takes one.
   */
  rpoHours?: pulumi.Input<number>;
  /** Refresh re-verifies points last checked longer ago than this (the newest point every time). Default 30. */
  reverifyAfterDays?: pulumi.Input<number>;
  /** The ssh destination where the host agent runs ("kvm-07"); absent: the machine that runs Pulumi. */
  host?: pulumi.Input<string>;
  /** The SecretEscrow of `encryption.passphrase`; the manifests of sets under this policy name its record. */
  escrow?: SecretEscrow;
  /** Refuse, at preview, an encrypted policy without `escrow`. Default false. */
  requireEscrow?: pulumi.Input<boolean>;
  /**
   * Also copy the data of every Cinder volume (`cinderVolume` source) of this policy's sets into the
   * target, in Coffer's format, as a source's `copyToTarget: true` does; a source's own `copyToTarget`
   * (true or false) wins. No effect on other source kinds (disks, running VMs and Glance images are in
   * the target anyway). A change applies from each set's next point. Needs the target mounted where
   * Pulumi runs: a set reached through a `host` with a Cinder source it applies to fails at preview.
   */
  copyToTarget?: pulumi.Input<boolean>;
  /**
   * An Ed25519 private key (PEM, e.g. from `openssl genpkey -algorithm ed25519`) that signs every
   * manifest of the policy's sets, so that `coffer verify --public-key` checks them without any secret.
   * Always kept as a Pulumi secret; it is used only in Pulumi's process. Absent: HMAC only.
   */
  signing?: pulumi.Input<{ privateKey: pulumi.Input<string> }>;
}

/** The public half of a policy's signing key. */
export interface SigningPublicKey {
  /** SPKI PEM: give it to `coffer verify --public-key`. */
  pem: string;
  /** "SHA256:" and the base64 of the SHA-256 of the key (as ssh shows keys); manifests name their key by it. */
  fingerprint: string;
}

export interface Retention {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  /** Keeps every point younger than this many days. */
  maxAgeDays?: number;
  /** The IANA zone whose calendar days, weeks, months and years the rules count. Default "UTC". */
  timeZone?: string;
}
export type RetentionArgs = { [K in keyof Retention]?: pulumi.Input<Retention[K]> };

/**
 * A zone's backup settings (CloudStack's `nas.backup.*` zone keys, made declarative), written as a
 * versioned policy document where host agents read it. `pulumi refresh` reads the document back,
 * so an edit made out of band shows as drift and the next `pulumi up` restores the declared policy.
 * `import` and `BackupPolicy.get` are not supported (dynamic providers can't read without state).
 */
export class BackupPolicy extends pulumi.dynamic.Resource {
  declare readonly zone: pulumi.Output<string>;
  declare readonly target: pulumi.Output<DirectoryTarget | SwiftTarget>;
  /** Secret: a Swift target's key; absent for a directory target. */
  declare readonly targetKey: pulumi.Output<string | undefined>;
  declare readonly compression: pulumi.Output<Compression>;
  /** Secret: the passphrase (and the key of its fingerprint); null when encryption is off. */
  declare readonly encryption: pulumi.Output<{ passphrase: string } | null>;
  declare readonly bandwidthLimitMiBps: pulumi.Output<number>;
  declare readonly integrityCheck: pulumi.Output<IntegrityCheck>;
  declare readonly retention: pulumi.Output<Retention | null>;
  declare readonly rpoHours: pulumi.Output<number | null>;
  declare readonly reverifyAfterDays: pulumi.Output<number | null>;
  declare readonly host: pulumi.Output<string | null>;
  /** The escrow record of the passphrase, as of the policy's last update; null when none. */
  declare readonly escrow: pulumi.Output<EscrowLink | null>;
  declare readonly requireEscrow: pulumi.Output<boolean>;
  /** Absent (unknown in a preview) while never declared. */
  declare readonly copyToTarget: pulumi.Output<boolean | undefined>;
  /** Secret: signs the manifests of unencrypted backup sets. */
  declare readonly manifestKey: pulumi.Output<string>;
  /** Secret: the Ed25519 private key that signs the sets' manifests; null when off. */
  declare readonly signing: pulumi.Output<{ privateKey: string } | null>;
  /** The signing key's public half and fingerprint, for `coffer verify --public-key`; null when off. */
  declare readonly signingPublicKey: pulumi.Output<SigningPublicKey | null>;
  /** Absolute path of the policy document. */
  declare readonly documentPath: pulumi.Output<string>;
  /** Increases with every write of the document. */
  declare readonly revision: pulumi.Output<number>;
  /** The settings in the document as last written or refreshed. */
  declare readonly settings: pulumi.Output<PolicySettings>;
  /** "ok", or why the document can't be taken as this policy's ("unreadable", "owned-elsewhere"). */
  declare readonly documentStatus: pulumi.Output<"ok" | "unreadable" | "owned-elsewhere">;
  /** The id in `<target>/.coffer/target.json`: a folder without it (an unmounted NAS) is unreachable. */
  declare readonly targetId: pulumi.Output<string>;
  /** "<project>/<stack>/<name>": a policy document with this owner is this resource's own. */
  declare readonly owner: pulumi.Output<string>;
  declare readonly schemaVersion: pulumi.Output<number>;
  /** The SecretEscrow given as `escrow`: its recipients also receive encrypted Cinder volumes' keys. */
  readonly escrowResource?: SecretEscrow;
  /**
   * @internal The signing key as declared (secret), for the policy's sets: known in a preview even
   * when the policy's state predates `signing`, where the output would be unknown.
   */
  readonly declaredSigning: pulumi.Output<{ privateKey: string } | undefined>;
  /**
   * @internal `copyToTarget` as declared, for the policy's sets: known in a preview, where the output of
   * a policy whose state has none would be unknown.
   */
  readonly declaredCopyToTarget: pulumi.Output<boolean | undefined>;
  /**
   * @internal A Swift target's key as declared (secret), for the policy's sets: known in a preview, and absent
   * (no input at all) for a directory target, so directory sets keep the inputs they had.
   */
  readonly declaredTargetKey?: pulumi.Output<string>;

  constructor(name: string, args: BackupPolicyArgs, opts?: pulumi.CustomResourceOptions) {
    // The key is a secret even if the caller passed a plain string.
    const signing = args.signing === undefined ? undefined : pulumi.secret(args.signing);
    // A Swift target's key goes apart, secret: the rest of the target stays in the clear for reviews.
    const swift = isSwiftTarget(args.target) ? args.target : undefined;
    const { key: swiftKey, ...swiftTarget } = swift ?? { key: undefined };
    const targetKey = swift ? pulumi.secret(swiftKey as pulumi.Input<string>) : undefined;
    super(
      backupPolicyProvider,
      name,
      {
        zone: args.zone,
        target: swift ? swiftTarget : args.target,
        targetKey,
        compression: args.compression,
        // The passphrase is a secret even if the caller passed a plain string.
        encryption: args.encryption === undefined ? undefined : pulumi.secret(args.encryption),
        bandwidthLimitMiBps: args.bandwidthLimitMiBps,
        integrityCheck: args.integrityCheck,
        retention: args.retention,
        rpoHours: args.rpoHours,
        reverifyAfterDays: args.reverifyAfterDays,
        host: args.host,
        escrow:
          args.escrow &&
          escrowLink(
            args.escrow,
            pulumi.output(args.encryption).apply((e) => e?.passphrase),
          ),
        requireEscrow: args.requireEscrow,
        copyToTarget: args.copyToTarget,
        signing,
        // Stable across replacements, so a document an earlier incarnation wrote is recognized as its own.
        owner: `${pulumi.getProject()}/${pulumi.getStack()}/${name}`,
        manifestKey: undefined,
        signingPublicKey: undefined,
        documentPath: undefined,
        revision: undefined,
        settings: undefined,
        documentStatus: undefined,
        targetId: undefined,
        schemaVersion: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["encryption", "manifestKey", "signing", "targetKey"] }),
      COFFER_MODULE,
      COFFER_RESOURCE_NAMES.backupPolicy,
    );
    this.declaredTargetKey = targetKey;
    this.escrowResource = args.escrow;
    this.declaredSigning = pulumi.output(signing) as pulumi.Output<{ privateKey: string } | undefined>;
    this.declaredCopyToTarget = pulumi.output(args.copyToTarget);
  }
}

/** Whether `target` is a Swift target written out (a Swift target is given as an object, not an Output). */
function isSwiftTarget(target: BackupPolicyArgs["target"]): target is SwiftTargetArgs {
  return typeof target === "object" && target !== null && (target as { kind?: unknown }).kind === "swift";
}
