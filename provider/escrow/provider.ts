import type * as pulumi from "@pulumi/pulumi";
import { canonicalJson } from "../common/canonicalJson";
import {
  changedKeys,
  checkInputs,
  currentState,
  parseCheckedInputs,
  userInputs,
  withoutUndefined,
} from "../common/check";
import { CofferError } from "../common/errors";
import { RecipientKey, parseRecipientKey } from "./envelope";
import {
  readCurrentVersion,
  readRecord,
  recordPath,
  recordVersions,
  removeCurrentVersion,
  removeVersion,
  writeCurrentVersion,
  writeRecord,
  type EscrowRecord,
} from "./record";
import { escrowLayout } from "../targets/layout";
import type { TargetStore } from "../targets/store";
import { liveReferences, pruneVersions, removeReferences } from "./references";
import { ESCROW_SCHEMA_VERSION, SecretEscrowInputs, secretEscrowInputs } from "./schema";

export interface RecipientKeyInfo {
  name: string;
  type: "rsa" | "x25519";
  fingerprint: string;
}

/** "ok", or what refresh found wrong with the current version of the record. */
export type RecordStatus = "ok" | "missing" | "unreadable" | "recipients-differ" | "altered";

/** What is stored in state: the checked inputs (the secret is secret), plus what was written and last observed. */
export interface SecretEscrowOutputs extends Omit<SecretEscrowInputs, "recordStatus"> {
  schemaVersion: number;
  /** The current version: each change of secret, recipients or threshold writes the next one. */
  version: number;
  recordPath: string;
  /** "sha256:<hex>" of the current version's file as written; refresh compares it. */
  recordDigest: string;
  recipientKeys: RecipientKeyInfo[];
  /** Versions in the store: the current one, and older ones a backup set still refers to. */
  retainedVersions: number[];
  recordStatus: RecordStatus;
  /** What refresh found, in words; empty when the record is as written. */
  recordProblems: string[];
}

export interface EscrowHost {
  /** Throws when `dir` is not an existing, accessible directory. */
  assertDirectory(dir: string): Promise<void>;
  /** The escrow store the inputs name. */
  store(location: SecretEscrowInputs["store"]): TargetStore;
  now(): Date;
}

type Outputs = SecretEscrowOutputs & { __provider?: string };

/** The recipients' parsed keys; `check` has refused bad ones, so one here is tampered state. */
function recipientKeysOf(inputs: SecretEscrowInputs): { name: string; key: RecipientKey }[] {
  return inputs.recipients.map((r) => {
    const parsed = parseRecipientKey(r.publicKey);
    if (!parsed.ok)
      throw new CofferError("INVALID_INPUT", `recipients: ${r.name}'s publicKey ${parsed.reason}`, {
        field: "recipients",
      });
    return { name: r.name, key: parsed.key };
  });
}

/** What refresh makes of the record file: the declared recipients and threshold, and the digest written. */
export function observeRecord(
  store: TargetStore,
  state: SecretEscrowOutputs,
  found: { record: EscrowRecord; digest: string } | undefined | "unreadable",
  currentVersion: number | undefined,
): { status: RecordStatus; problems: string[] } {
  const file = recordPath(store, state.recordId, state.version);
  if (found === undefined) return { status: "missing", problems: [`${file} is missing`] };
  if (found === "unreadable")
    return {
      status: "unreadable",
      problems: [`${file} is not a Coffer escrow record for ${state.recordId} v${state.version}`],
    };
  const sealed = found.record.sealed;
  const stored = sealed.recipients.map((r) => ({ name: r.name, type: r.type, fingerprint: r.fingerprint }));
  if (canonicalJson(stored) !== canonicalJson(state.recipientKeys) || sealed.threshold !== state.threshold) {
    const names = (list: RecipientKeyInfo[]) => list.map((r) => `${r.name} (${r.fingerprint.slice(7, 19)})`).join(", ");
    return {
      status: "recipients-differ",
      problems: [
        `${file} is sealed for ${names(stored)} with threshold ${sealed.threshold}; declared: ${names(state.recipientKeys)} with threshold ${state.threshold}`,
      ],
    };
  }
  if (found.digest !== state.recordDigest)
    return { status: "altered", problems: [`${file} has changed since it was written (its digest differs)`] };
  if (currentVersion !== state.version) {
    const pointer = store.locate(escrowLayout.current(state.recordId));
    const names = currentVersion === undefined ? "no version" : `v${currentVersion}`;
    const problem = "new backup sets would not link to the current version";
    return { status: "altered", problems: [`${pointer} names ${names}, not v${state.version}: ${problem}`] };
  }
  return { status: "ok", problems: [] };
}

