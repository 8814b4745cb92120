import { storeAt } from "../targets/directory";
import { targetLayout } from "../targets/layout";
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
  const folders = new Map<string, { zone: string; setId: string; entries: Set<string>; sizeBytes: number }>();
  for (const { key, sizeBytes } of await listAll(store, prefix).catch(() => [])) {
    const at = targetLayout.setEntryOf(key);
    if (!at) continue;
    const id = JSON.stringify([at.zone, at.setId]);
    const folder = folders.get(id) ?? { zone: at.zone, setId: at.setId, entries: new Set(), sizeBytes: 0 };
    folder.entries.add(at.entry);
    folder.sizeBytes += sizeBytes;
    folders.set(id, folder);
  }
  const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const ordered = [...folders.values()].sort((a, b) => byName(a.zone, b.zone) || byName(a.setId, b.setId));
  const found: SetFolder[] = [];
  for (const { zone: z, setId, entries, sizeBytes } of ordered) {
    const setDir = store.locate(targetLayout.setFolder(z, setId));
    const text = await store.readText(targetLayout.setManifest(z, setId)).catch(() => undefined);
    if (text !== undefined) {
      const manifest = readManifest(text);
      const m = manifest.ok ? manifest.manifest : undefined;
      const items = m?.items.map((i) => i.name) ?? [];
      found.push({ zone: z, setId, setDir, status: "complete", createdAt: m?.createdAt, items, sizeBytes });
      continue;
    }
    const names = [...entries];
    const readMarker = (entry: string) => store.readText(targetLayout.setFile(z, setId, entry)).catch(() => undefined);
    const byOwners = { none: "unknown", alive: "in-progress", gone: "crashed" } as const;
    const status = byOwners[await markedOwners(names, readMarker)];
    const items = names.filter((e) => BACKUP_FILE.test(e));
    found.push({ zone: z, setId, setDir, status, items, sizeBytes });
  }
  return found;
}

/** The set ids a `pulumi stack export` records (any resource whose outputs name a setId and setDir). */
export function setIdsInStackExport(exported: unknown): Set<string> {
  const ids = new Set<string>();
  type StackExport = { deployment?: { resources?: { outputs?: Record<string, unknown> }[] } };
  const resources = (exported as StackExport)?.deployment?.resources;
  if (!Array.isArray(resources)) throw new Error("not a `pulumi stack export` (no deployment.resources)");
  for (const resource of resources) {
    const { setId, setDir } = resource.outputs ?? {};
    if (typeof setId === "string" && typeof setDir === "string") ids.add(setId);
  }
  return ids;
}
