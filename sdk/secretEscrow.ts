import * as pulumi from "@pulumi/pulumi";
// Types only: erased when compiled, so a user's program never loads the implementation or zod.
import type { RecipientKeyInfo, RecordStatus } from "../provider/escrow/provider";
import type { EscrowLink } from "../provider/escrow/schema";
import type { DirectoryTarget } from "./backupPolicy";
import { delegatingProvider } from "./delegatingProvider";
import { COFFER_MODULE, COFFER_RESOURCE_NAMES } from "./resourceTypes";

export type { EscrowLink, RecipientKeyInfo, RecordStatus };

/** @internal Exported for the serialization tests. */
export const secretEscrowProvider = delegatingProvider("coffer/provider/escrow");

export interface EscrowRecipientArgs {
  /** Who holds the private key, e.g. "dr-team"; unique within the escrow. */
  name: pulumi.Input<string>;
  /** PEM public key (-----BEGIN PUBLIC KEY-----): RSA of 3072 bits or more, or X25519. */
  publicKey: pulumi.Input<string>;
}

export interface SecretEscrowArgs {
  /** The secret to escrow, e.g. a BackupPolicy's passphrase. Always kept as a Pulumi secret. */
  secret: pulumi.Input<string>;
  recipients: pulumi.Input<pulumi.Input<EscrowRecipientArgs>[]>;
  /** How many recipients' keys recovery needs, 1 to the number of recipients. Default 1. */
  threshold?: pulumi.Input<number>;
  /** Where the record is written: `<path>/<recordId>/v<version>.json`. Changing it replaces the escrow. */
  store: pulumi.Input<{ kind: pulumi.Input<"directory">; path: pulumi.Input<string> }>;
  /** The record's name in the store. Default: the resource's name. Changing it replaces the escrow. */
  recordId?: pulumi.Input<string>;
  /** Let `pulumi destroy` delete the record even while backup sets in the store depend on it. Default false. */
  forceDelete?: pulumi.Input<boolean>;
}

/**
 * A secret (a policy's passphrase, a volume's key) sealed for recipients' public keys in a
 * versioned record in an escrow store, so a backup can be restored when every other copy of the
 * key is gone: `coffer escrow recover` opens it with the recipients' private keys, without Pulumi.
 * Changing the secret, the recipients or the threshold writes a new version and keeps the older
 * ones while backup sets' manifests name them. `pulumi refresh` checks the record; a record that
 * is missing or altered shows as drift (`recordStatus`) and `pulumi up` writes it again.
 */
export class SecretEscrow extends pulumi.dynamic.Resource {
  /** Secret. */
  declare readonly secret: pulumi.Output<string>;
  declare readonly recordId: pulumi.Output<string>;
  declare readonly recipients: pulumi.Output<{ name: string; publicKey: string }[]>;
  declare readonly store: pulumi.Output<DirectoryTarget>;
  declare readonly threshold: pulumi.Output<number>;
  declare readonly forceDelete: pulumi.Output<boolean>;
  /** The current version of the record. */
  declare readonly version: pulumi.Output<number>;
  /** Absolute path of the current version's file. */
  declare readonly recordPath: pulumi.Output<string>;
  /** "sha256:<hex>" of the current version's file as written. */
  declare readonly recordDigest: pulumi.Output<string>;
  /** Each recipient's key type and fingerprint ("sha256:<hex>" of the public key's DER). */
  declare readonly recipientKeys: pulumi.Output<RecipientKeyInfo[]>;
  /** Versions kept in the store: the current one and those backup sets still name. */
  declare readonly retainedVersions: pulumi.Output<number[]>;
  declare readonly recordStatus: pulumi.Output<RecordStatus>;
  declare readonly recordProblems: pulumi.Output<string[]>;
  declare readonly schemaVersion: pulumi.Output<number>;

  constructor(name: string, args: SecretEscrowArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      secretEscrowProvider,
      name,
      {
        // The secret stays a secret even if the caller passed a plain string.
        secret: pulumi.secret(args.secret),
        recipients: args.recipients,
        threshold: args.threshold,
        store: args.store,
        recordId: args.recordId ?? name,
        forceDelete: args.forceDelete,
        version: undefined,
        recordPath: undefined,
        recordDigest: undefined,
        recipientKeys: undefined,
        retainedVersions: undefined,
        // Declared: refresh puts what it finds here, and preview shows it against "ok".
        recordStatus: "ok",
        recordProblems: undefined,
        schemaVersion: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["secret"] }),
      COFFER_MODULE,
      COFFER_RESOURCE_NAMES.secretEscrow,
    );
  }
}

/**
 * Where a set escrows encrypted Cinder volumes' keys: the escrow's store, recipients and threshold
 * (all public), for sealing keys the set finds when it backs a volume up.
 * @internal
 */
export function keyEscrowOf(escrow: SecretEscrow) {
  return pulumi.all([escrow.store, escrow.recipients, escrow.threshold]).apply(([store, recipients, threshold]) => ({
    store: store.path,
    recipients: recipients.map(({ name, publicKey }) => ({ name, publicKey })),
    threshold,
  }));
}

/**
 * What a policy or set is told of `escrow`: the record, and whether it escrows `passphrase`
 * (compared here, in the program, where both are known; the result, one bit, is not secret, so
 * reviews see it). Only inputs of the escrow: they stay known while its update is previewed.
 * @internal
 */
export function escrowLink(
  escrow: SecretEscrow,
  passphrase: pulumi.Input<string | undefined>,
): pulumi.Inputs & { [K in keyof EscrowLink]: pulumi.Input<EscrowLink[K]> } {
  return {
    recordId: escrow.recordId,
    store: escrow.store.apply((store) => store.path),
    escrowsPassphrase: pulumi.unsecret(
      pulumi.all([escrow.secret, passphrase]).apply(([secret, pass]) => pass !== undefined && secret === pass),
    ),
  };
}
