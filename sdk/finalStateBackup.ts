import * as pulumi from "@pulumi/pulumi";
import type { BackupPolicy } from "./backupPolicy";
import { delegatingProvider } from "./delegatingProvider";
import { appliedPolicyOf } from "./encryptedBackupSet";
import { COFFER_MODULE, COFFER_RESOURCE_NAMES, cofferResourceType } from "./resourceTypes";

/**
 * @internal Exported for the serialization tests.
 */
export const finalStateProvider = delegatingProvider("coffer/provider/finalState");

/** A running VM: its QMP socket and the disks to take, on `host` (an ssh destination) or this machine. */
export interface RunningVmArgs {
  qmpSocket: pulumi.Input<string>;
  /** The disks' qdev ids, e.g. ["vda"]. */
  devices: pulumi.Input<pulumi.Input<string>[]>;
  host?: pulumi.Input<string>;
}

/** A stopped VM's disk files, on `host` or this machine. */
export interface StoppedVmArgs {
  disks: pulumi.Input<pulumi.Input<{ disk: pulumi.Input<string>; format?: pulumi.Input<"raw" | "qcow2"> }>[]>;
  host?: pulumi.Input<string>;
}

/** A Nova server (e.g. an openstack.compute.Instance's `id`): its root disk and attached volumes. */
export interface NovaServerVmArgs {
  novaServer: pulumi.Input<string>;
}

export interface FinalStateBackupArgs {
  /** The VM whose final state is kept. Pass values from the VM's resource, so this depends on it. */
  vm: pulumi.Input<RunningVmArgs | StoppedVmArgs | NovaServerVmArgs>;
  /** Its target, compression, throttle and integrity check apply; its signing key signs the manifest (required). */
  policy: BackupPolicy;
  /** Who may open the final point: their private keys, not the policy's passphrase. */
  recipients: pulumi.Input<pulumi.Input<{ name: pulumi.Input<string>; publicKey: pulumi.Input<string> }>[]>;
  /** How many recipients are needed to open it. Default 1. */
  threshold?: pulumi.Input<number>;
  /** The final point is not pruned before this many days, by `up` or the CLI. */
  holdDays: pulumi.Input<number>;
  /** Why final states are kept ("security", "audit"): recorded in the manifest. */
  reason: pulumi.Input<string>;
  /** A failed final backup then lets the VM go (and says so) instead of blocking its deletion. Default false. */
  allowDeleteWithoutBackup?: pulumi.Input<boolean>;
  /** Overwrite staging files before removing them. Default false. */
  scrub?: pulumi.Input<boolean>;
}

/**
 * Keeps a VM's final state: when the VM is deleted or replaced (`pulumi destroy`, an `up` that removes
 * it, a replacement), this resource's deletion, which Pulumi runs first, takes one final point of all
 * its disks, sealed for `recipients`, signed with the policy's key, and held for `holdDays`. If that
 * backup fails, the deletion fails and the VM keeps running, unless `allowDeleteWithoutBackup`.
 */
export class FinalStateBackup extends pulumi.dynamic.Resource {
  /** The set folder, under the policy's target and zone, that the final point goes into. */
  declare readonly setId: pulumi.Output<string>;
  declare readonly targetId: pulumi.Output<string>;
  /** When the backup was armed. */
  declare readonly armedAt: pulumi.Output<string>;
  declare readonly schemaVersion: pulumi.Output<number>;

  constructor(name: string, args: FinalStateBackupArgs, opts?: pulumi.CustomResourceOptions) {
    const policy = args.policy;
    const type = cofferResourceType(COFFER_RESOURCE_NAMES.finalStateBackup);
    super(
      finalStateProvider,
      name,
      {
        vm: args.vm,
        policy: appliedPolicyOf(policy),
        keys: pulumi.secret(policy.declaredSigning.apply((signing) => ({ signingKey: signing?.privateKey }))),
        recipients: args.recipients,
        threshold: args.threshold,
        holdDays: args.holdDays,
        reason: args.reason,
        allowDeleteWithoutBackup: args.allowDeleteWithoutBackup,
        scrub: args.scrub,
        // What the manifest records of the deletion: the provider's delete sees none of it.
        takenFor: {
          stack: pulumi.getStack(),
          project: pulumi.getProject(),
          urn: pulumi.createUrn(name, type, opts?.parent),
        },
        setId: undefined,
        targetId: undefined,
        armedAt: undefined,
        schemaVersion: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["keys"] }),
      COFFER_MODULE,
      COFFER_RESOURCE_NAMES.finalStateBackup,
    );
  }
}
