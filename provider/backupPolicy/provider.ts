import type * as pulumi from "@pulumi/pulumi";
import {
  checkInputs,
  currentState,
  parseCheckedInputs,
  unknownPaths,
  userInputs,
  withoutUndefined,
} from "../common/check";
import { CofferError } from "../common/errors";
import { isSystemFolder, systemFolderProblem } from "../common/directoryLocation";
import { checkTargetIdentity, claimTargetIdentity } from "../common/targetIdentity";
import {
  DOCUMENT_KIND,
  DOCUMENT_SCHEMA_VERSION,
  ParsedDocument,
  PolicyDocument,
  PolicySettings,
  fingerprintMatches,
  parseDocument,
  passphraseFingerprint,
  renderDocument,
  sameSettings,
  settingsFor,
} from "./document";
import type { EscrowLink } from "../escrow/schema";
import { SigningPublicKey, publicKeyOf } from "../common/signingKey";
import { targetLayout } from "../targets/layout";
import type { TargetStore } from "../targets/store";
import { BackupPolicyInputs, POLICY_SCHEMA_VERSION, backupPolicyInputs } from "./schema";

/** What is stored in state: the checked inputs, plus what was written and last observed. */
/**
 * Every output is present, null meaning "not set": during preview Pulumi takes an output missing
 * from state for an unknown one, which would make everything built on it look about to change.
 */
export interface BackupPolicyOutputs extends Omit<
  BackupPolicyInputs,
  "encryption" | "retention" | "host" | "escrow" | "signing"
> {
  retention: BackupPolicyInputs["retention"] | null;
  escrow: EscrowLink | null;
  host: string | null;
  schemaVersion: number;
  /** Secret as a whole (the resource class forces it): the passphrase and the fingerprint key; null when off. */
  encryption?: { passphrase: string; fingerprintKey: string } | null;
  /** Secret: signs the manifests of unencrypted backup sets (encrypted ones use the passphrase). */
  manifestKey: string;
  /** Secret (the resource class forces it): the Ed25519 private key; null when off, absent in older state. */
  signing?: { privateKey: string } | null;
  /** Public: the signing key's public half, which checks manifests without any secret; null when off. */
  signingPublicKey?: SigningPublicKey | null;
  documentPath: string;
  revision: number;
  /** The settings in the policy document as last written or read: refresh puts drift here. */
  settings: PolicySettings;
  /** "ok", or why the document at `documentPath` can't be taken as this policy's. */
  documentStatus: "ok" | "unreadable" | "owned-elsewhere";
  /** The id in the target's identity file; absent only in state written before identities (schema 1). */
  targetId?: string;
}

/** The host operations the provider needs; tests pass their own. */
export interface PolicyHost {
  /** Throws when `dir` is not an existing, accessible directory. */
  assertDirectory(dir: string): Promise<void>;
  /** `dir` with every symlink resolved. */
  realPath(dir: string): Promise<string>;
  /** The store on the target, where the policy document and the target's identity are; `key`: a Swift target's. */
  store(target: BackupPolicyInputs["target"], key?: string): TargetStore;
  randomKey(): string;
  newId(zone: string): string;
  now(): Date;
}

type Outputs = BackupPolicyOutputs & { __provider?: string };
/** What a write of the document records besides the inputs. */
type Written = { revision: number; fingerprintKey: string | undefined; manifestKey: string; targetId: string };

const DROP_FROM_STATE = "if the target is gone for good, drop the policy from state with `pulumi state delete <urn>`";