export function createSecretEscrowProvider(host: EscrowHost) {
  async function assertStore(
    store: string,
    fix = "mount the escrow store (or create the folder) and run again",
  ): Promise<void> {
    try {
      await host.assertDirectory(store);
    } catch (cause) {
      throw new CofferError("TARGET_UNREACHABLE", `escrow store ${store} is not an accessible directory: ${fix}`, {
        field: "store.path",
        cause,
      });
    }
  }

  async function write(inputs: SecretEscrowInputs, version: number): Promise<SecretEscrowOutputs> {
    const keys = recipientKeysOf(inputs);
    const store = host.store(inputs.store);
    let written: { path: string; digest: string };
    try {
      written = await writeRecord(store, inputs.recordId, version, inputs.secret, keys, inputs.threshold, host.now());
      await writeCurrentVersion(store, inputs.recordId, version);
    } catch (cause) {
      throw new CofferError(
        "IO_FAILED",
        `could not write escrow record ${inputs.recordId} v${version}: ${(cause as Error).message}`,
        { cause, secrets: [inputs.secret] },
      );
    }
    return {
      ...inputs,
      schemaVersion: ESCROW_SCHEMA_VERSION,
      version,
      recordPath: written.path,
      recordDigest: written.digest,
      recipientKeys: keys.map(({ name, key }) => ({ name, type: key.type, fingerprint: key.fingerprint })),
      retainedVersions: await recordVersions(store, inputs.recordId),
      recordStatus: "ok",
      recordProblems: [],
    };
  }

  const parseChecked = (news: Record<string, unknown>) => parseCheckedInputs(secretEscrowInputs, news);

  return {
    async check(_olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
      return checkInputs(secretEscrowInputs, news);
    },

    async diff(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
      return planEscrowChange(upgradeOutputs(olds), userInputs(news));
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
      const inputs = parseChecked(news);
      await assertStore(inputs.store.path);
      const store = host.store(inputs.store);
      const existing = await recordVersions(store, inputs.recordId);
      if (existing.length > 0) {
        // Never overwrite an escrow: it may be the only way to some backup's key.
        throw new CofferError(
          "ESCROW_EXISTS",
          `${store.locate(escrowLayout.record(inputs.recordId))} already holds an escrow record ` +
            `(versions ${existing.join(", ")}), written by another stack or before this stack's state was lost: ` +
            "give this SecretEscrow another recordId, or move that folder away once you are sure no backup needs it",
          { field: "recordId" },
        );
      }
      const outs = await write(inputs, 1);
      return { id: inputs.recordId, outs: withoutUndefined(outs) };
    },

    async update(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
      const previous = upgradeOutputs(olds);
      const inputs = parseChecked(news);
      await assertStore(inputs.store.path);
      const store = host.store(inputs.store);
      if (sealedContentChanged(previous, inputs)) {
        // Rotation: a new version; the old ones stay while a backup set's manifest names them.
        const onDisk = await recordVersions(store, inputs.recordId);
        const outs = await write(inputs, Math.max(previous.version, ...onDisk) + 1);
        // The new version is written and current: a failed clean-up must not fail the update
        // (the next rotation or set deletion tries again).
        await pruneVersions(store, inputs.recordId).catch(() => undefined);
        return {
          outs: withoutUndefined({
            ...outs,
            retainedVersions: await recordVersions(store, inputs.recordId),
          }),
        };
      }
      if (previous.recordStatus !== "ok") {
        // Repair: the same version again, so manifests that name it still find it.
        return { outs: withoutUndefined(await write(inputs, previous.version)) };
      }
      return { outs: withoutUndefined({ ...previous, ...inputs }) };
    },

    async read(id: string, olds: Outputs): Promise<pulumi.dynamic.ReadResult> {
      const state = upgradeOutputs(olds);
      await assertStore(state.store.path);
      const store = host.store(state.store);
      const found = await readRecord(store, state.recordId, state.version).catch(() => "unreadable" as const);
      const observed = observeRecord(store, state, found, await readCurrentVersion(store, state.recordId));
      const props: SecretEscrowOutputs = {
        ...state,
        retainedVersions: await recordVersions(store, state.recordId),
        recordStatus: observed.status,
        recordProblems: observed.problems,
      };
      return { id, props: withoutUndefined(props), inputs: withoutUndefined(inputsOf(props)) };
    },

    async delete(_id: string, props: Outputs): Promise<void> {
      const state = upgradeOutputs(props);
      await assertStore(
        state.store.path,
        "mount it and run again; if the store is gone for good, drop the escrow from state with `pulumi state delete <urn>`",
      );
      const store = host.store(state.store);
      const live = await liveReferences(store, state.recordId);
      if (live.length > 0 && !state.forceDelete) {
        const sets = live.map(
          (r) =>
            `${r.setId} (v${r.version}, ${r.manifestHost === "local" ? r.manifestPath : `${r.manifestHost}:${r.manifestPath}`})`,
        );
        throw new CofferError(
          "ESCROW_IN_USE",
          `escrow record ${state.recordId} is the way to recover the key of ${live.length} recovery point(s) still in the store: ${sets.join("; ")}. Delete those points first (coffer prune --point), or set forceDelete: true on this SecretEscrow (run pulumi up) to delete it anyway`,
          { field: "forceDelete" },
        );
      }
      await removeRecord(store, state.recordId);
    },
  };
}

