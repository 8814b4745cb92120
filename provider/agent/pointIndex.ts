import { z } from "zod";
import { CofferError } from "../common/errors";
import { directoryStore } from "../targets/directory";
import { INDEX_FILE, MANIFEST_FILE, targetLayout } from "../targets/layout";
import { TargetStore, listAll } from "../targets/store";
import { readManifest } from "./manifest";

/**
 * A set's index, `<target>/sets/<zone>/<set>/index.json`: its points, holds and retention as the
 * set last declared them, so that `coffer list` and `coffer prune` work from the target alone,
 * without Pulumi and without keys. Written atomically after every change; it is a cache of what
 * the manifests say plus what only Pulumi knows (statuses, holds, rules), and is rebuilt from the
 * manifests when it is missing or unreadable.
 */
export const INDEX_KIND = "coffer.SetIndex";
export const INDEX_SCHEMA_VERSION = 1;

const indexedPoint = z.object({
  id: z.string(),
  takenAt: z.string(),
  sizeBytes: z.number().int().min(0),
  /** "unchecked": found in a manifest by a rebuild; nobody has verified it since. */
  status: z.enum(["ok", "failed", "missing", "unchecked"]),
  checkedAt: z.string().optional(),
  failures: z.array(z.string()).optional(),
  keySource: z.enum(["passphrase", "manifest-key"]),
  escrow: z.object({ recordId: z.string(), store: z.string(), version: z.number().int().min(1) }).optional(),
  /** The points whose backups this one's incrementals build on. */
  dependsOn: z.union([z.string(), z.array(z.string())]).optional(),
});
export type IndexedPoint = z.output<typeof indexedPoint>;

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
  pruned: z.array(z.object({ id: z.string(), prunedAt: z.string(), by: z.string() })).default([]),
});
export type SetIndex = z.output<typeof setIndexSchema>;

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
 * Writes the index atomically; the record of points pruned without Pulumi is kept (merged with
 * `index`'s) until the index no longer lists them, so the next refresh can tell pruned from lost.
 */
export async function writeSetIndex(set: SetOnStore, index: SetIndex): Promise<void> {
  const { index: previous } = await readSetIndex(set);
  const pruned = new Map([...(previous?.pruned ?? []), ...index.pruned].map((p) => [p.id, p]));
  const merged = { ...index, pruned: [...pruned.values()] };
  await set.store.writeTextAtomic(indexKey(set), JSON.stringify(merged, null, 2) + "\n");
}

/**
 * The set's points as its manifests say, read without any key (so unchecked): each point folder's
 * manifest, and the set folder's own for a set taken before histories. Holds and rules are not in
 * manifests: a rebuilt index has none.
 */
export async function rebuildSetIndex(set: SetOnStore): Promise<SetIndex> {
  const folder = targetLayout.setFolder(set.zone, set.setId);
  const manifests = (await listAll(set.store, folder).catch(() => []))
    .map((o) => o.key)
    .filter((key) => key.endsWith(`/${MANIFEST_FILE}`) && key.split("/").length - folder.split("/").length <= 2);
  const points: IndexedPoint[] = [];
  for (const key of manifests) {
    const text = await set.store.readText(key).catch(() => undefined);
    const read = text === undefined ? undefined : readManifest(text);
    if (!read?.ok) continue;
    const { manifest } = read;
    const sizeBytes = manifest.items.reduce((sum, i) => sum + i.sizeBytes, 0);
    points.push({
      id: manifest.pointId ?? manifest.setId,
      takenAt: manifest.createdAt,
      sizeBytes,
      status: "unchecked",
      keySource: manifest.keySource,
      ...(manifest.escrow ? { escrow: manifest.escrow } : {}),
    });
  }
  points.sort((a, b) => a.takenAt.localeCompare(b.takenAt));
  return {
    kind: INDEX_KIND,
    schemaVersion: INDEX_SCHEMA_VERSION,
    setId: set.setId,
    zone: set.zone,
    updatedAt: new Date().toISOString(),
    retention: null,
    holds: [],
    points,
    pruned: [],
  };
}

/**
 * The set's index as the target shows it now: rebuilt from its manifests when it is missing or
 * unreadable; a point whose manifest is there but the index lacks (a run whose index write
 * failed) added as unchecked; a listed point whose manifest is gone shown as missing.
 */
export async function currentSetIndex(set: SetOnStore): Promise<{ index: SetIndex; rebuilt: boolean }> {
  const { index } = await readSetIndex(set);
  const found = await rebuildSetIndex(set);
  if (!index) return { index: found, rebuilt: true };
  const present = new Set(found.points.map((p) => p.id));
  const known = new Set(index.points.map((p) => p.id));
  const unlisted = found.points.filter((p) => !known.has(p.id));
  const listed = index.points.map((p) =>
    present.has(p.id) ? p : { ...p, status: "missing" as const, failures: ["its manifest is gone"] },
  );
  const points = [...listed, ...unlisted].sort((a, b) => a.takenAt.localeCompare(b.takenAt));
  return { index: { ...index, points }, rebuilt: unlisted.length > 0 };
}

/** Removes the index of a set with no point left; the store removes the folders left empty. */
export async function removeSetIndex(set: SetOnStore): Promise<void> {
  await set.store.remove(indexKey(set));
}
