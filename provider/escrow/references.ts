import { promises as fs } from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { readFileIfExists, writeFileAtomic } from "../common/atomicFile";
import { CofferError } from "../common/errors";
import { readManifest } from "../agent/manifest";
import { jsonOrUndefined, readCurrentVersion, readRecord, recordDir, recordPath, recordVersions } from "./record";

/**
 * Which backup sets depend on which version of an escrow record. A set writes
 * `<store>/<id>/refs/<setId>.json` before its manifest and removes it after the set is deleted.
 * A reference counts while the manifest it names still exists and names this record: a set
 * deleted by hand stops counting, a set kept with `retainOnDelete` (or dropped from state) keeps
 * counting. A manifest on another host can't be looked at from here, so it always counts.
 */
const referenceSchema = z.object({
  setId: z.string(),
  version: z.number().int().min(1),
  manifestPath: z.string(),
  manifestHost: z.string(),
  createdAt: z.string(),
});
export type Reference = z.output<typeof referenceSchema>;

const refsDir = (store: string, id: string) => path.join(recordDir(store, id), "refs");
const refFile = (store: string, id: string, setId: string) =>
  path.join(refsDir(store, id), `${setId.replace(/[^A-Za-z0-9._-]/g, "_")}.json`);

/** Throws unless `store` is an existing folder: a reference is never written onto an empty mount point. */
async function assertStore(store: string): Promise<void> {
  const stat = await fs.stat(store).catch(() => undefined);
  if (!stat?.isDirectory()) {
    throw new CofferError(
      "TARGET_UNREACHABLE",
      `escrow store ${store} is not an accessible directory: mount it (or create the folder) and run again`,
      { field: "escrow" },
    );
  }
}

/** Records that `ref.setId` depends on the record's current version, which must be readable; returns that version. */
export async function referenceCurrentVersion(
  store: string,
  id: string,
  ref: Omit<Reference, "version">,
): Promise<number> {
  await assertStore(store);
  const version = await readCurrentVersion(store, id).catch(() => undefined);
  const found = version === undefined ? undefined : await readRecord(store, id, version).catch(() => undefined);
  if (version === undefined || !found) {
    throw new CofferError(
      "SOURCE_MISSING",
      `escrow record ${id} ${version === undefined ? "has no current version" : `v${version} is not readable`} in ${store}: run \`pulumi refresh\` and \`pulumi up\` so the SecretEscrow writes it again, then take the set`,
      { field: "escrow" },
    );
  }
  await writeFileAtomic(refFile(store, id, ref.setId), JSON.stringify({ ...ref, version }, null, 2) + "\n");
  return version;
}

/**
 * Writes `ref` again if it is gone (someone emptied the store): refresh of a set heals the link,
 * so a record written again by the escrow's next `up` can't lose a version the set needs.
 */
export async function ensureReference(store: string, id: string, ref: Reference): Promise<boolean> {
  await assertStore(store);
  const file = refFile(store, id, ref.setId);
  if ((await readFileIfExists(file)) !== undefined) return false;
  await writeFileAtomic(file, JSON.stringify(ref, null, 2) + "\n");
  return true;
}

export async function readReferences(store: string, id: string): Promise<Reference[]> {
  const dir = refsDir(store, id);
  const entries = await fs.readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return [] as string[];
    throw e;
  });
  const refs: Reference[] = [];
  for (const entry of entries.filter((e) => e.endsWith(".json")).sort()) {
    const text = await readFileIfExists(path.join(dir, entry));
    const parsed = text === undefined ? undefined : referenceSchema.safeParse(jsonOrUndefined(text));
    // An unreadable reference can't be proved stale: keep everything it might protect.
    refs.push(
      parsed?.success
        ? parsed.data
        : { setId: entry.replace(/\.json$/, ""), version: 0, manifestPath: "", manifestHost: "unknown", createdAt: "" },
    );
  }
  return refs;
}

/** Whether the set behind `ref` still exists and names this record (see the module comment). */
export async function referenceIsLive(id: string, ref: Reference): Promise<boolean> {
  if (ref.manifestHost !== "local") return true;
  const text = await readFileIfExists(ref.manifestPath).catch(() => "unreadable");
  if (text === undefined) return false;
  const opened = readManifest(text);
  if (!opened.ok) return true;
  return opened.manifest.escrow?.recordId === id;
}

export async function liveReferences(store: string, id: string): Promise<Reference[]> {
  const live: Reference[] = [];
  for (const ref of await readReferences(store, id)) if (await referenceIsLive(id, ref)) live.push(ref);
  return live;
}

/**
 * Removes the versions older than the newest that no live reference needs; returns them. The
 * newest version is the record's current one and is never removed here.
 */
export async function pruneVersions(store: string, id: string): Promise<number[]> {
  const versions = await recordVersions(store, id);
  const newest = versions.at(-1);
  const current = await readCurrentVersion(store, id);
  const live = await liveReferences(store, id);
  // A reference whose version can't be read protects every version.
  if (live.some((r) => r.version === 0)) return [];
  const needed = new Set(live.map((r) => r.version));
  const removed: number[] = [];
  for (const version of versions) {
    if (version === newest || version === current || needed.has(version)) continue;
    await fs.rm(recordPath(store, id, version), { force: true });
    removed.push(version);
  }
  return removed;
}

/** Removes every reference of a record, then the refs folder (the record is being deleted). */
export async function removeReferences(store: string, id: string): Promise<void> {
  const dir = refsDir(store, id);
  for (const entry of await fs.readdir(dir).catch(() => [] as string[])) {
    if (entry.endsWith(".json")) await fs.rm(path.join(dir, entry), { force: true });
  }
  await fs.rmdir(dir).catch(() => undefined);
}

/** A set is gone: its reference goes, then the versions only it kept. */
export async function releaseReference(store: string, id: string, setId: string): Promise<number[]> {
  await fs.rm(refFile(store, id, setId), { force: true });
  return pruneVersions(store, id);
}
