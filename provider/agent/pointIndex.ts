import { z } from "zod";
import { CofferError } from "../common/errors";
import { CloudBackupRef, CloudProject, pointsBuiltOn } from "../sources/kind";
import { directoryStore } from "../targets/directory";
import { INDEX_FILE, MANIFEST_FILE, targetLayout } from "../targets/layout";
import { TargetStore, listAll } from "../targets/store";
import { Manifest, readManifest } from "./manifest";

/**
 * A set's index, `<target>/sets/<zone>/<set>/index.json`: its points, holds and retention as the
 * set last declared them, so that `coffer list` and `coffer prune` work from the target alone,
 * without Pulumi and without keys. Written atomically after every change; it is a cache of what
 * the manifests say plus what only Pulumi knows (statuses, holds, rules), and is rebuilt from the
 * manifests when it is missing or unreadable.
 *
 * 2: points' cloud backups (`cloud`). A Coffer that reads only 1 finds a version 2 index
 * unreadable and rebuilds it from the manifests: every point unchecked, so its `coffer prune`
 * prunes none by retention (it would delete the folders and leave the Cinder backups behind).
 * An index is written with the lowest version that holds what it says (see indexVersionOf), so
 * sets without cloud backups stay readable by that older Coffer.
 *
 * 3: points sealed for recipients (`keySource` "recipients"), final-state points (`final`). A Coffer
 * that reads up to 2 can't read their manifests either: it lists no such point, so prunes none.
 *
 * 4: a point `coffer prune` merged into another (`pruned[].mergedInto`, `rewritten`): the records
 * the points whose manifests it rewrote have now, which refresh takes into state. A Coffer that reads
 * up to 3 rebuilds the index instead, and its refresh fails those points (their items changed).
 */
export const INDEX_KIND = "coffer.SetIndex";
export const INDEX_SCHEMA_VERSION = 4;
const SEALED_INDEX_SCHEMA_VERSION = 3;
const CLOUD_INDEX_SCHEMA_VERSION = 2;

const cloudProject = z.object({ authUrl: z.string(), region: z.string().optional(), projectId: z.string() });
const cloudBackupRef = z.object({
  source: z.string(),
  kind: z.literal("cinder-backup"),
  id: z.string(),
  parent: z.string().optional(),
  key: z.string().optional(),
});
/** A point's backups in the cloud, and the project that holds them. */
export interface IndexedCloud {
  project: CloudProject;
  backups: CloudBackupRef[];
}

const indexedPoint = z.object({
  id: z.string(),
  takenAt: z.string(),
  sizeBytes: z.number().int().min(0),
  /** "unchecked": found in a manifest by a rebuild; nobody has verified it since. */
  status: z.enum(["ok", "failed", "missing", "unchecked"]),
  checkedAt: z.string().optional(),
  failures: z.array(z.string()).optional(),
  /** "recipients": a point sealed for recipients (manifest schema 5), opened with a recipient's private key. */
  keySource: z.enum(["passphrase", "manifest-key", "recipients"]),
  escrow: z.object({ recordId: z.string(), store: z.string(), version: z.number().int().min(1) }).optional(),
  /** The points whose backups this one's incrementals build on. */
  dependsOn: z.union([z.string(), z.array(z.string())]).optional(),
  /** Since 2: its sources' backups in the cloud, which deleting the point must delete first. */
  cloud: z.object({ project: cloudProject, backups: z.array(cloudBackupRef) }).optional(),
  /** Since 3: a final-state point (its manifest's `final`): why it was taken, and for what. */
  final: z.object({ reason: z.string(), operation: z.enum(["delete", "replace"]), urn: z.string() }).optional(),
});
export type IndexedPoint = z.output<typeof indexedPoint>;

/** A point whose manifest a merge rewrote: what refresh takes into state (refresh compares items with it). */
const rewrittenPoint = z.object({
  id: z.string(),
  itemsSha256: z.string(),
  sizeBytes: z.number().int().min(0),
  dependsOn: z.array(z.string()).optional(),
  /** The public key its manifest is now signed with (absent: unsigned). */
  signer: z.object({ pem: z.string(), fingerprint: z.string() }).optional(),
});
export type RewrittenPoint = z.output<typeof rewrittenPoint>;