/** Removes a record's versions and references; its folder goes with them if nothing else is in it. */
async function removeRecord(store: TargetStore, id: string): Promise<void> {
  await removeCurrentVersion(store, id);
  for (const version of await recordVersions(store, id)) await removeVersion(store, id, version);
  await removeReferences(store, id);
}

export function upgradeOutputs(olds: Outputs): SecretEscrowOutputs {
  return currentState("SecretEscrow", ESCROW_SCHEMA_VERSION, olds);
}

/**
 * What refresh hands back to Pulumi as the resource's inputs: the declared ones, with the status
 * found, so that the next preview's diff shows it against the declared "ok".
 */
export function inputsOf(
  outputs: SecretEscrowOutputs,
): Omit<SecretEscrowInputs, "recordStatus"> & { recordStatus: RecordStatus } {
  const { secret, recipients, threshold, store, recordId, forceDelete, recordStatus } = outputs;
  return { secret, recipients, threshold, store, recordId, forceDelete, recordStatus };
}

/** Whether the sealed content must change: another secret, other recipients' keys, another threshold. */
export function sealedContentChanged(olds: SecretEscrowOutputs, news: SecretEscrowInputs): boolean {
  const recipients = (list: SecretEscrowInputs["recipients"]) =>
    canonicalJson(list.map((r) => ({ name: r.name, publicKey: r.publicKey.trim() })));
  return (
    olds.secret !== news.secret ||
    olds.threshold !== news.threshold ||
    recipients(olds.recipients) !== recipients(news.recipients)
  );
}

/**
 * Decides what `pulumi up` must do: another store or record id replaces the record (new one
 * first); another secret, recipients or threshold writes a new version; a record that refresh
 * found missing or altered is written again.
 */
export function planEscrowChange(olds: SecretEscrowOutputs, news: Record<string, unknown>): pulumi.dynamic.DiffResult {
  const changed = changedKeys(olds, news, ["store", "recordId", "secret", "recipients", "threshold", "forceDelete"]);
  const replaces = changed.filter((key) => key === "store" || key === "recordId");
  return { changes: changed.length > 0 || olds.recordStatus !== "ok", replaces, deleteBeforeReplace: false };
}
