import * as pulumi from "@pulumi/pulumi";
import type { Verification } from "../provider/agent/backupSet";
import type { ManifestItem } from "../provider/agent/manifest";
import type { PointLocation, PointRecord } from "../provider/backupSet/state";
import type { BackupPolicy, SigningPublicKey } from "./backupPolicy";
import { delegatingProvider } from "./delegatingProvider";
import { EscrowLink, SecretEscrow, escrowLink, keyEscrowOf } from "./secretEscrow";
import { COFFER_MODULE, COFFER_RESOURCE_NAMES } from "./resourceTypes";

/**
 * @internal Exported for the serialization tests.
 */
export const backupSetProvider = delegatingProvider("coffer/provider/backupSet");

export interface BackupSourceArgs {
  /** Names the backup file; unique within the set. */
  name: pulumi.Input<string>;
  /** A stopped VM's disk file (raw or qcow2). */
  disk?: pulumi.Input<string>;
  /**
   * The disk's format, never guessed from its bytes (the guest writes them). Default: raw, and a
   * disk that starts with an image header (qcow2, LUKS, VMDK...) is refused until it is declared.
   */
  format?: pulumi.Input<"raw" | "qcow2">;
  /** qcow2 only: the backing chain, nearest first; a backing file not declared here is refused. */
  backingFiles?: pulumi.Input<pulumi.Input<string>[]>;
  /** qcow2 only: the external data file; refused unless declared here. */
  dataFile?: pulumi.Input<string>;
  /** A running VM's QMP socket; with `device`, the disk to copy ("vda"). */
  qmpSocket?: pulumi.Input<string>;
  device?: pulumi.Input<string>;
  /** The ssh destination of the host with this disk; default: the set's, then the policy's host. */
  host?: pulumi.Input<string>;
  /** A Cinder volume's id (e.g. an openstack.blockstorage.Volume's `id`): backed up by Cinder's backup service. */
  cinderVolume?: pulumi.Input<string>;
  /**
   * Build on this source's backup in the set's previous point. A qcow2 disk (a running VM's, or a
   * stopped VM's with `format: "qcow2"`): copy only the clusters written since (a persistent dirty
   * bitmap QEMU keeps in the disk); a full backup when the bitmap can't be trusted (a killed QEMU),
   * and the manifest says why. Cinder: build on the volume's newest backup in this set's history.
   */
  incremental?: pulumi.Input<boolean>;
  /** With `incremental` (not Cinder): every `fullEvery`th backup of a chain is a full one (e.g. 10). */
  fullEvery?: pulumi.Input<number>;
  /** Cinder: back the volume up while it is attached (in-use). */
  force?: pulumi.Input<boolean>;
  /** Cinder: back up a snapshot taken for the purpose, deleted afterwards. */
  fromSnapshot?: pulumi.Input<boolean>;
  /**
   * Cinder: also keep a copy of the volume's data in the policy's target, in Coffer's format
   * (compressed, encrypted, verified), streamed through a Glance image: restorable without the cloud.
   * Default: the policy's `copyToTarget`; false here makes no copy whatever the policy says.
   */
  copyToTarget?: pulumi.Input<boolean>;
  /** A Glance image's id: its data is stored in the policy's target, its properties recorded. */
  glanceImage?: pulumi.Input<string>;
  /**
   * A Nova server's id: each of its disks (the root disk through createImage, each attached volume
   * through a Cinder snapshot) stored in the policy's target, its description in the manifest.
   */
  novaServer?: pulumi.Input<string>;
}

