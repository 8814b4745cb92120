import { z } from "zod";
import { readFileIfExists } from "../common/atomicFile";
import { CofferError } from "../common/errors";
import { readManifest } from "../agent/manifest";
import { escrowLayout } from "../targets/layout";
import { TargetStore, listAll } from "../targets/store";
import { escrowStore, jsonOrUndefined, readCurrentVersion, readRecord, recordVersions, removeVersion } from "./record";

/**
 * Which backup sets depend on which version of an escrow record. A set writes its reference,
 * escrowLayout.ref(id, setId), before its manifest and removes it after the set is deleted.
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

/** The record's store, once it is reachable: a reference is never written onto an empty mount point. */
async function reachableStore(where: TargetStore | string, id: string): Promise<TargetStore> {
  const store = escrowStore(where, id);
  if (
    !(await store.assertReachable().then(
      () => true,
      () => false,
    ))
  ) {
    throw new CofferError(
      "TARGET_UNREACHABLE",
      `escrow store ${store.location} is not an accessible directory: mount it (or create the folder) and run again`,
      { field: "escrow" },
    );
  }
  return store;
}

/** Records that `ref.setId` depends on the record's current version, which must be readable; returns that version. */
export async function referenceCurrentVersion(
  where: TargetStore | string,
  id: string,
  ref: Omit<Reference, "version">,
): Promise<number> {
  const store = await reachableStore(where, id);
  const version = await readCurrentVersion(store, id).catch(() => undefined);
  const found = version === undefined ? undefined : await readRecord(store, id, version).catch(() => undefined);
  if (version === undefined || !found) {
    throw new CofferError(
      "SOURCE_MISSING",
      `escrow record ${id} ${version === undefined ? "has no current version" : `v${version} is not readable`} ` +
        `in ${store.location}: run \`pulumi refresh\` and \`pulumi up\` so the SecretEscrow writes it again, ` +
        "then take the set",
      { field: "escrow" },
    );
  }
  await store.writeTextAtomic(escrowLayout.ref(id, ref.setId), JSON.stringify({ ...ref, version }, null, 2) + "\n");
  return version;
}

/**
 * Writes `ref` again if it is gone (someone emptied the store): refresh of a set heals the link,
 * so a record written again by the escrow's next `up` can't lose a version the set needs.
 */
export async function ensureReference(where: TargetStore | string, id: string, ref: Reference): Promise<boolean> {
  const store = await reachableStore(where, id);
  const key = escrowLayout.ref(id, ref.setId);
  if ((await store.readText(key)) !== undefined) return false;
  await store.writeTextAtomic(key, JSON.stringify(ref, null, 2) + "\n");
  return true;
}

/** The keys of a record's references with the names they give their sets, in key order. */
async function referenceKeys(store: TargetStore, id: string): Promise<{ key: string; name: string }[]> {
  const objects = await listAll(store, escrowLayout.refs(id));
  return objects.flatMap(({ key }) => {
    const name = escrowLayout.refNameOf(id, key);
    return name === undefined ? [] : [{ key, name }];
  });
}

export async function readReferences(where: TargetStore | string, id: string): Promise<Reference[]> {
  const store = escrowStore(where, id);
  const refs: Reference[] = [];
  for (const { key, name } of await referenceKeys(store, id)) {
    const text = await store.readText(key);
    const parsed = text === undefined ? undefined : referenceSchema.safeParse(jsonOrUndefined(text));
    // An unreadable reference can't be proved stale: keep everything it might protect.
    refs.push(
      parsed?.success
        ? parsed.data
        : { setId: name, version: 0, manifestPath: "", manifestHost: "unknown", createdAt: "" },
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

export async function liveReferences(store: TargetStore | string, id: string): Promise<Reference[]> {
  const live: Reference[] = [];
  for (const ref of await readReferences(store, id)) if (await referenceIsLive(id, ref)) live.push(ref);
  return live;
}

/**
 * Removes the versions older than the newest that no live reference needs; returns them. The
 * newest version is the record's current one and is never removed here.
 */
export async function pruneVersions(where: TargetStore | string, id: string): Promise<number[]> {
  const store = escrowStore(where, id);
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
    await removeVersion(store, id, version);
    removed.push(version);
  }
  return removed;
}

/** Removes every reference of a record (the record is being deleted). */
export async function removeReferences(where: TargetStore | string, id: string): Promise<void> {
  const store = escrowStore(where, id);
  const refs = await referenceKeys(store, id).catch(() => []);
  for (const { key } of refs) await store.remove(key);
}

/** A set is gone: its reference goes, then the versions only it kept. */
export async function releaseReference(where: TargetStore | string, id: string, setId: string): Promise<number[]> {
  await escrowStore(where, id).remove(escrowLayout.ref(id, setId));
  return pruneVersions(where, id);
}
