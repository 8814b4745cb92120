import {
  CloudItem,
  FinalContext,
  MANIFEST_KIND,
  Manifest,
  ManifestItem,
  manifestSchemaVersionFor,
  sealedKeyContext,
} from "../agent/manifest";
import type { ChainRequest } from "../agent/chainLink";
import { WrappedPointKey, newPointKey } from "../agent/pointKey";
import type { ChainFrom } from "./chain";
import { CofferError } from "../common/errors";
import { RecipientKey, Sealed, parseRecipientKey, seal } from "../escrow/envelope";
import { copiesToTarget } from "../sources/cinderVolume";
import { kindsChosenBy } from "../sources/registry";
import type { CloudBackupRef, KeyEscrow } from "../sources/kind";
import type { TargetRef } from "../common/targetIdentity";
import { directoryStore } from "../targets/directory";
import { targetLayout } from "../targets/layout";
import type { EscrowLink } from "../escrow/schema";
import type { BackupSetInputs, SourceInput } from "./schema";
import { targetOfPolicy, targetRefOf } from "./state";
import type { SwiftLocation } from "./state";

/** What the agent reads of a source: the fields of its kind (provider/sources/), without name and host. */
export function agentSource(source: SourceInput) {
  const { name: _name, host: _host, ...fields } = source;
  return fields;
}

/** A source's fields as a point takes them: a Cinder source without its own copyToTarget takes the policy's. */
export function effectiveSource(source: SourceInput, policy: BackupSetInputs["policy"]) {
  const fields = agentSource(source);
  return copiesToTarget(source, policy.copyToTarget) ? { ...fields, copyToTarget: true } : fields;
}

/** One source of a point: what to back up, and where its agent runs (undefined: this machine). */
export interface PlannedItem {
  name: string;
  via?: string;
  source: ReturnType<typeof effectiveSource>;
  /** The source is backed up as a chain of links (a qcow2 disk's, through QEMU: chainsThroughQemu). */
  incremental?: { fullEvery?: number };
  /** Its chain request, once the base point is read (continueChains). */
  chain?: ChainRequest;
}

/**
 * Everything needed to take one point, decided before any work: where it goes, what each agent is
 * asked, and what the manifest will say. Holds the keys: it lives in memory only.
 */
export interface PointPlan {
  /** The set the point belongs to; its folder holds the point's. */
  setId: string;
  /** The point's id: its folder's name. */
  pointId: string;
  zone: string;
  /** The target's folder; for a Swift target, the agents' local spool of the container. */
  targetPath: string;
  /** A Swift target's container and account; its key is `keys.targetKey`. */
  swift?: SwiftLocation;
  /** `<target>/sets/<zone>`: the folder the crash sweep looks in. */
  zoneDir: string;
  /** The point's own folder, where its backups and manifest go. */
  pointDir: string;
  /** Where the manifest is written and later verified from (undefined: this machine). */
  manifestWhere?: string;
  items: PlannedItem[];
  concurrency: number;
  trigger: string;
  policy: Manifest["policy"];
  keySource: Manifest["keySource"];
  /**
   * The key of an encrypted point's backups (its own random key); the key of its manifest's HMAC; the PEM
   * of its Ed25519 signing key.
   */
  keys: { passphrase?: string; manifestSecret: string; signingKey?: string; targetKey?: string };
  /** The policy's passphrase, which wraps the point's own key into its manifest (wrapPointKey). */
  wrapWith?: string;
  /** Every secret the inputs hold, for redaction. */
  secrets: string[];
  escrow?: EscrowLink;
  /** The cloud backups of the set's earlier points, oldest first: what incrementals may build on. */
  earlier: CloudBackupRef[];
  /** Where encrypted volumes' keys are escrowed. */
  keyEscrow?: KeyEscrow;
  /** A point sealed for recipients (sealedForRecipients): its key, sealed for them, goes into the manifest. */
  sealedKey?: Sealed;
  /** A final-state point's context (a FinalStateBackup's): recorded in its manifest. */
  final?: FinalContext;
  /** Overwrite data staged on this machine (cloud sources' copies) with zeros before removing it. */
  scrubStaging?: boolean;
  /** The point incremental sources build on, or why none (chainFrom); absent: a full point. */
  chainFrom?: ChainFrom;
  /** A point continuing its chain: the base point's wrapped key, kept as it is (no new KDF), and whose it is. */
  wrappedKey?: WrappedPointKey;
  keyOf?: string;
}

