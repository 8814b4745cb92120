import { storeAt } from "../targets/directory";
import { INDEX_FILE, MANIFEST_FILE, targetLayout } from "../targets/layout";
import { TargetStore, listAll } from "../targets/store";
import { readManifest } from "./manifest";
import { BACKUP_FILE } from "./image";
import { markedOwners } from "./setOwner";

/**
 * What is in a target's set folders (targetLayout.setFolder), read without any key:
 * - "complete": a manifest is there (its HMAC is not checked here: `coffer verify` does that);
 * - "in-progress": no manifest yet, and its owner (the provider taking it) is alive or on another host;
 * - "crashed": no manifest, and its owner is gone: the next backup on that host removes it;
 * - "unknown": no manifest and no owner marker (an older Coffer, or a folder Coffer did not make).
 */
export interface SetFolder {
  zone: string;
  setId: string;
  /** The point, for a point's folder in its set's; absent for a set taken before histories. */
  pointId?: string;
  /** The folder: the point's, or the set's own. */
  setDir: string;
  status: "complete" | "in-progress" | "crashed" | "unknown";
  createdAt?: string;
  items: string[];
  sizeBytes: number;
}

/**
 * The set folders on a target (a store, or a directory target's path), by zone and set id. A
 * folder is seen through the objects in it, as in any store: an empty folder holds no set.
 */
export async function listSets(target: TargetStore | string, zone?: string): Promise<SetFolder[]> {
  const store = storeAt(target);
  const prefix = zone === undefined ? targetLayout.sets() : targetLayout.zoneSets(zone);
  type Folder = { zone: string; setId: string; pointId?: string; entries: Set<string>; sizeBytes: number };
  const folders = new Map<string, Folder>();
  for (const { key, sizeBytes } of await listAll(store, prefix).catch(() => [])) {
    const at = targetLayout.setEntryOf(key);
    // The set's index is no backup: a set folder that holds only its points and index is none.
    if (!at || at.entry === INDEX_FILE) continue;
    const [first, ...rest] = at.entry.split("/");
    const pointId = rest.length > 0 ? first : undefined;
    const entry = rest.length > 0 ? rest.join("/") : first;
    const id = JSON.stringify([at.zone, at.setId, pointId ?? ""]);
    const folder = folders.get(id) ?? { zone: at.zone, setId: at.setId, pointId, entries: new Set(), sizeBytes: 0 };
    folder.entries.add(entry);
    folder.sizeBytes += sizeBytes;
    folders.set(id, folder);
  }
  const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const ordered = [...folders.values()].sort(
    (a, b) => byName(a.zone, b.zone) || byName(a.setId, b.setId) || byName(a.pointId ?? "", b.pointId ?? ""),
  );
  const found: SetFolder[] = [];
  for (const { zone: z, setId, pointId, entries, sizeBytes } of ordered) {
    const folderKey = pointId ? targetLayout.pointFolder(z, setId, pointId) : targetLayout.setFolder(z, setId);
    const setDir = store.locate(folderKey);
    const ids = { zone: z, setId, ...(pointId ? { pointId } : {}), setDir };
    const text = await store.readText(`${folderKey}/${MANIFEST_FILE}`).catch(() => undefined);
    if (text !== undefined) {
      const manifest = readManifest(text);
      const m = manifest.ok ? manifest.manifest : undefined;
      const items = m?.items.map((i) => i.name) ?? [];
      found.push({ ...ids, status: "complete", createdAt: m?.createdAt, items, sizeBytes });
      continue;
    }
    const names = [...entries];
    const readMarker = (entry: string) => store.readText(`${folderKey}/${entry}`).catch(() => undefined);
    const byOwners = { none: "unknown", alive: "in-progress", gone: "crashed" } as const;
    const status = byOwners[await markedOwners(names, readMarker)];
    const items = names.filter((e) => BACKUP_FILE.test(e));
    found.push({ ...ids, status, items, sizeBytes });
  }
  return found;
}

/**
 * What a `pulumi stack export` records (any resource whose outputs name a setId and setDir): each
 * set's id, and `<setId>/<pointId>` for each of its points (see trackedBy).
 */
export function setIdsInStackExport(exported: unknown): Set<string> {
  const ids = new Set<string>();
  type StackExport = { deployment?: { resources?: { outputs?: Record<string, unknown> }[] } };
  const resources = (exported as StackExport)?.deployment?.resources;
  if (!Array.isArray(resources)) throw new Error("not a `pulumi stack export` (no deployment.resources)");
  for (const resource of resources) {
    const { setId, setDir, points } = resource.outputs ?? {};
    if (typeof setId !== "string" || typeof setDir !== "string") continue;
    ids.add(setId);
    for (const point of Array.isArray(points) ? points : []) ids.add(`${setId}/${(point as { id: string }).id}`);
  }
  return ids;
}

/**
 * Whether `tracked` (setIdsInStackExport) holds the folder: a point by its own record (the set's
 * first point, taken before histories, is the set's folder itself), else a set by its id.
 */
export function trackedBy(tracked: Set<string>, folder: Pick<SetFolder, "setId" | "pointId">): boolean {
  return tracked.has(folder.pointId ? `${folder.setId}/${folder.pointId}` : folder.setId);
}
