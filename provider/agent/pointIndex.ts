import { promises as fs } from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { readFileIfExists, removeEmptyDirs, writeFileAtomic } from "../common/atomicFile";
import { MANIFEST_FILE } from "../targets/layout";
import { readManifest } from "./manifest";

/**
 * A set's index, `<target>/sets/<zone>/<set>/index.json`: its points, holds and retention as the
 * set last declared them, so that `coffer list` and `coffer prune` work from the target alone,
 * without Pulumi and without keys. Written atomically after every change; it is a cache of what
 * the manifests say plus what only Pulumi knows (statuses, holds, rules), and is rebuilt from the
 * manifests when it is missing or unreadable.
 */
export const INDEX_FILE = "index.json";
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
  dependsOn: z.string().optional(),
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

/** The set's index, or why it can't be read (`undefined` both: there is none). */
export async function readSetIndex(setDir: string): Promise<{ index?: SetIndex; problem?: string }> {
  const text = await readFileIfExists(path.join(setDir, INDEX_FILE));
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
 * Writes the index; the record of points pruned without Pulumi is kept (merged with `index`'s)
 * until the index no longer lists them, so the next refresh can tell pruned from lost.
 */
export async function writeSetIndex(setDir: string, index: SetIndex): Promise<void> {
  await fs.mkdir(setDir, { recursive: true, mode: 0o700 });
  const { index: previous } = await readSetIndex(setDir);
  const pruned = new Map([...(previous?.pruned ?? []), ...index.pruned].map((p) => [p.id, p]));
  index = { ...index, pruned: [...pruned.values()] };
  await writeFileAtomic(path.join(setDir, INDEX_FILE), JSON.stringify(index, null, 2) + "\n");
}

/**
 * The set's points as its manifests say, read without any key (so unchecked): each point folder's
 * manifest, and the set folder's own for a set taken before histories. Holds and rules are not in
 * manifests: a rebuilt index has none.
 */
export async function rebuildSetIndex(setDir: string, zone: string): Promise<SetIndex> {
  const setId = path.basename(setDir);
  const folders = [setDir];
  for (const entry of await fs.readdir(setDir, { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory()) folders.push(path.join(setDir, entry.name));
  }
  const points: IndexedPoint[] = [];
  for (const folder of folders) {
    const text = await readFileIfExists(path.join(folder, MANIFEST_FILE)).catch(() => undefined);
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
  const updatedAt = new Date().toISOString();
  return {
    kind: INDEX_KIND,
    schemaVersion: INDEX_SCHEMA_VERSION,
    setId,
    zone,
    updatedAt,
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
export async function currentSetIndex(setDir: string, zone: string): Promise<{ index: SetIndex; rebuilt: boolean }> {
  const { index } = await readSetIndex(setDir);
  const found = await rebuildSetIndex(setDir, zone);
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

/** Removes the index of a set with no point left, and its folders up to `stopAt` while empty. */
export async function removeSetIndex(setDir: string, stopAt: string): Promise<void> {
  await fs.rm(path.join(setDir, INDEX_FILE), { force: true });
  await removeEmptyDirs(setDir, stopAt);
}
