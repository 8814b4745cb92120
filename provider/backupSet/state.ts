import { createHash } from "node:crypto";
import * as path from "node:path";
import type { Verification } from "../agent/backupSet";
import type { CloudItem, ManifestItem } from "../agent/manifest";
import { canonicalJson } from "../common/canonicalJson";
import { currentState } from "../common/check";
import type { SigningPublicKey } from "../common/signingKey";
import type { EscrowLink } from "../escrow/schema";
import type { CloudBackupRef, CloudProject } from "../sources/kind";
export type { CloudBackupRef, CloudProject };
import type { TargetRef } from "../common/targetIdentity";
import { SwiftTargetAccess, localRootOf } from "../targets/swiftTarget";
import type { BackupSetInputs } from "./schema";

/**
 * Bumped when the shape of state changes; readers accept every older one.
 * 2: `targetId`. 3: a history of points (`points`, `locations`, `keyring`), the set keeps its id.
 * 4: points' backups in the cloud (`cloud`, `dependsOn`), a location's cloud. An older Coffer must
 * not prune such points: it would leave their cloud backups behind.
 * 5: a location in a Swift container (`swift`; its `targetPath` is the agents' spool): an older Coffer would
 * take the spool for the target.
 */
export const SET_SCHEMA_VERSION = 5;

/**
 * Where points were taken (a target, zone and hosts) and where their key is escrowed. Points
 * share it by index, which keeps state small: a set of 1,000 points usually has one location.
 */
export interface PointLocation {
  /** The target's folder; for a Swift target, the agents' local spool of its container. */
  targetPath: string;
  /** A Swift target's container and account (its key is the set's `keys.targetKey`); absent: a directory target. */
  swift?: SwiftLocation;
  /** The target's identity; absent in state written before identities. */
  targetId?: string;
  zone: string;
  /** Where the manifest is written and verified from: "local" or an ssh destination. */
  manifestHost: string;
  /** Every machine that may hold part of a point ("local" or ssh destinations). */
  hosts: string[];
  /** The escrow record that holds the passphrase of the points taken here. */
  escrow?: { recordId: string; store: string };
  /** The cloud project that holds the cloud backups of the points taken here. */
  cloud?: CloudProject;
}

export type SwiftLocation = Omit<SwiftTargetAccess, "key">;

/** Where points of `policy` go: the local folder agents work in, and the Swift container when there is one. */
export function targetOfPolicy(policy: BackupSetInputs["policy"]): Pick<PointLocation, "targetPath" | "swift"> {
  const { target } = policy;
  if (target.kind !== "swift") return { targetPath: localRootOf(target) };
  const { kind: _kind, immutable: _immutable, ...swift } = target;
  return { targetPath: localRootOf(target), swift };
}

/** A location's target as agent requests name it; a Swift one with `targetKey`. */
export function targetRefOf(
  location: Pick<PointLocation, "targetPath" | "targetId" | "zone" | "swift">,
  targetKey: string | undefined,
): TargetRef {
  const { targetPath: path, targetId: id, zone, swift } = location;
  return { path, id, zone, ...(swift ? { swift: { ...swift, key: targetKey ?? "" } } : {}) };
}

export type PointStatus = "ok" | "failed" | "missing";

/** One recovery point, as state records it: enough to verify, prune and delete it from state alone. */
export interface PointRecord {
  /** A sortable id, its folder's name (`20261126T180846Z-1a2b`); a set taken before histories has the set's id. */
  id: string;
  takenAt: string;
  /** Index into `locations`. */
  loc: number;
  sizeBytes: number;
  /** SHA-256 of the manifest's items as recorded (see itemsDigest): refresh compares the manifest with it. */
  itemsSha256: string;
  /** The version of the keys it was made with: `keyVersion` (current) or one in `keyring`. */
  key: number;
  /** The version of its location's escrow record that its manifest names. */
  escrowVersion?: number;
  /**
   * The fingerprint of the Ed25519 key its manifest was signed with (its PEM is in `signers`):
   * refresh checks the signature with that key, whatever key the policy has now. Absent: unsigned.
   */
  signedBy?: string;
  status: PointStatus;
  checkedAt: string;
  /** What its last check found, when it did not pass. */
  failures?: string[];
  /** Its sources' backups in the cloud; refresh checks them with one listing per project. */
  cloud?: CloudBackupRef[];
  /** The points whose cloud backups its incrementals build on: retention keeps them while it stays. */
  dependsOn?: string[];
}

/** The keys of an earlier `keyVersion`, kept (secret) while a point made with them remains. */
export interface PastKeys {
  version: number;
  passphrase?: string;
  manifestKey?: string;
}

export interface BackupSetOutputs extends Omit<BackupSetInputs, "escrow"> {
  escrow?: EscrowLink;
  schemaVersion: number;
  setId: string;
  /** The version of `keys`; it grows by one whenever the key a point is made with changes. */
  keyVersion: number;
  keyring: PastKeys[];
  locations: PointLocation[];
  /** Oldest first. */
  points: PointRecord[];
  /**
   * The public keys the points' manifests are signed with (`PointRecord.signedBy`), kept while a
   * point needs one. Absent in state written before signatures, and while no point is signed.
   */
  signers?: SigningPublicKey[];
  /** The set as a whole: "ok" when every point verified, else which points did not, by name. */
  verification: Verification;
  /** True when the policy's `rpoHours` is set and the newest good point is older. */
  overdue?: boolean;
  /** The set's folder on the target of its newest point. */
  setDir: string;
  /** The newest point's manifest, and where it was written ("local" or an ssh destination). */
  manifestPath: string;
  manifestHost: string;
  /** The newest point's items, and `via`, where each was backed up. */
  items: (ManifestItem & { via: string })[];
}