const sourceHost = (inputs: BackupSetInputs, source: SourceInput) => source.host ?? inputs.host ?? inputs.policy.host;

/**
 * The plan of point `pointId` of `inputs`, in the folder of `setId` under the policy's target and
 * zone; `earlier`: the cloud backups of the set's points so far, oldest first.
 */
export function planPoint(
  inputs: BackupSetInputs,
  ids: { setId: string; pointId: string },
  earlier: CloudBackupRef[] = [],
  chainFrom?: ChainFrom,
): PointPlan {
  const { policy, keys } = inputs;
  // An encrypted point's own random key: the passphrase only wraps it (one KDF per point, not per open).
  const pointKey = policy.encrypted ? newPointKey() : undefined;
  // Paths, not keys: the agent's qemu writes the point in place on the directory target (or in a Swift one's spool).
  const { targetPath, swift } = targetOfPolicy(policy);
  const targetStore = directoryStore(targetPath);
  const zoneDir = targetStore.localPath(targetLayout.zoneSets(policy.zone));
  return {
    setId: ids.setId,
    pointId: ids.pointId,
    zone: policy.zone,
    targetPath,
    ...(swift ? { swift } : {}),
    zoneDir,
    pointDir: targetStore.localPath(targetLayout.pointFolder(policy.zone, ids.setId, ids.pointId)),
    manifestWhere: inputs.host ?? policy.host,
    items: inputs.sources.map((source) => ({
      name: source.name,
      via: sourceHost(inputs, source),
      source: effectiveSource(source, policy),
      ...incrementalOf(source),
    })),
    concurrency: inputs.concurrency,
    trigger: inputs.trigger,
    policy: {
      compression: policy.compression,
      encrypted: policy.encrypted,
      bandwidthLimitMiBps: policy.bandwidthLimitMiBps,
      integrityCheck: policy.integrityCheck,
    },
    keySource: policy.encrypted ? "passphrase" : "manifest-key",
    keys: {
      passphrase: pointKey,
      manifestSecret: pointKey ?? keys.manifestKey!,
      ...(keys.signingKey ? { signingKey: keys.signingKey } : {}),
      ...(keys.targetKey ? { targetKey: keys.targetKey } : {}),
    },
    ...(pointKey ? { wrapWith: keys.passphrase! } : {}),
    secrets: [keys.passphrase, keys.manifestKey, keys.signingKey, keys.targetKey, pointKey].filter(
      (s): s is string => !!s,
    ),
    escrow: inputs.escrow,
    earlier,
    ...(inputs.keyEscrow ? { keyEscrow: keyEscrowOf(inputs.keyEscrow) } : {}),
    ...(chainFrom ? { chainFrom } : {}),
  };
}

/** Whether `source` is backed up as a chain of QEMU links (a qcow2 disk's); Cinder's incrementals are Cinder's. */
export function chainsThroughQemu(source: SourceInput): boolean {
  const { incremental } = source as { incremental?: unknown };
  return incremental === true && kindsChosenBy(agentSource(source))[0]?.chainStatus !== undefined;
}

/** A source's incremental setting, for its planned item. */
function incrementalOf(source: SourceInput): Pick<PlannedItem, "incremental"> {
  const { fullEvery } = source as { fullEvery?: number };
  return chainsThroughQemu(source) ? { incremental: fullEvery === undefined ? {} : { fullEvery } } : {};
}

/** Who may open a point sealed for recipients: any `threshold` of `recipients`. */
export interface SealFor {
  recipients: { name: string; key: RecipientKey }[];
  threshold: number;
}

/**
 * `plan` as a point sealed for recipients: a fresh random key (32 bytes, hex) encrypts its backups
 * and keys its manifest's HMAC, and only its sealed form (for `sealFor`, bound to the point) is
 * kept, in the manifest; the policy's passphrase or manifest key opens nothing of it. Made when the
 * point is taken: the key is in no state and in `secrets`, so never in a log.
 */