export interface EncryptedBackupSetArgs {
  /** The policy whose settings apply: compression, encryption, throttle, integrity check, target, copyToTarget. */
  policy: BackupPolicy;
  sources: pulumi.Input<pulumi.Input<BackupSourceArgs>[]>;
  /** Changing it takes a new set, e.g. a date. */
  trigger: pulumi.Input<string>;
  /** The ssh destination for this set's sources and manifest; default: the policy's host. */
  host?: pulumi.Input<string>;
  /** How many sources are backed up at once. Default 2. */
  concurrency?: pulumi.Input<number>;
  /** The escrow of the policy's passphrase; default: the policy's `escrow`. The manifest names its record and current version. */
  escrow?: SecretEscrow;
  /**
   * Where the keys of encrypted Cinder volumes are escrowed (sealed for its recipients, in its
   * store), so a backup stays restorable when Barbican loses the key. Default: `escrow`, then the
   * policy's escrow. A set that backs up an encrypted volume without one fails before any backup.
   */
  keyEscrow?: SecretEscrow;
  /** When a point is due besides a new trigger: `{ every: "24h" }`, or `{ cron: "0 3 * * *", timeZone: "Europe/Berlin" }`. */
  schedule?: pulumi.Input<ScheduleArgs>;
  /** Points kept whatever retention says (a legal hold): `[{ point, reason, until? }]`. */
  holds?: pulumi.Input<pulumi.Input<HoldArgs>[]>;
  /** `pulumi destroy` keeps the set's points unless this is true; held points are always kept. Default false. */
  deleteBackupsOnDestroy?: pulumi.Input<boolean>;
}

export type ScheduleArgs = { every: string } | { cron: string; timeZone?: string };

export interface HoldArgs {
  /** The point's id, as `points` and `coffer list` show it. */
  point: pulumi.Input<string>;
  /** Why it is kept, e.g. a case number. */
  reason: pulumi.Input<string>;
  /** The hold ends after this date ("2027-06-30"); absent: until removed. */
  until?: pulumi.Input<string>;
}

/** A recovery point as the set's state records it. */
export type RecoveryPoint = PointRecord;
export type { PointLocation };

export type BackupItem = ManifestItem & { via: string };
export type { Verification };

/**
 * @internal The policy's settings as a set applies them, in the clear so that reviews see them. Only
 * the policy's inputs: while a policy update is previewed its computed outputs are unknown, and a
 * resource built on them would show as about to be replaced when it is not.
 */
export function appliedPolicyOf(policy: BackupPolicy) {
  const encrypted = pulumi.unsecret(
    policy.encryption.apply((encryption) => encryption !== null && encryption !== undefined),
  );
  return pulumi
    .all([
      pulumi.all([
        policy.id,
        policy.zone,
        policy.target,
        policy.compression,
        policy.integrityCheck,
        policy.bandwidthLimitMiBps,
        encrypted,
        policy.host,
      ]),
      policy.declaredCopyToTarget,
    ])
    .apply(([[id, zone, target, compression, integrityCheck, bandwidthLimitMiBps, isEncrypted, host], copies]) => ({
      id,
      zone,
      target,
      compression,
      integrityCheck,
      bandwidthLimitMiBps,
      encrypted: isEncrypted,
      host: host ?? undefined,
      // Only when on: the sets of a policy without it keep the inputs they had.
      ...(copies ? { copyToTarget: true } : {}),
    }));
}

/**
 * A history of backups (recovery points) of VM disks, taken by the host agent under a BackupPolicy
 * and verified before they count. An `up` takes a point when `trigger` changed or `schedule` says one
 * is due, then prunes what the policy's retention no longer keeps; policy changes apply from the next
 * point. `pulumi refresh` re-verifies the newest point and those not checked for `reverifyAfterDays`:
 * a point that no longer verifies shows as drift, by name. `pulumi destroy` keeps the points unless
 * `deleteBackupsOnDestroy` is true.
 */
