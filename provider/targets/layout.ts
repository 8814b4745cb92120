/**
 * The names of everything Coffer keeps in a store: the only module that knows them. On a backup
 * target:
 *   .coffer/target.json                      the target's identity (common/targetIdentity.ts)
 *   .coffer/zones/<zone>/policy.json         a zone's policy document (backupPolicy/document.ts)
 *   sets/<zone>/<setId>/                     a backup set's folder:
 *     manifest.json                          its signed manifest, written last (agent/manifest.ts)
 *     <item>.qcow2[.luks]                    its backup files (named by agent/image.ts)
 *     .owner-<host>-<pid>                    who is taking it, until the manifest is written
 *     .<file>.partial-<host>-<pid>-<hex>     a backup file being written
 * In an escrow store:
 *   <recordId>/v<N>.json                     version N of an escrow record (escrow/record.ts)
 *   <recordId>/current.json                  which version is current
 *   <recordId>/refs/<setId>.json             a backup set's reference to a version (escrow/references.ts)
 */

/** `value`, checked to be one name of a key (no '/', not empty, '.' or '..'). */
function name(value: string, what: string): string {
  if (value === "" || value === "." || value === ".." || value.includes("/")) {
    throw new Error(`${what} "${value}" can't name a folder or file in a store`);
  }
  return value;
}

const SETS = "sets";

export const targetLayout = {
  identity: (): string => ".coffer/target.json",
  /** Where cloud data is staged on its way into a point (a Glance download); emptied after each use. */
  staging: (): string => ".coffer/staging",
  policyDocument: (zone: string): string => `.coffer/zones/${name(zone, "zone")}/policy.json`,
  /** The folder of every set (of every zone). */
  sets: (): string => SETS,
  /** The folder of a zone's sets. */
  zoneSets: (zone: string): string => `${SETS}/${name(zone, "zone")}`,
  setFolder: (zone: string, setId: string): string => `${targetLayout.zoneSets(zone)}/${name(setId, "set id")}`,
  /** A file in a set's folder: a backup file, or an owner marker or partial file named below. */
  setFile: (zone: string, setId: string, file: string): string =>
    `${targetLayout.setFolder(zone, setId)}/${name(file, "file")}`,
  setManifest: (zone: string, setId: string): string => targetLayout.setFile(zone, setId, MANIFEST_FILE),
  /** A set's index of its points (agent/pointIndex.ts). */
  setIndex: (zone: string, setId: string): string => targetLayout.setFile(zone, setId, INDEX_FILE),
  /** The folder of one point (recovery point) of a set: its backups and signed manifest. */
  pointFolder: (zone: string, setId: string, pointId: string): string =>
    `${targetLayout.setFolder(zone, setId)}/${name(pointId, "point id")}`,
  /** A point's signed manifest. */
  pointManifest: (zone: string, setId: string, pointId: string): string =>
    `${targetLayout.pointFolder(zone, setId, pointId)}/${MANIFEST_FILE}`,

  /** The set a key under `sets/` is in, and the name in the set's folder it is or is under. */
  setEntryOf(key: string): { zone: string; setId: string; entry: string } | undefined {
    const [top, zone, setId, entry] = key.split("/");
    return top === SETS && zone && setId && entry ? { zone, setId, entry } : undefined;
  },

  /**
   * What a set folder's path (or key) says of its set: its id is the folder's name, and its zone
   * the name of the folder above when that one is in a `sets` folder (else unknown: a set copied
   * elsewhere, e.g. for a restore).
   */
  setFolderOf(folder: string): { setId: string; zone?: string } {
    const names = folder.split("/").filter((n) => n !== "" && n !== ".");
    const [sets, zone, setId] = names.slice(-3);
    return names.length >= 3 && sets === SETS ? { setId, zone } : { setId: names.at(-1) ?? "" };
  },
};

/** A point's signed manifest, in the point's folder (in the set's own folder for a set before histories). */
export const MANIFEST_FILE = "manifest.json";
/** A set's index of its points (agent/pointIndex.ts), in the set's folder. */
export const INDEX_FILE = "index.json";
/** A merge of a pruned link into its kept point (agent/merge.ts): its journal, in the set's folder. */
export const MERGE_JOURNAL_FILE = "merge.json";
/** A point's rewritten manifest while a merge commits, and the one it replaces until the merge is done. */
export const NEXT_MANIFEST_FILE = "manifest.next.json";
export const PREVIOUS_MANIFEST_FILE = "manifest.prev.json";

/** An owner marker: the provider process `<host>`/`<pid>` is taking the set (agent/setOwner.ts). */
export const ownerMarkerName = (host: string, pid: number): string => `.owner-${host}-${pid}`;
export const OWNER_PATTERN = /^\.owner-(.+)-(\d+)$/;

/** A backup file being written: no reader takes it for a finished one, and it says who makes it. */
export const partialFileName = (finalName: string, host: string, pid: number, random: string): string =>
  `.${finalName}.partial-${host}-${pid}-${random}`;
/** Groups: the final name, the host, the pid. */
export const PARTIAL_PATTERN = /^\.(.+)\.partial-(.+)-(\d+)-[0-9a-f]{8}$/;

const VERSION_FILE = /^v(\d+)\.json$/;
const REFS = "refs";

export const escrowLayout = {
  /** The folder of every version of a record, its current.json and its refs. */
  record: (id: string): string => name(id, "escrow id"),
  version: (id: string, version: number): string => `${escrowLayout.record(id)}/v${version}.json`,
  current: (id: string): string => `${escrowLayout.record(id)}/current.json`,
  refs: (id: string): string => `${escrowLayout.record(id)}/${REFS}`,
  /** A set's reference; a set id's characters other than letters, digits, '.', '_' and '-' become '_'. */
  ref: (id: string, setId: string): string => `${escrowLayout.refs(id)}/${setId.replace(/[^A-Za-z0-9._-]/g, "_")}.json`,

  /** The version a key under the record's folder holds, or undefined when it is no version. */
  versionOf(id: string, key: string): number | undefined {
    const [record, file, ...rest] = key.split("/");
    const match = record === id && rest.length === 0 ? VERSION_FILE.exec(file ?? "") : null;
    return match ? Number(match[1]) : undefined;
  },

  /** The name a reference's key gives its set (its file name less `.json`), or undefined when it is none. */
  refNameOf(id: string, key: string): string | undefined {
    const [record, refs, file, ...rest] = key.split("/");
    const isRef = record === id && refs === REFS && rest.length === 0 && file?.endsWith(".json");
    return isRef ? file.slice(0, -".json".length) : undefined;
  },
};
