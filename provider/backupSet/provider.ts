import type * as pulumi from "@pulumi/pulumi";
import {
  changedKeys,
  checkInputs,
  currentState,
  parseCheckedInputs,
  userInputs,
  withoutUndefined,
} from "../common/check";
import type { Verification } from "../agent/backupSet";
import type { Manifest, ManifestItem } from "../agent/manifest";
import { ensureReference, releaseReference } from "../escrow/references";
import type { EscrowLink } from "../escrow/schema";
import type { TargetRef } from "../common/targetIdentity";
import { planPoint } from "./plan";
import { BackupSetInputs, SET_SCHEMA_VERSION, backupSetInputs } from "./schema";
import { TakeDeps, removePoint, takePoint } from "./take";
export { boundedAll } from "./take";

export interface BackupSetOutputs extends Omit<BackupSetInputs, "escrow"> {
  /** The escrow link, with the version of the record the manifest names (its current one when the set was made). */
  escrow?: EscrowLink & { version: number };
  schemaVersion: number;
  setId: string;
  setDir: string;
  manifestPath: string;
  /** Where the manifest was written and is verified from: "local" or an ssh destination. */
  manifestHost: string;
  /** Per source: what the agent made, and `via`, where it ran ("local" or an ssh destination). */
  items: (ManifestItem & { via: string })[];
  verification: Verification;
  /** The target's identity when the set was taken; absent in state written before identities (schema 1). */
  targetId?: string;
}

export interface SetHost extends TakeDeps {
  newSetId(trigger: string): string;
}

type Outputs = BackupSetOutputs & { __provider?: string };
/** What verify-set returns: the verification, and the id of the target it checked. */
type Verified = Verification & { targetId: string };

const local = (where: string) => (where === "local" ? undefined : where);
type SetOnTarget = { setDir: string; policy: BackupSetInputs["policy"]; targetId?: string };
/** The target as agent requests name it: its path, and its identity when known. */
const targetRef = (set: Omit<SetOnTarget, "setDir">): TargetRef => ({
  path: set.policy.target.path,
  id: set.targetId,
  zone: set.policy.zone,
});
const manifestSecret = (inputs: BackupSetInputs) =>
  inputs.policy.encrypted ? inputs.keys.passphrase! : inputs.keys.manifestKey!;
const secretsOf = (inputs: BackupSetInputs) =>
  [inputs.keys.passphrase, inputs.keys.manifestKey].filter((s): s is string => !!s);

export function createBackupSetProvider(host: SetHost) {
  const parseChecked = (news: Record<string, unknown>) => parseCheckedInputs(backupSetInputs, news);

  return {
    async check(_olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
      return checkInputs(backupSetInputs, news);
    },

    async diff(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
      return planSetChange(upgradeOutputs(olds), userInputs(news));
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
      const inputs = parseChecked(news);
      const plan = planPoint(inputs, { setId: host.newSetId(inputs.trigger) });
      const taken = await takePoint(plan, host);
      const outs: BackupSetOutputs = {
        ...inputs,
        escrow:
          inputs.escrow && taken.escrowVersion !== undefined
            ? { ...inputs.escrow, version: taken.escrowVersion }
            : undefined,
        schemaVersion: SET_SCHEMA_VERSION,
        setId: plan.setId,
        setDir: plan.pointDir,
        manifestPath: taken.manifestPath,
        manifestHost: taken.manifestHost,
        items: taken.items,
        verification: {
          status: "ok",
          checkedAt: host.now().toISOString(),
          level: plan.policy.integrityCheck,
          failures: [],
        },
        targetId: taken.targetId,
      };
      return { id: plan.setId, outs: withoutUndefined(outs) };
    },

    async read(id: string, props: Outputs): Promise<pulumi.dynamic.ReadResult> {
      const state = upgradeOutputs(props);
      // An unmounted target is an error here, not a "missing" set: that would plan a new set onto the local disk.
      const verification = await host.agent(local(state.manifestHost)).call(
        "verify-set",
        {
          target: targetRef(state),
          setDir: state.setDir,
          level: state.policy.integrityCheck,
          manifestSecret: manifestSecret(state),
          passphrase: state.keys.passphrase,
        },
        { secrets: secretsOf(state) },
      );
      const { manifest, targetId, ...verified } = verification as Verified & { manifest?: Manifest };
      const result = verified.status === "ok" && manifest ? matchState(verified, state, manifest) : verified;
      if (state.escrow && result.status !== "missing") {
        const { store, recordId, version } = state.escrow;
        await ensureReference(store, recordId, {
          setId: state.setId,
          version,
          manifestPath: state.manifestPath,
          manifestHost: state.manifestHost,
          createdAt: host.now().toISOString(),
        }).then(
          (healed) =>
            healed &&
            host.progress(
              `escrow ${recordId}: wrote back this set's reference to v${version}, which was missing from ${store}`,
            ),
          (error: Error) =>
            host.progress(`escrow ${recordId}: could not check this set's reference (${error.message})`),
        );
      }
      // State from before identities adopts the target's (the agent checked it exists).
      return { id, props: withoutUndefined({ ...state, targetId: state.targetId ?? targetId, verification: result }) };
    },

    async update(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
      // Only concurrency updates in place (planSetChange replaces on anything else).
      const inputs = parseChecked(news);
      return { outs: withoutUndefined({ ...upgradeOutputs(olds), concurrency: inputs.concurrency }) };
    },

    async delete(_id: string, props: Outputs): Promise<void> {
      const state = upgradeOutputs(props);
      await removePoint(host, {
        pointDir: state.setDir,
        target: targetRef(state),
        knownFiles: state.items.map((i) => i.file),
        hosts: [...state.items.map((i) => i.via), state.manifestHost],
      });
      if (state.escrow) {
        // A reference left behind is harmless (its manifest is gone), so this never fails the delete.
        await releaseReference(state.escrow.store, state.escrow.recordId, state.setId).then(
          (released) =>
            released.length > 0 &&
            host.progress(
              `escrow ${state.escrow!.recordId}: removed version(s) ${released.join(", ")}, which no backup set needs any more`,
            ),
          (error: Error) =>
            host.progress(
              `escrow ${state.escrow!.recordId}: could not remove this set's reference (${error.message}); it is ignored once the set is gone`,
            ),
        );
      }
    },
  };
}