export const setIndexSchema = z.object({
  kind: z.literal(INDEX_KIND),
  schemaVersion: z.number().int().min(1).max(INDEX_SCHEMA_VERSION),
  setId: z.string(),
  zone: z.string(),
  updatedAt: z.string(),
  /** The policy's retention rules (see provider/history/retention.ts); null: keep every point. */
  retention: z.record(z.string(), z.union([z.number(), z.string()])).nullable(),
  holds: z.array(z.object({ point: z.string(), reason: z.string(), until: z.string().optional() })),
  points: z.array(indexedPoint),
  /** Points deleted without Pulumi (`coffer prune`, by a person): refresh drops them from state. */
  pruned: z
    .array(
      z.object({
        id: z.string(),
        prunedAt: z.string(),
        by: z.string(),
        /** Since 2: the Cinder backups deleted with it. */
        cloudBackups: z.array(z.string()).optional(),
        /** Since 4: merged into this point (its kept descendant), whose backups took in its data. */
        mergedInto: z.string().optional(),
        /** Since 4: the points whose manifests the merge rewrote, as their manifests say now. */
        rewritten: z.array(rewrittenPoint).optional(),
      }),
    )
    .default([]),
});
export type SetIndex = z.output<typeof setIndexSchema>;

/**
 * The lowest version that holds what the index says: 4 with points merged by `coffer prune`, 3 with
 * points sealed for recipients or final ones, 2 with cloud backups (which an older Coffer must not
 * prune without), else 1.
 */
export function indexVersionOf(index: Pick<SetIndex, "points" | "pruned">): number {
  if (index.pruned.some((p) => p.mergedInto !== undefined)) return INDEX_SCHEMA_VERSION;
  if (index.points.some((p) => p.keySource === "recipients" || p.final)) return SEALED_INDEX_SCHEMA_VERSION;
  if (index.points.some((p) => p.cloud) || index.pruned.some((p) => p.cloudBackups)) return CLOUD_INDEX_SCHEMA_VERSION;
  return 1;
}

/** The index's record of a final-state point, from its manifest's context. */
export const finalOf = (final: NonNullable<Manifest["final"]>): NonNullable<IndexedPoint["final"]> => ({
  reason: final.reason,
  operation: final.operation,
  urn: final.takenFor.urn,
});

/** The hold a final-state point's manifest sets: it holds until its `holdUntil`. */
export const finalHoldOf = (pointId: string, final: NonNullable<Manifest["final"]>): SetIndex["holds"][number] => ({
  point: pointId,
  reason: `final state: ${final.reason}`,
  until: final.holdUntil,
});

/** A set on a target: the store, and the set's zone and id (the layout names its keys). */
export interface SetOnStore {
  store: TargetStore;
  zone: string;
  setId: string;
}

/** The set whose folder is `setDir` on the directory target `targetPath`. */
export function setAt(targetPath: string, setDir: string): SetOnStore {
  const { setId, zone } = targetLayout.setFolderOf(setDir);
  if (zone === undefined)
    throw new CofferError("INVALID_INPUT", `${setDir} is not a set's folder (<target>/sets/<zone>/<set>)`);
  return { store: directoryStore(targetPath), zone, setId };
}

const indexKey = (set: SetOnStore) => targetLayout.setIndex(set.zone, set.setId);

/** The set's index, or why it can't be read (`undefined` both: there is none). */
export async function readSetIndex(set: SetOnStore): Promise<{ index?: SetIndex; problem?: string }> {
  const text = await set.store.readText(indexKey(set));
  if (text === undefined) return {};
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return { problem: `${INDEX_FILE} is not valid JSON (${(error as Error).message})` };
  }
  const parsed = setIndexSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { problem: `${INDEX_FILE} ${issue.path.join(".")}: ${issue.message}` };
  }
  return { index: parsed.data };
}

/**
 * Writes the index atomically, with the version its content needs; the record of points pruned
 * without Pulumi is kept (merged with `index`'s) until the index no longer lists them, so the next
 * refresh can tell pruned from lost.
 */
export async function writeSetIndex(set: SetOnStore, index: SetIndex): Promise<void> {
  const { index: previous } = await readSetIndex(set);
  const pruned = new Map([...(previous?.pruned ?? []), ...index.pruned].map((p) => [p.id, p]));
  const content = { ...index, pruned: [...pruned.values()] };
  const merged = { ...content, schemaVersion: indexVersionOf(content) };
  await set.store.writeTextAtomic(indexKey(set), JSON.stringify(merged, null, 2) + "\n");
}

/**
 * What a manifest records of its point's Cinder backups (cloud items, and copies in `items`), as
 * the refs Pulumi's state has; undefined when it has none.
 */