export async function sealedForRecipients(plan: PointPlan, sealFor: SealFor): Promise<PointPlan> {
  const { recipients, threshold } = sealFor;
  const { escrow: _passphraseEscrow, wrapWith: _passphrase, chainFrom: _chain, ...rest } = plan;
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > recipients.length) {
    const message = `threshold must be from 1 to the number of recipients (${recipients.length}), not ${threshold}`;
    throw new CofferError("INVALID_INPUT", message, { field: "threshold" });
  }
  const pointKey = newPointKey();
  const sealedKey = await seal(pointKey, recipients, threshold, sealedKeyContext(plan));
  // Without the policy's passphrase escrow: that record does not open this point.
  return {
    ...rest,
    // Its own key opens it: it starts or continues no chain (its disks are copied whole).
    items: plan.items.map(({ incremental: _incremental, chain: _chainRequest, ...item }) => item),
    policy: { ...plan.policy, encrypted: true },
    keySource: "recipients",
    keys: {
      passphrase: pointKey,
      manifestSecret: pointKey,
      ...(plan.keys.signingKey ? { signingKey: plan.keys.signingKey } : {}),
      ...(plan.keys.targetKey ? { targetKey: plan.keys.targetKey } : {}),
    },
    secrets: [...plan.secrets, pointKey],
    sealedKey,
  };
}

/** The recipients' keys, parsed (check refused any that does not parse). */
function keyEscrowOf(escrow: NonNullable<BackupSetInputs["keyEscrow"]>): KeyEscrow {
  return {
    store: escrow.store,
    recipients: recipientKeys(escrow.recipients, "keyEscrow"),
    threshold: escrow.threshold,
  };
}

/** `recipients`' public keys, parsed (check refused any that does not parse); `field` names them in errors. */
export function recipientKeys(recipients: { name: string; publicKey: string }[], field: string): SealFor["recipients"] {
  return recipients.map(({ name, publicKey }) => {
    const parsed = parseRecipientKey(publicKey);
    if (!parsed.ok) throw new CofferError("INVALID_INPUT", `${field}: ${name}'s publicKey ${parsed.reason}`);
    return { name, key: parsed.key };
  });
}

/** The target as agent requests name it: its path and zone, and its identity when known. */
export const planTarget = (plan: PointPlan, targetId?: string): TargetRef =>
  targetRefOf({ targetPath: plan.targetPath, targetId, zone: plan.zone, swift: plan.swift }, plan.keys.targetKey);

/** Every machine that may hold part of the point: the sources' agents and the manifest's. */
export const planHosts = (plan: PointPlan): string[] => [
  ...new Set([...plan.items.map((i) => i.via ?? "local"), plan.manifestWhere ?? "local"]),
];

/** What the point's manifest says, once its items are backed up. */
export function pointManifest(
  plan: PointPlan,
  taken: {
    items: ManifestItem[];
    cloudItems?: CloudItem[];
    qemuVersion: string;
    createdAt: string;
    escrowVersion?: number;
    /** The point's key wrapped by plan.wrapWith (or its chain's, plan.wrappedKey). */
    wrappedKey?: WrappedPointKey;
  },
): Manifest {
  const { escrow, keyOf } = plan;
  const keying = { keySource: plan.keySource, wrappedKey: taken.wrappedKey, ...(keyOf ? { keyOf } : {}) };
  return {
    kind: MANIFEST_KIND,
    schemaVersion: manifestSchemaVersionFor({ ...keying, items: taken.items }),
    setId: plan.setId,
    pointId: plan.pointId,
    name: plan.trigger,
    trigger: plan.trigger,
    zone: plan.zone,
    policy: plan.policy,
    keySource: plan.keySource,
    ...(plan.sealedKey ? { sealedKey: plan.sealedKey } : {}),
    ...(taken.wrappedKey ? { wrappedKey: taken.wrappedKey } : {}),
    ...(keyOf ? { keyOf } : {}),
    ...(escrow && taken.escrowVersion !== undefined
      ? { escrow: { recordId: escrow.recordId, store: escrow.store, version: taken.escrowVersion } }
      : {}),
    qemuVersion: taken.qemuVersion,
    createdAt: taken.createdAt,
    items: taken.items,
    ...(taken.cloudItems && taken.cloudItems.length > 0 ? { cloudItems: taken.cloudItems } : {}),
    ...(plan.final ? { final: plan.final } : {}),
  };
}
