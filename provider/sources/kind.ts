import * as path from "node:path";
import { z } from "zod";
import type { IntegrityCheck } from "../agent/backupSet";
import type { ChainRequest } from "../agent/chainLink";
import type { StoredFormat } from "../agent/image";
import type { ManifestItem } from "../agent/manifest";
import type { SecretFd } from "../agent/tempFiles";
import type { RecipientKey } from "../escrow/envelope";
import type { Cloud } from "../openstack";
import type { CloudDeps } from "../openstack/deps";

/** A string field that must be an absolute path, with the message users have always had. */
export const absolutePath = (field: string) =>
  z
    .string({ error: `${field} must be an absolute path` })
    .refine((p) => path.isAbsolute(p), { message: `${field} must be an absolute path (start with /)` });

/** The field of every kind that can build on the set's earlier backups (one schema: kinds may share it). */
export const incrementalField = z
  .boolean({ error: "incremental must be true or false: build on this source's backup in the set's previous point" })
  .optional();

const FULL_EVERY_MESSAGE = "fullEvery must be a whole number of at least 2: a chain's length, its full backup included";

/** With `incremental`, every `fullEvery`th backup of a chain is a full one (shared by the kinds that chain). */
export const fullEveryField = z
  .number({ error: FULL_EVERY_MESSAGE })
  .int({ message: FULL_EVERY_MESSAGE })
  .min(2, FULL_EVERY_MESSAGE)
  .optional();

/** The rule of the kinds whose backups chain (qemuCopy.ts): fullEvery only with incremental. */
export const chainRules: SourceRules = (source, ctx) => {
  if (source.fullEvery !== undefined && source.incremental !== true) {
    const message = "fullEvery bounds a chain of incremental backups: add incremental: true, or remove fullEvery";
    ctx.addIssue({ code: "custom", path: ["fullEvery"], message });
  }
};

/**
 * A kind's `input`: its fields and rules, strictly. Its rules make the fields its type requires
 * present, which zod's types can't follow: hence the one cast.
 */
export function kindInput<Input>(fields: z.ZodRawShape, rules: SourceRules): z.ZodType<Input> {
  return z.strictObject(fields).superRefine(rules) as unknown as z.ZodType<Input>;
}

/** A manifest item whose source is of one kind. */
export type StoredItem<Item> = Omit<ManifestItem, "source"> & { source: Item };

/** The rules a kind adds once a user's source object chose it (zod's superRefine context). */
export type SourceRules = (source: Record<string, unknown>, ctx: z.RefinementCtx) => void;

export interface BackupContext {
  /** The file to write the backup image into; renamed into place by the caller once verified. */
  partial: string;
  format: StoredFormat;
  /** The passphrase on an fd, when the backup is encrypted (its value for QMP, which reads no fd). */
  key?: SecretFd;
  bandwidthLimitMiBps: number;
  /** "source <name>": how errors name the source. */
  subject: string;
  signal?: AbortSignal;
  onProgress(percent: number): void;
  /** The source is backed up incrementally: a link on `chain.base` where the kind can, else a full backup. */
  chain?: ChainRequest;
}

export interface BackedUp<Item> {
  /** What the manifest records of the source. */
  source: Item;
  virtualSize: number;
  /** The SHA-256 of the source's data as the guest sees it, for a `full` check; absent where it moves on. */
  sourceSha256?: () => Promise<string>;
  /**
   * For a `chain` request: the base the backup is a link on, or why it is a full one. Absent: the kind
   * keeps no chain (every backup full, nothing started on the disk).
   */
  chain?: { bitmap?: string; base?: NonNullable<ChainRequest["base"]>; fullBecause?: string };
}

export interface VerifyContext {
  setDir: string;
  /** The passphrase on an fd (an empty one for unencrypted sets). */
  key: SecretFd;
  signal?: AbortSignal;
  /** How far a long read of an item has got. */
  progress?: (item: string, percent: number) => void;
}

/** One item's problem: `missing` when its backup is gone, `failed` when it is there but wrong. */
export interface ItemProblem {
  item: string;
  status: "missing" | "failed";
  message: string;
}

export interface RemoveContext {
  setDir: string;
}

export interface RestoreTarget {
  /** A file that does not exist yet; the caller gives it its final name. */
  file: string;
  format: "raw" | "qcow2";
}

export interface RestoreContext {
  setDir: string;
  key: SecretFd;
  /** Runs one long step of the restore, showing its progress (the CLI draws it; absent: no progress). */
  step?: <T>(
    label: string,
    totalBytes: number,
    work: (onProgress?: (percent: number) => void) => Promise<T>,
  ) => Promise<T>;
}

/** A cloud project, as Keystone names it: enough to find its backups again with the same credentials. */
export interface CloudProject {
  authUrl: string;
  region?: string;
  projectId: string;
}

/** A backup the cloud holds for one source of a point (`parent`: the backup an incremental builds on). */
export interface CloudBackupRef {
  source: string;
  kind: "cinder-backup";
  id: string;
  parent?: string;
  /** The Barbican secret of the backup's key (an encrypted volume's), escrowed when it was taken. */
  key?: string;
}

/** The ids of `points` whose backups (`refsOf`) the backups `refs` build on: what the incrementals need. */
export function pointsBuiltOn<P extends { id: string }>(
  points: readonly P[],
  refsOf: (point: P) => readonly CloudBackupRef[],
  refs: readonly CloudBackupRef[],
): string[] {
  const parents = new Set(refs.flatMap((r) => (r.parent ? [r.parent] : [])));
  return points.filter((p) => refsOf(p).some((r) => parents.has(r.id))).map((p) => p.id);
}