export function cloudBackupsIn(manifest: Manifest): IndexedCloud | undefined {
  let project: CloudProject | undefined;
  const backups: CloudBackupRef[] = [];
  for (const { name, source } of [...(manifest.cloudItems ?? []), ...manifest.items]) {
    if (source.kind !== "cinderVolume" || backups.some((b) => b.id === source.backupId)) continue;
    project ??= source.cloud;
    const key = source.escrowedKeys && source.backupKeyId;
    backups.push({
      source: name,
      kind: "cinder-backup",
      id: source.backupId,
      ...(source.parentBackupId ? { parent: source.parentBackupId } : {}),
      ...(key ? { key } : {}),
    });
  }
  return project ? { project, backups } : undefined;
}

/**
 * The set's points as its manifests say, read without any key (so unchecked): each point folder's
 * manifest, and the set folder's own for a set taken before histories. Rules and a set's holds are
 * not in manifests: a rebuilt index has none, except the hold a final-state point's manifest sets.
 */
export async function rebuildSetIndex(set: SetOnStore): Promise<SetIndex> {
  const folder = targetLayout.setFolder(set.zone, set.setId);
  const manifests = (await listAll(set.store, folder).catch(() => []))
    .map((o) => o.key)
    .filter((key) => key.endsWith(`/${MANIFEST_FILE}`) && key.split("/").length - folder.split("/").length <= 2);
  const points: IndexedPoint[] = [];
  const holds: SetIndex["holds"] = [];
  /** Per point: the points its incremental backups build on. */
  const linkedTo = new Map<string, string[]>();
  for (const key of manifests) {
    const text = await set.store.readText(key).catch(() => undefined);
    const read = text === undefined ? undefined : readManifest(text);
    if (!read?.ok) continue;
    const { manifest } = read;
    const sizeBytes = manifest.items.reduce((sum, i) => sum + i.sizeBytes, 0);
    const cloud = cloudBackupsIn(manifest);
    const id = manifest.pointId ?? manifest.setId;
    if (manifest.final) holds.push(finalHoldOf(id, manifest.final));
    linkedTo.set(
      id,
      manifest.items.flatMap((i) => (i.chain?.base ? [i.chain.base.pointId] : [])),
    );
    points.push({
      id,
      takenAt: manifest.createdAt,
      sizeBytes,
      status: "unchecked",
      keySource: manifest.keySource,
      ...(manifest.escrow ? { escrow: manifest.escrow } : {}),
      ...(cloud ? { cloud } : {}),
      ...(manifest.final ? { final: finalOf(manifest.final) } : {}),
    });
  }
  points.sort((a, b) => a.takenAt.localeCompare(b.takenAt));
  for (const point of points) {
    const inCloud = pointsBuiltOn(points, (p) => p.cloud?.backups ?? [], point.cloud?.backups ?? []);
    const bases = [...new Set([...inCloud, ...(linkedTo.get(point.id) ?? [])])];
    if (bases.length > 0) point.dependsOn = bases;
  }
  return {
    kind: INDEX_KIND,
    schemaVersion: INDEX_SCHEMA_VERSION,
    setId: set.setId,
    zone: set.zone,
    updatedAt: new Date().toISOString(),
    retention: null,
    holds,
    points,
    pruned: [],
  };
}

/**
 * The set's index as the target shows it now: rebuilt from its manifests when it is missing or
 * unreadable; a point whose manifest is there but the index lacks (a run whose index write
 * failed) added as unchecked; a listed point whose manifest is gone shown as missing. A point
 * listed without cloud backups (an index of version 1) gets those its manifest records.
 */
export async function currentSetIndex(set: SetOnStore): Promise<{ index: SetIndex; rebuilt: boolean }> {
  const { index } = await readSetIndex(set);
  const found = await rebuildSetIndex(set);
  if (!index) return { index: found, rebuilt: true };
  const present = new Map(found.points.map((p) => [p.id, p]));
  const known = new Set(index.points.map((p) => p.id));
  const unlisted = found.points.filter((p) => !known.has(p.id));
  const listed = index.points.map((p) => {
    const manifest = present.get(p.id);
    if (!manifest) return { ...p, status: "missing" as const, failures: ["its manifest is gone"] };
    if (p.cloud || !manifest.cloud) return p;
    return { ...p, cloud: manifest.cloud, dependsOn: p.dependsOn ?? manifest.dependsOn };
  });
  const points = [...listed, ...unlisted].sort((a, b) => a.takenAt.localeCompare(b.takenAt));
  return { index: { ...index, points }, rebuilt: unlisted.length > 0 };
}

/** Removes the index of a set with no point left; the store removes the folders left empty. */
export async function removeSetIndex(set: SetOnStore): Promise<void> {
  await set.store.remove(indexKey(set));
}
