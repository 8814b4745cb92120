import * as pulumi from "@pulumi/pulumi";
// Types only: erased when compiled, so a user's program never loads the implementation or zod.
import type { DrillCheckStatus, DrillChecks } from "../provider/agent/drill";
import type { DrillResult } from "../provider/restoreDrill/provider";
import { delegatingProvider } from "./delegatingProvider";
import type { EncryptedBackupSet } from "./encryptedBackupSet";
import { COFFER_MODULE, COFFER_RESOURCE_NAMES } from "./resourceTypes";

export type { DrillCheckStatus, DrillChecks, DrillResult };

/** @internal Exported for the serialization tests. */
export const restoreDrillProvider = delegatingProvider("coffer/provider/restoreDrill");

export interface DrillBootArgs {
  /** Text the restored guest prints on its first serial port once it is up, e.g. "login:". */
  marker: pulumi.Input<string>;
  /** How long to wait for it. Default 120. */
  timeoutSeconds?: pulumi.Input<number>;
  /** The guest's memory. Default 256. */
  memoryMiB?: pulumi.Input<number>;
  /** The item (source name) whose disk boots. Default: each point's first item. */
  item?: pulumi.Input<string>;
}

export interface RestoreDrillArgs {
  /** The sets whose points are drilled. */
  sets: EncryptedBackupSet[];
  /** "newest": each set's newest good point (default); "sampled": a random good one (results say which). */
  pick?: pulumi.Input<"newest" | "sampled">;
  /** Where the scratch folder is made, on the machine that holds the points. Default: its temp folder. */
  scratchDir?: pulumi.Input<string>;
  /** Boot each restored disk under QEMU (TCG, read-only) until `marker` appears on its serial console. */
  boot?: pulumi.Input<DrillBootArgs>;
  /**
   * Also drill each Cinder source's backup: restored into a scratch volume (the recorded type), waited
   * for until available, then deleted, always; in Pulumi's process, with the stack's OpenStack credentials.
   * Default false: a point whose only backup is Cinder's then fails its drill, saying so.
   */
  cinderScratch?: pulumi.Input<boolean>;
}

/** The set resource's name, from its URN (`urn:pulumi:stack::project::type::name`). */
const nameOf = (set: EncryptedBackupSet) => set.urn.apply((urn) => urn.split("::").pop() ?? urn);

/**
 * A restore drill, after AWS Backup's restore testing: on create, every `pulumi up` and every
 * `pulumi refresh`, each set's newest good point (or a random one) is restored into a scratch
 * folder on the machine that holds it, the manifest checked, the restored data's SHA-256 compared
 * with the manifest's, `qemu-img check` run on the stored files, and optionally the disk booted
 * until a marker appears on its serial console; the scratch folder is removed afterwards. A failed
 * drill fails the `up`, naming the set, the point and the check; on refresh it shows as drift.
 */
export class RestoreDrill extends pulumi.dynamic.Resource {
  declare readonly pick: pulumi.Output<"newest" | "sampled">;
  declare readonly scratchDir: pulumi.Output<string | undefined>;
  declare readonly boot: pulumi.Output<{ marker: string; timeoutSeconds: number; memoryMiB: number } | undefined>;
  /** When the drills last ran. */
  declare readonly lastRun: pulumi.Output<string>;
  /** "ok" when every set's drill passed, else "failed". */
  declare readonly status: pulumi.Output<"ok" | "failed">;
  /** Per set: the point drilled, each check's status, the failure and how long it took. */
  declare readonly results: pulumi.Output<DrillResult[]>;
  /** Each failed drill in a line that names the set, the point and the check. */
  declare readonly failures: pulumi.Output<string[]>;
  declare readonly schemaVersion: pulumi.Output<number>;

  constructor(name: string, args: RestoreDrillArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      restoreDrillProvider,
      name,
      {
        // Public: where each set's points are. Secret: the keys that open them (no signing key).
        sets: args.sets.map((set) =>
          pulumi
            .all([nameOf(set), set.setId, set.points, set.locations, set.signers])
            .apply(([setName, setId, points, locations, signers]) => ({
              name: setName,
              setId,
              points,
              locations,
              ...(signers ? { signers } : {}),
            })),
        ),
        keys: pulumi.secret(
          pulumi.all(
            args.sets.map((set) =>
              pulumi
                .all([set.setId, set.keyVersion, set.keys, set.keyring])
                .apply(([setId, keyVersion, keys, ring]) => ({
                  setId,
                  keyVersion,
                  keys: {
                    passphrase: keys.passphrase,
                    manifestKey: keys.manifestKey,
                    // A Swift target's key only then: drills of directory sets keep the inputs they had.
                    ...(keys.targetKey ? { targetKey: keys.targetKey } : {}),
                  },
                  keyring: (ring ?? []).map(({ version, passphrase, manifestKey }) => ({
                    version,
                    passphrase,
                    manifestKey,
                  })),
                })),
            ),
          ),
        ),
        pick: args.pick,
        scratchDir: args.scratchDir,
        boot: args.boot,
        cinderScratch: args.cinderScratch,
        // Declared: refresh puts what it finds here, and preview shows it against "ok".
        status: "ok",
        lastRun: undefined,
        results: undefined,
        failures: undefined,
        schemaVersion: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["keys"] }),
      COFFER_MODULE,
      COFFER_RESOURCE_NAMES.restoreDrill,
    );
  }
}