export function createBackupPolicyProvider(host: PolicyHost) {
  /**
   * Throws unless the target can be used. A Swift target's containers are made here, by create and update
   * only: refresh and delete write nothing, and a container that is gone shows as a target without its identity.
   */
  async function assertTargetReachable(
    policy: Pick<BackupPolicyInputs, "target" | "targetKey">,
    fix = "mount the backup target (or create the folder) and run again",
    writes = true,
  ): Promise<void> {
    const { target } = policy;
    if (target.kind === "swift") {
      if (!writes) return;
      const store = host.store(target, policy.targetKey);
      try {
        await store.assertReachable();
      } catch (cause) {
        const why = (cause as Error).message;
        const swiftFix = "check target.authUrl, target.user and target.key, and that the cluster is up";
        throw new CofferError(
          "TARGET_UNREACHABLE",
          `backup target ${store.location} can't be used (${why}): ${swiftFix}`,
          {
            field: "target",
            cause,
            secrets: policy.targetKey ? [policy.targetKey] : [],
          },
        );
      }
      return;
    }
    try {
      await host.assertDirectory(target.path);
    } catch (cause) {
      throw new CofferError(
        "TARGET_UNREACHABLE",
        `backup target ${target.path} is not an accessible directory: ${fix}`,
        {
          field: "target.path",
          cause,
        },
      );
    }
  }

  /** Check refuses system folders by name; a symlink to one is seen only here. */
  async function refuseSystemFolder(target: BackupPolicyInputs["target"]): Promise<void> {
    if (target.kind !== "directory") return;
    const targetPath = target.path;
    const real = await host.realPath(targetPath);
    if (isSystemFolder(real)) {
      const problem = systemFolderProblem("target", "/srv/backups");
      throw new CofferError("INVALID_INPUT", `${problem} (${targetPath} is ${real})`, { field: "target.path" });
    }
  }

  /**
   * The target's id, checked against state. State from before identities has none: the identity
   * found is adopted, or written when this policy's document shows the target is mounted.
   */
  async function checkedTargetId(state: BackupPolicyOutputs, fix?: string): Promise<string> {
    const { store, key } = documentOf(state);
    if (state.targetId === undefined && (await store.readText(key)) !== undefined) {
      return claimTargetIdentity(store, host.now());
    }
    return checkTargetIdentity(store, state.targetId, fix);
  }

  /** Where the zone's policy document is: its target's store, its key, and its path as messages and outputs name it. */
  function documentOf(policy: Pick<BackupPolicyInputs, "target" | "zone" | "targetKey">) {
    const store = host.store(policy.target, policy.targetKey);
    const key = targetLayout.policyDocument(policy.zone);
    return { store, key, file: store.locate(key) };
  }

  async function readDocument({ store, key }: { store: TargetStore; key: string }) {
    const text = await store.readText(key);
    return text === undefined ? undefined : parseDocument(text);
  }

  /** Writes the document, replacing the one there; `exclusive`: only if there is none (else undefined). */
  async function write(id: string, inputs: BackupPolicyInputs, written: Written): Promise<BackupPolicyOutputs>;
  async function write(
    id: string,
    inputs: BackupPolicyInputs,
    written: Written,
    exclusive: true,
  ): Promise<BackupPolicyOutputs | undefined>;
  async function write(
    id: string,
    inputs: BackupPolicyInputs,
    written: Written,
    exclusive = false,
  ): Promise<BackupPolicyOutputs | undefined> {
    const { revision, fingerprintKey, manifestKey, targetId } = written;
    const { store, key, file } = documentOf(inputs);
    const fingerprint =
      inputs.encryption && fingerprintKey
        ? passphraseFingerprint(inputs.encryption.passphrase, fingerprintKey)
        : undefined;
    const settings = settingsFor(inputs, fingerprint);
    const doc: PolicyDocument = {
      kind: DOCUMENT_KIND,
      schemaVersion: DOCUMENT_SCHEMA_VERSION,
      policyId: id,
      owner: inputs.owner,
      zone: inputs.zone,
      revision,
      writtenAt: host.now().toISOString(),
      settings,
    };
    try {
      if (exclusive) {
        if (!(await store.writeTextExclusive(key, renderDocument(doc)))) return undefined;
      } else {
        await store.writeTextAtomic(key, renderDocument(doc));
      }
    } catch (cause) {
      throw new CofferError("IO_FAILED", `could not write the policy document ${file}: ${(cause as Error).message}`, {
        cause,
        secrets: [inputs.encryption?.passphrase, inputs.signing?.privateKey, inputs.targetKey].filter(
          (s): s is string => !!s,
        ),
      });
    }
    return withoutUndefined({
      ...inputs,
      schemaVersion: POLICY_SCHEMA_VERSION,
      encryption:
        inputs.encryption && fingerprintKey ? { passphrase: inputs.encryption.passphrase, fingerprintKey } : null,
      retention: inputs.retention ?? null,
      host: inputs.host ?? null,
      escrow: inputs.escrow ?? null,
      signing: inputs.signing ? { privateKey: inputs.signing.privateKey } : null,
      signingPublicKey: inputs.signing ? publicKeyOf(inputs.signing.privateKey) : null,
      manifestKey,
      documentPath: file,
      revision,
      settings,
      documentStatus: "ok",
      targetId,
    });
  }

  const parseChecked = (news: Record<string, unknown>) => parseCheckedInputs(backupPolicyInputs, news);

  function ownedElsewhere(file: string, otherId: string): CofferError {
    return new CofferError(
      "ZONE_OWNED_ELSEWHERE",
      `${file} already holds the policy of another BackupPolicy (id ${otherId}); a zone has one policy: remove that resource (or its document) first, or use another zone`,
      { field: "zone" },
    );
  }

  /**
   * The revision to write over a document found where a new policy goes: it may be taken over only
   * when this resource wrote it (an earlier incarnation, e.g. left by a failed replacement).
   */
  function takeOverRevision(file: string, existing: ParsedDocument, owner: string | undefined): number {
    if (!existing.ok) {
      const problem = `${file} exists but is not a policy document Coffer can read (${existing.problem})`;
      throw new CofferError("DOCUMENT_UNREADABLE", `${problem}: move it away, then run again`, { field: "zone" });
    }
    const mine = owner !== undefined && existing.document.owner === owner;
    if (!mine) throw ownedElsewhere(file, existing.document.policyId);
    return existing.document.revision + 1;
  }

  return {
    async check(_olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
      return checkInputs(backupPolicyInputs, news);
    },

    async diff(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
      return planPolicyChange(upgradeOutputs(olds), userInputs(news));
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
      const inputs = parseChecked(news);
      await assertTargetReachable(inputs);
      await refuseSystemFolder(inputs.target);
      const document = documentOf(inputs);
      const targetId = await claimTargetIdentity(document.store, host.now());
      const id = host.newId(inputs.zone);
      const { file } = document;
      const fingerprintKey = inputs.encryption ? host.randomKey() : undefined;
      const keys = { fingerprintKey, manifestKey: host.randomKey(), targetId };
      let existing = await readDocument(document);
      if (existing === undefined) {
        // Exclusive: of two policies created for one zone at once, exactly one gets it.
        const outs = await write(id, inputs, { ...keys, revision: 1 }, true);
        if (outs) return { id, outs };
        existing = await readDocument(document);
        if (existing === undefined) {
          throw new CofferError("IO_FAILED", `${file} came and went while this policy was created: run again`);
        }
      }
      const revision = takeOverRevision(file, existing, inputs.owner);
      return { id, outs: await write(id, inputs, { ...keys, revision }) };
    },

    async update(id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
      const previous = upgradeOutputs(olds);
      const inputs = parseChecked(news);
      await assertTargetReachable(inputs);
      const targetId = await checkedTargetId(previous);
      const document = documentOf(inputs);
      const existing = await readDocument(document);
      if (existing?.ok && existing.document.policyId !== id)
        throw ownedElsewhere(document.file, existing.document.policyId);
      const lastRevision = Math.max(previous.revision, existing?.ok ? existing.document.revision : 0);
      const fingerprintKey = inputs.encryption ? previous.encryption?.fingerprintKey || host.randomKey() : undefined;
      // State written before manifest keys existed gets one on its next update.
      const manifestKey = previous.manifestKey || host.randomKey();
      return { outs: await write(id, inputs, { revision: lastRevision + 1, fingerprintKey, manifestKey, targetId }) };
    },

    async read(id: string, props: Outputs): Promise<pulumi.dynamic.ReadResult> {
      const state = upgradeOutputs(props);
      await assertTargetReachable(state, undefined, false);
      const targetId = await checkedTargetId(state);
      const found = await readDocument(documentOf(state));
      if (found === undefined) return {};
      const observed = observeDocument(id, { ...state, targetId }, found.ok ? found.document : undefined);
      return { id, props: withoutUndefined(observed), inputs: withoutUndefined(inputsOf(observed)) };
    },

    async delete(id: string, props: Outputs): Promise<void> {
      const state = upgradeOutputs(props);
      await assertTargetReachable(state, `mount it and run again; ${DROP_FROM_STATE}`, false);
      await checkedTargetId(state, DROP_FROM_STATE);
      const document = documentOf(state);
      const found = await readDocument(document);
      // A document another policy wrote since (or a later incarnation of this one) is not ours to remove.
      if (found?.ok && found.document.policyId !== id) return;
      // Removing it removes the zone's folders it leaves empty.
      if (found !== undefined) await document.store.remove(document.key);
    },
  };
}