/** State written by schema 2 (one set, one backup), which `upgradeOutputs` reads as one point. */
interface SingleSetState extends Omit<BackupSetInputs, "escrow"> {
  escrow?: EscrowLink & { version: number };
  schemaVersion?: number;
  setId: string;
  setDir: string;
  manifestPath: string;
  manifestHost: string;
  items: (ManifestItem & { via: string })[];
  verification: Verification;
  targetId?: string;
}

type StoredState = (BackupSetOutputs | SingleSetState) & { __provider?: string };

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * What refresh compares between the manifest and state: each item's file, size and hashes, and
 * what the cloud holds of each cloud item (its backup's id). Points without cloud items keep the
 * digest they had before cloud items existed.
 */
export function itemsDigest(
  items: readonly Pick<ManifestItem, "name" | "file" | "sizeBytes" | "fileSha256" | "streamSha256">[],
  cloudItems: readonly Pick<CloudItem, "name" | "source">[] = [],
) {
  const compared = [...items].sort(byName).map(({ name, file, sizeBytes, fileSha256, streamSha256 }) => ({
    name,
    file,
    sizeBytes,
    fileSha256,
    streamSha256,
  }));
  const cloud = [...cloudItems].sort(byName).map(({ name, source }) => ({ name, source }));
  return createHash("sha256")
    .update(canonicalJson(cloud.length > 0 ? { items: compared, cloud } : compared))
    .digest("hex");
}

/** A point's folder: `<target>/sets/<zone>/<set>/<point>`, or the set's own folder for a set taken before histories. */
export function pointDir(setId: string, location: PointLocation, pointId: string): string {
  const setDir = path.join(location.targetPath, "sets", location.zone, setId);
  return pointId === setId ? setDir : path.join(setDir, pointId);
}

const isSingleSet = (state: StoredState): state is SingleSetState & { __provider?: string } =>
  (state.schemaVersion ?? 1) < 3;

/** State as this code reads it: every earlier schema, a single set becoming a history of one point. */
export function upgradeOutputs(stored: StoredState): BackupSetOutputs {
  const state = currentState("EncryptedBackupSet", SET_SCHEMA_VERSION, stored) as unknown as StoredState;
  if (!isSingleSet(stored)) return state as BackupSetOutputs;
  const { manifestHost, items, targetId, escrow, ...rest } = state as SingleSetState;
  const finished = items.map((i) => i.finishedAt).sort();
  const point: PointRecord = {
    id: stored.setId,
    takenAt: finished[finished.length - 1] ?? stored.verification.checkedAt,
    loc: 0,
    sizeBytes: items.reduce((sum, i) => sum + i.sizeBytes, 0),
    itemsSha256: itemsDigest(items),
    key: 1,
    ...(escrow ? { escrowVersion: escrow.version } : {}),
    status: stored.verification.status,
    checkedAt: stored.verification.checkedAt,
    ...(stored.verification.failures.length > 0 ? { failures: stored.verification.failures } : {}),
  };
  const location: PointLocation = {
    // Schema 2 knew directory targets only.
    targetPath: (stored.policy.target as { path: string }).path,
    ...(targetId ? { targetId } : {}),
    zone: stored.policy.zone,
    manifestHost,
    hosts: [...new Set([...items.map((i) => i.via), manifestHost])],
    ...(escrow ? { escrow: { recordId: escrow.recordId, store: escrow.store } } : {}),
  };
  const link = escrow && {
    recordId: escrow.recordId,
    store: escrow.store,
    escrowsPassphrase: escrow.escrowsPassphrase,
  };
  return {
    ...rest,
    ...(link ? { escrow: link } : {}),
    manifestHost,
    items,
    schemaVersion: SET_SCHEMA_VERSION,
    keyVersion: 1,
    keyring: [],
    locations: [location],
    points: [point],
  };
}

/**
 * The name of a point's escrow reference (`refs/<name>.json`): a set taken before histories keeps
 * the one it wrote, its set id.
 */
export const referenceName = (setId: string, pointId: string) => (pointId === setId ? setId : `${setId}.${pointId}`);

/** A new point's id: its UTC time to the second, sortable, and 4 random hex digits. */
export function newPointId(now: Date, random: string): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `${stamp}-${random}`;
}

/**
 * The HMAC keys of `version`: the current ones, or those kept for older points. Never the signing
 * key: these go to agents, and it stays in Pulumi's process.
 */
export function keysOfVersion(
  state: Pick<BackupSetOutputs, "keyVersion" | "keys" | "keyring">,
  version: number,
): { passphrase?: string; manifestKey?: string } {
  const keys = version === state.keyVersion ? state.keys : state.keyring.find((k) => k.version === version);
  return { passphrase: keys?.passphrase, manifestKey: keys?.manifestKey };
}

/** The public key a point's manifest is signed with, from state; undefined for an unsigned point. */
export function signerOf(
  state: Pick<BackupSetOutputs, "signers">,
  point: Pick<PointRecord, "signedBy">,
): SigningPublicKey | undefined {
  return point.signedBy === undefined ? undefined : state.signers?.find((s) => s.fingerprint === point.signedBy);
}

/** Every secret state holds, for redaction. */
export const stateSecrets = (state: BackupSetOutputs): string[] =>
  [state.keys, ...state.keyring]
    .flatMap((k) => [
      k.passphrase,
      k.manifestKey,
      (k as { signingKey?: string }).signingKey,
      (k as { targetKey?: string }).targetKey,
    ])
    .filter((s): s is string => !!s);