/**
 * The bases of `point` that are links of its qcow2 chains, which retention may merge into it: those of
 * its `dependsOn` that its Cinder backups don't build on and that hold no Cinder backups themselves
 * (Cinder's incrementals are Cinder's chains: their bases are kept). `sameFolder`: whether a base is
 * in the point's set folder (a merge works in one).
 */
export function chainLinksOf<P extends { id: string; dependsOn?: string | readonly string[] }>(
  point: P,
  points: readonly P[],
  refsOf: (point: P) => readonly CloudBackupRef[],
  sameFolder: (base: P) => boolean = () => true,
): string[] {
  const cinderBases = new Set(pointsBuiltOn(points, refsOf, refsOf(point)));
  const bases =
    point.dependsOn === undefined ? [] : typeof point.dependsOn === "string" ? [point.dependsOn] : point.dependsOn;
  return bases.filter((id) => {
    const base = points.find((p) => p.id === id);
    return base !== undefined && !cinderBases.has(id) && refsOf(base).length === 0 && sameFolder(base);
  });
}

/** What a kind that works through cloud APIs, from Pulumi's process, works with. */
export interface CloudContext {
  cloud: Cloud;
  project: CloudProject;
  /** The clock and sleep that status waits use. */
  waits: Pick<CloudDeps, "now" | "sleep">;
  /** "source <name>": how errors name the source. */
  subject: string;
  signal?: AbortSignal;
  progress(message: string): void;
}

/** Where an encrypted volume's key is escrowed: the set's escrow store and recipients. */
export interface KeyEscrow {
  store: string;
  recipients: { name: string; key: RecipientKey }[];
  threshold: number;
}

/** What the target holds of a cloud source's copy: an item's stored image, as the agent made it. */
export type StoredCopy = Omit<ManifestItem, "source">;

export interface CloudTakeContext extends CloudContext {
  /** Names what the backup is part of, for people who find it in the cloud. */
  label: { setId: string; pointId: string; source: string };
  /** This source's backups in the set's earlier points, oldest first: what an incremental may build on. */
  earlier: readonly CloudBackupRef[];
  keyEscrow?: KeyEscrow;
  /** A folder on this machine for data on its way into the target (the target's own staging folder). */
  stagingDir: string;
  /** Overwrite staged files with zeros before removing them (removeStaged). */
  scrubStaging?: boolean;
  /**
   * Stores a disk file (raw unless `copy.format` says) in the target as a copy of the source's data
   * (compressed, encrypted, verified), as the item `copy.name` (default: the source's name).
   */
  storeCopy(file: string, copy?: { name?: string; format?: "raw" | "qcow2" }): Promise<StoredCopy>;
}

export interface CloudTaken<Item> {
  source: Item;
  refs: CloudBackupRef[];
  /** The copy of the source's data in the target, when the kind made one. */
  stored?: StoredCopy;
  /**
   * Copies of a source with several disks (a server's), in place of `stored`: each its own manifest
   * item, named as it was stored, with its own `source` saying which disk it holds.
   */
  copies?: { source: Item; stored: StoredCopy }[];
  /** Removes what `take` made, when the point is not kept (another source failed). */
  discard(): Promise<void>;
}

/** What a check of cloud backups found wrong with one. */
export interface CloudProblem {
  id: string;
  status: "missing" | "failed";
  message: string;
}

/** How a kind takes a backup through cloud APIs (the item is then a manifest's cloud item). */
export interface CloudKind<Input, Item> {
  take(input: Input, ctx: CloudTakeContext): Promise<CloudTaken<Item>>;
}

/**
 * One kind of source: how a user's source object chooses it, what it reads, what the signed
 * manifest records of it, and how its backups are taken, verified, removed and restored.
 */
export interface SourceKind<Input, Item extends { kind: string }, Fields extends z.ZodRawShape = z.ZodRawShape> {
  /** The manifest's discriminator (`item.source.kind`); manifests already written keep theirs. */
  readonly kind: Item["kind"];
  /** For messages: what the user backs up with it ("a running VM"). */
  readonly label: string;
  /**
   * Any of these fields in a user's source object chooses this kind (users write no kind field).
   * The first one is where a source that chooses no kind, or two, is reported.
   */
  readonly selectors: readonly [string, ...string[]];
  /** Its own fields of the user's source object, each optional: `rules` says which it needs. */
  readonly fields: Fields;
  readonly rules: SourceRules;
  /** The source as the agent receives it: `fields` and `rules`, strictly. */
  readonly input: z.ZodType<Input>;
  readonly item: z.ZodType<Item>;
  /** Where its work runs: qemu on a KVM host, or a cloud API from Pulumi's process (`cloud`). */
  readonly runsOn: "agent" | "provider";
  readonly cloud?: CloudKind<Input, Item>;
  backup(input: Input, ctx: BackupContext): Promise<BackedUp<Item>>;
  verify(items: StoredItem<Item>[], level: IntegrityCheck, ctx: VerifyContext): Promise<ItemProblem[]>;
  remove(items: StoredItem<Item>[], ctx: RemoveContext): Promise<void>;
  restore?(item: StoredItem<Item>, to: RestoreTarget, ctx: RestoreContext): Promise<void>;
  /** A chaining kind: the disk's format and bitmaps as they are, read without changing anything (preview). */
  chainStatus?(input: Input, subject: string): Promise<ChainStatus>;
}

/** What preview reads of an incremental source's disk: whether its next backup can be a link, and how big. */
export interface ChainStatus {
  driver: string;
  virtualSize: number;
  /** Its dirty bitmaps; `count` (bytes marked) where the disk is open in a QEMU that reports it. */
  bitmaps: { name: string; recording: boolean; busy: boolean; inconsistent?: boolean; count?: number }[];
}