export class EncryptedBackupSet extends pulumi.dynamic.Resource {
  declare readonly trigger: pulumi.Output<string>;
  declare readonly setId: pulumi.Output<string>;
  declare readonly setDir: pulumi.Output<string>;
  declare readonly manifestPath: pulumi.Output<string>;
  declare readonly manifestHost: pulumi.Output<string>;
  declare readonly items: pulumi.Output<BackupItem[]>;
  declare readonly verification: pulumi.Output<Verification>;
  /** The escrow record (and version) the manifest names; a later rotation does not change it. */
  declare readonly escrow: pulumi.Output<(EscrowLink & { version: number }) | undefined>;
  declare readonly schemaVersion: pulumi.Output<number>;
  /** The set's recovery points, oldest first. */
  declare readonly points: pulumi.Output<RecoveryPoint[]>;
  declare readonly locations: pulumi.Output<PointLocation[]>;
  /** True when the policy's `rpoHours` is set and the newest good point is older. */
  declare readonly overdue: pulumi.Output<boolean>;
  /** The public keys the points are signed with (a point's `signedBy` names one); absent while none is. */
  declare readonly signers: pulumi.Output<SigningPublicKey[] | undefined>;
  /** @internal Secret: the keys of the current `keyVersion` (a RestoreDrill opens points with them). */
  declare readonly keys: pulumi.Output<{
    passphrase?: string;
    manifestKey?: string;
    signingKey?: string;
    targetKey?: string;
  }>;
  /** @internal */
  declare readonly keyVersion: pulumi.Output<number>;
  /** @internal Secret: the keys of earlier versions that points still need. */
  declare readonly keyring: pulumi.Output<{ version: number; passphrase?: string; manifestKey?: string }[]>;

  constructor(name: string, args: EncryptedBackupSetArgs, opts?: pulumi.CustomResourceOptions) {
    const policy = args.policy;
    super(
      backupSetProvider,
      name,
      {
        policy: appliedPolicyOf(policy),
        // Retention, RPO and re-verification: apart from `policy`, see provider/backupSet/schema.ts.
        history: pulumi
          .all([policy.retention, policy.rpoHours, policy.reverifyAfterDays])
          .apply(([retention, rpoHours, reverifyAfterDays]) => ({
            retention: retention ?? undefined,
            rpoHours: rpoHours ?? undefined,
            reverifyAfterDays: reverifyAfterDays ?? undefined,
          })),
        // The one key the set's HMAC needs: the passphrase, or for unencrypted sets the manifest key;
        // and the policy's signing key, when it has one.
        keys: pulumi.secret(
          pulumi
            .all([
              policy.encryption.apply((encryption) =>
                encryption
                  ? pulumi.output({ passphrase: encryption.passphrase })
                  : policy.manifestKey.apply((manifestKey) => ({ manifestKey })),
              ),
              policy.declaredSigning,
            ])
            .apply(([keys, signing]) => (signing ? { ...keys, signingKey: signing.privateKey } : keys))
            // A Swift target's key: only then, so sets on a directory target keep the inputs they had.
            .apply((keys) =>
              policy.declaredTargetKey
                ? policy.declaredTargetKey.apply((targetKey) => ({ ...keys, targetKey }))
                : pulumi.output(keys),
            ),
        ),
        sources: args.sources,
        trigger: args.trigger,
        host: args.host,
        concurrency: args.concurrency,
        escrow: args.escrow
          ? escrowLink(
              args.escrow,
              policy.encryption.apply((e) => e?.passphrase),
            )
          : policy.escrow.apply((e) => e ?? undefined),
        // Only sets with Cinder sources carry it: others keep the inputs they had.
        keyEscrow: pulumi.output(args.sources).apply((sources) => {
          const escrow = args.keyEscrow ?? args.escrow ?? policy.escrowResource;
          const cloud = sources.some((source) => source.cinderVolume !== undefined);
          return cloud && escrow ? keyEscrowOf(escrow) : undefined;
        }),
        schedule: args.schedule,
        holds: args.holds,
        deleteBackupsOnDestroy: args.deleteBackupsOnDestroy,
        setId: undefined,
        points: undefined,
        locations: undefined,
        overdue: undefined,
        signers: undefined,
        keyVersion: undefined,
        keyring: undefined,
        setDir: undefined,
        manifestPath: undefined,
        manifestHost: undefined,
        items: undefined,
        verification: undefined,
        schemaVersion: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["keys", "keyring"] }),
      COFFER_MODULE,
      COFFER_RESOURCE_NAMES.backupSet,
    );
  }
}