/**
 * A verified set whose manifest is not the one Pulumi recorded (another set's id, other files or
 * hashes) failed: the target was changed by someone who holds the key, or the state is not this set's.
 */
export function matchState(verification: Verification, state: BackupSetOutputs, manifest: Manifest): Verification {
  const failures: string[] = [];
  if (manifest.setId !== state.setId) {
    failures.push(`manifest: it is set ${manifest.setId}'s, but Pulumi recorded set ${state.setId}`);
  }
  for (const recorded of state.items) {
    const found = manifest.items.find((i) => i.name === recorded.name);
    const compared = ["file", "sizeBytes", "fileSha256", "streamSha256"] as const;
    const differs = compared.filter((key) => found?.[key] !== recorded[key]);
    if (!found) failures.push(`item ${recorded.name}: the manifest does not name it, but Pulumi recorded it`);
    else if (differs.length > 0) {
      failures.push(`item ${recorded.name}: the manifest's ${differs.join(", ")} differ from what Pulumi recorded`);
    }
  }
  for (const extra of manifest.items.filter((i) => !state.items.some((r) => r.name === i.name))) {
    failures.push(`item ${extra.name}: the manifest names it, but Pulumi did not record it`);
  }
  return failures.length === 0 ? verification : { ...verification, status: "failed", failures };
}

export function upgradeOutputs(olds: Outputs): BackupSetOutputs {
  return currentState("EncryptedBackupSet", SET_SCHEMA_VERSION, olds);
}

const REPLACING = ["policy", "keys", "sources", "trigger", "host"] as const;

/** The key a set is made with: the passphrase, or for an unencrypted set the manifest key. Other keys in `keys` don't matter. */
function usedKey(inputs: object): unknown {
  const { policy, keys } = inputs as {
    policy?: { encrypted?: unknown };
    keys?: { passphrase?: unknown; manifestKey?: unknown };
  };
  return policy?.encrypted === false ? keys?.manifestKey : keys?.passphrase;
}

/**
 * A set is a point in time: any change but concurrency takes a new one, and so does a set that
 * failed verification. The new set is made before the old one is deleted.
 */
export function planSetChange(olds: BackupSetOutputs, news: Record<string, unknown>): pulumi.dynamic.DiffResult {
  const changed = changedKeys(olds, news, [...REPLACING, "concurrency"], { keys: (o, n) => usedKey(o) === usedKey(n) });
  const replaces: string[] = REPLACING.filter((key) => changed.includes(key));
  if (olds.verification.status !== "ok") replaces.push("verification");
  const changes = replaces.length > 0 || changed.includes("concurrency");
  return { changes, replaces, deleteBeforeReplace: false };
}
