import { promises as fs } from "node:fs";
import * as path from "node:path";
import { readFileIfExists } from "../common/atomicFile";
import { MANIFEST_FILE, readManifest } from "./manifest";
import { BACKUP_FILE } from "./image";
import { folderOwners } from "./setOwner";

/**
 * What is in a target's set folders (`<target>/sets/<zone>/<setId>`), read without any key:
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

export async function listSets(targetPath: string, zone?: string): Promise<SetFolder[]> {
  const setsDir = path.join(targetPath, "sets");
  const zones = zone ? [zone] : (await fs.readdir(setsDir).catch(() => [] as string[])).sort();
  const found: SetFolder[] = [];
  for (const z of zones) {
    for (const setId of (await fs.readdir(path.join(setsDir, z)).catch(() => [] as string[])).sort()) {
      const setDir = path.join(setsDir, z, setId);
      const entries = await fs.readdir(setDir).catch(() => undefined);
      if (!entries) continue;
      let sizeBytes = 0;
      for (const entry of entries) {
        sizeBytes += (await fs.stat(path.join(setDir, entry)).catch(() => undefined))?.size ?? 0;
      }
      const text = await readFileIfExists(path.join(setDir, MANIFEST_FILE)).catch(() => undefined);
      const manifest = text === undefined ? undefined : readManifest(text);
      if (text !== undefined) {
        const m = manifest?.ok ? manifest.manifest : undefined;
        const items = m?.items.map((i) => i.name) ?? [];
        found.push({ zone: z, setId, setDir, status: "complete", createdAt: m?.createdAt, items, sizeBytes });
        continue;
      }
      const byOwners = { none: "unknown", alive: "in-progress", gone: "crashed" } as const;
      const status = byOwners[await folderOwners(setDir, entries)];
      const items = entries.filter((e) => BACKUP_FILE.test(e));
      found.push({ zone: z, setId, setDir, status, items, sizeBytes });
    }
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