/** State written by any earlier Coffer, as the current shape. */
export function upgradeOutputs(olds: Outputs): BackupPolicyOutputs {
  return currentState("BackupPolicy", POLICY_SCHEMA_VERSION, olds);
}

/** Outputs as the document on disk says they are; fields the document does not hold stay as they were. */
export function observeDocument(
  id: string,
  state: BackupPolicyOutputs,
  doc: PolicyDocument | undefined,
): BackupPolicyOutputs {
  if (doc === undefined) return { ...state, documentStatus: "unreadable" };
  if (doc.policyId !== id) return { ...state, documentStatus: "owned-elsewhere" };
  const s = doc.settings;
  return {
    ...state,
    compression: s.compression,
    bandwidthLimitMiBps: s.bandwidthLimitMiBps,
    integrityCheck: s.integrityCheck,
    retention: Object.values(s.retention).every((rule) => rule === undefined) ? null : s.retention,
    rpoHours: s.rpoHours ?? null,
    reverifyAfterDays: s.reverifyAfterDays ?? null,
    // Absent from state while never declared, so that such state reads as it was written.
    ...(s.copyToTarget ? { copyToTarget: true } : state.copyToTarget !== undefined ? { copyToTarget: false } : {}),
    encryption: s.encryption.enabled ? state.encryption : null,
    // A document without signing shows the key as removed (as encryption), so the next up writes it back.
    ...(state.signing !== undefined ? { signing: s.signing ? state.signing : null } : {}),
    ...(state.signingPublicKey !== undefined ? { signingPublicKey: s.signing ? state.signingPublicKey : null } : {}),
    revision: doc.revision,
    settings: s,
    documentStatus: "ok",
  };
}

/** The inputs that would produce `outputs`, so the next preview diffs the declaration against reality. */
export function inputsOf(outputs: BackupPolicyOutputs): BackupPolicyInputs {
  return {
    zone: outputs.zone,
    target: outputs.target,
    ...(outputs.targetKey !== undefined ? { targetKey: outputs.targetKey } : {}),
    compression: outputs.compression,
    encryption: outputs.encryption ? { passphrase: outputs.encryption.passphrase } : undefined,
    signing: outputs.signing ? { privateKey: outputs.signing.privateKey } : undefined,
    bandwidthLimitMiBps: outputs.bandwidthLimitMiBps,
    integrityCheck: outputs.integrityCheck,
    retention: outputs.retention ?? null,
    rpoHours: outputs.rpoHours ?? null,
    reverifyAfterDays: outputs.reverifyAfterDays ?? null,
    host: outputs.host ?? null,
    escrow: outputs.escrow ?? null,
    requireEscrow: outputs.requireEscrow ?? false,
    copyToTarget: outputs.copyToTarget,
    owner: outputs.owner,
  };
}

/**
 * Decides what `pulumi up` must do. Moving the document (zone or target) replaces it, new one
 * first; otherwise it updates when the declared settings differ from the document as last seen,
 * including a passphrase the document's fingerprint no longer matches.
 */
export function planPolicyChange(olds: BackupPolicyOutputs, news: Record<string, unknown>): pulumi.dynamic.DiffResult {
  const replaces = ["zone", "target"].filter(
    (key) => JSON.stringify(olds[key as "zone"]) !== JSON.stringify(news[key]),
  );
  if (unknownPaths(news).length > 0) return { changes: true, replaces, deleteBeforeReplace: false };
  if (replaces.length > 0) return { changes: true, replaces, deleteBeforeReplace: false };
  const declared = news as unknown as BackupPolicyInputs;
  if (olds.documentStatus !== "ok") return { changes: true, replaces: [], deleteBeforeReplace: false };
  const seen = olds.settings;
  const key = olds.encryption?.fingerprintKey;
  const passphraseKept =
    declared.encryption == null ||
    (seen.encryption.enabled &&
      key !== undefined &&
      fingerprintMatches(declared.encryption.passphrase, key, seen.encryption.passphraseFingerprint));
  const wanted = settingsFor(declared, seen.encryption.enabled ? seen.encryption.passphraseFingerprint : undefined);
  const hostChanged = (olds.host ?? null) !== ((declared.host as string | undefined) ?? null);
  const keyMissing = !olds.manifestKey;
  // A Swift key rotated: state must hold the new one (refresh and the sets' agents sign in with it).
  const targetKeyChanged = (olds.targetKey ?? null) !== ((declared.targetKey as string | undefined) ?? null);
  const requireEscrowChanged =
    (olds.requireEscrow ?? false) !== ((declared.requireEscrow as boolean | undefined) ?? false);
  return {
    changes:
      !passphraseKept ||
      hostChanged ||
      keyMissing ||
      targetKeyChanged ||
      requireEscrowChanged ||
      !sameSettings(wanted, seen),
    replaces: [],
    deleteBeforeReplace: false,
  };
}
