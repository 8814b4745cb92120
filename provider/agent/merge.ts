/**
 * Merging a pruned link of a qcow2 chain into the kept point that builds on it, so that retention can
 * prune a link and every kept point stays restorable. For each of the kept point's backups that
 * builds on the pruned point: a copy of the pruned point's backup takes in the kept backup's clusters
 * (`qemu-img commit` of a copy of it, through the encryption: a chain shares one key), and the result,
 * read over the pruned point's own bases, must equal the kept backup's recorded guest data before
 * anything changes. The provider then rewrites the kept point's manifest (its new files and base) and
 * those of the points after it (the digest of the manifest each builds on), and the swap is
 * journaled: `merge.json` in the set's folder, with each rewritten manifest first written beside
 * its current one (`manifest.next.json`). Until the journal says "committed" nothing a reader uses
 * has changed, and a merge whose owner is gone is undone; from then on the merge is finished by
 * whoever comes next (settleMerge, run by every agent command on a set), whatever stopped it.
 */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { z } from "zod";
import { readFileIfExists, removeEmptyDirs, syncAndRename, writeFileAtomic } from "../common/atomicFile";
import { CofferError, isCofferError } from "../common/errors";
import {
  MANIFEST_FILE,
  MERGE_JOURNAL_FILE,
  NEXT_MANIFEST_FILE,
  PARTIAL_PATTERN,
  PREVIOUS_MANIFEST_FILE,
} from "../targets/layout";
import { chainBases, checkBaseFiles, sha256Text } from "./chain";
import { SECRET_OBJECT, backupImageOpts, checkImage, fileSha256, streamSha256 } from "./image";
import { ManifestItem, misplacement, openManifest, readManifest } from "./manifest";
import { SetOwner, ownerIsGone, setOwner } from "./setOwner";
import { SecretFd, withSecretFd } from "./tempFiles";
import { partialName, pidAlive, run } from "./tools";

const plainName = z.string().refine((f) => f !== "" && f !== "." && f !== ".." && !f.includes("/"), {
  message: "must be a plain file name",
});

export const mergeJournalSchema = z.object({
  kind: z.literal("coffer.Merge"),
  /** The pruned point, merged into `into`; its folder goes when the merge is done. */
  from: plainName,
  into: plainName,
  /** The provider process that merges (as a set's owner marker names one). */
  owner: setOwner,
  /** "prepared": nothing a reader uses has changed (undone when its owner is gone); "committed": finished by anyone. */
  state: z.enum(["prepared", "committed"]),
  /** When it was prepared: an owner on another host can't be checked, and a prepared merge takes minutes. */
  preparedAt: z.string(),
  /** In `into`'s folder: each merged backup, and the backup it replaces. */
  files: z.array(z.object({ item: z.string(), file: plainName, replaces: plainName })),
  /** The merged point's backup files (its manifest's items), removed with its folder. */
  fromFiles: z.array(plainName),
  /** The points whose manifest.next.json replaces their manifest (known once committed). */
  manifests: z.array(plainName),
});
export type MergeJournal = z.output<typeof mergeJournalSchema>;

/** What a merge made of one of `into`'s backups: the file that replaces it, and what its manifest item records. */
export interface MergedFile {
  item: string;
  file: string;
  replaces: string;
  sizeBytes: number;
  fileSha256: string;
}

export interface MergeRequest {
  /** The set's folder (`<target>/sets/<zone>/<set>`). */
  setDir: string;
  from: string;
  into: string;
  /** The chain's key (its backups' LUKS key, and its manifests' HMAC through HKDF); unencrypted, the manifest key. */
  manifestSecret: string;
  owner: SetOwner;
}

/** A prepared merge whose owner is on another host is taken for abandoned after a day. */
export const STALE_AFTER_MS = 24 * 60 * 60 * 1000;

const journalPath = (setDir: string) => path.join(setDir, MERGE_JOURNAL_FILE);
/** The name of the backup of `item` that takes in point `from`: a new name, so nothing is overwritten. */
export const mergedFileName = (file: string, from: string) => file.replace(/(\.qcow2(\.luks)?)$/, `.merged-${from}$1`);

async function readJournal(setDir: string): Promise<MergeJournal | undefined> {
  const text = await readFileIfExists(journalPath(setDir));
  if (text === undefined) return undefined;
  try {
    const parsed = mergeJournalSchema.safeParse(JSON.parse(text));
    if (parsed.success) return parsed.data;
  } catch {
    // Reported below.
  }
  const fix = "it was not written by this Coffer: look at it, and remove it once the set's points verify";
  throw new CofferError("VERIFY_FAILED", `${journalPath(setDir)} is not a merge journal Coffer reads: ${fix}`);
}

const writeJournal = (setDir: string, journal: MergeJournal) =>
  writeFileAtomic(journalPath(setDir), JSON.stringify(journal, null, 2) + "\n");

const ignoreMissing = (error: NodeJS.ErrnoException) => {
  if (error.code !== "ENOENT") throw error;
};

/** Puts each rewritten manifest in place, then removes what the merge replaced; each step can run again. */
async function rollForward(setDir: string, journal: MergeJournal): Promise<void> {
  for (const pointId of journal.manifests) {
    const dir = path.join(setDir, pointId);
    const next = path.join(dir, NEXT_MANIFEST_FILE);
    if ((await readFileIfExists(next)) === undefined) continue;
    // The one replaced stays readable until the merge is done (chainBases reads it for a link not yet rewritten).
    await fs.link(path.join(dir, MANIFEST_FILE), path.join(dir, PREVIOUS_MANIFEST_FILE)).catch((e) => {
      if (e.code !== "EEXIST" && e.code !== "ENOENT") throw e;
    });
    await fs.rename(next, path.join(dir, MANIFEST_FILE)).catch(ignoreMissing);
  }
  const intoDir = path.join(setDir, journal.into);
  // Only once `into`'s manifest names each merged file, and the file is there, may what it replaces go.
  const named = await namedFiles(path.join(intoDir, MANIFEST_FILE));
  for (const { item, file } of journal.files) {
    const there = await fs.stat(path.join(intoDir, file)).then(
      () => true,
      () => false,
    );
    if (named.get(item) !== file || !there) {
      const why = `point ${journal.into}'s manifest does not name ${file}, or the file is missing`;
      throw new CofferError("VERIFY_FAILED", `the merge of ${journal.from} can't be finished: ${why}; nothing removed`);
    }
  }
  for (const { replaces } of journal.files) await fs.rm(path.join(intoDir, replaces), { force: true });
  await removePoint(path.join(setDir, journal.from), journal.fromFiles, setDir);
  for (const pointId of journal.manifests) {
    await fs.rm(path.join(setDir, pointId, PREVIOUS_MANIFEST_FILE), { force: true });
  }
  await fs.rm(journalPath(setDir), { force: true });
}

/** A manifest file's items, read as JSON only ({ manifest: { items } }, as renderSignedManifest writes it); [] if none. */
function itemsOfEnvelope(text: string | undefined): unknown[] {
  if (text === undefined) return [];
  const items = (JSON.parse(text) as { manifest?: { items?: unknown } }).manifest?.items;
  return Array.isArray(items) ? items : [];
}

/** Each item's file, as the manifest at `file` names them (read only for names: it was checked when written). */
async function namedFiles(file: string): Promise<Map<string, string>> {
  const text = await readFileIfExists(file);
  try {
    const items = itemsOfEnvelope(text) as { name?: unknown; file?: unknown }[];
    return new Map(items.map((i) => [String(i.name), String(i.file)]));
  } catch {
    return new Map();
  }
}

/** The points the manifest at `file` links on (read loosely: a manifest of any schema names its bases so). */
async function basePointsOf(file: string): Promise<string[]> {
  const text = await readFileIfExists(file);
  try {
    const items = itemsOfEnvelope(text) as { chain?: { base?: { pointId?: unknown } } }[];
    return items.flatMap((i) => (typeof i.chain?.base?.pointId === "string" ? [i.chain.base.pointId] : []));
  } catch {
    return [];
  }
}

/** The merged point's folder: its backups (as the journal names them), its manifest, then the folder; nothing else. */
async function removePoint(pointDir: string, files: readonly string[], setDir: string): Promise<void> {
  for (const file of files) await fs.rm(path.join(pointDir, file), { force: true });
  for (const entry of await fs.readdir(pointDir).catch(() => [] as string[])) {
    if (PARTIAL_PATTERN.test(entry)) await fs.rm(path.join(pointDir, entry), { force: true });
  }
  await fs.rm(path.join(pointDir, MANIFEST_FILE), { force: true });
  await removeEmptyDirs(pointDir, setDir);
}

/** Undoes a merge not committed: its merged files and rewritten manifests go; nothing else had changed. */
async function rollBack(setDir: string, journal: MergeJournal): Promise<void> {
  const intoDir = path.join(setDir, journal.into);
  for (const { file } of journal.files) await fs.rm(path.join(intoDir, file), { force: true });
  // What a killed merge was writing: its merged backups and copies of the tops, named by its dead process.
  const writing = new Set(journal.files.flatMap(({ file, replaces }) => [file, `${replaces}.top`]));
  for (const entry of await fs.readdir(intoDir).catch(() => [] as string[])) {
    const partial = PARTIAL_PATTERN.exec(entry);
    if (partial && writing.has(partial[1]) && partial[2] === os.hostname() && !pidAlive(Number(partial[3]))) {
      await fs.rm(path.join(intoDir, entry), { force: true });
    }
  }
  for (const entry of await fs.readdir(setDir, { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory()) await fs.rm(path.join(setDir, entry.name, NEXT_MANIFEST_FILE), { force: true });
  }
  await fs.rm(journalPath(setDir), { force: true });
}

/**
 * Finishes or undoes a merge a stopped run left in the set's folder `setDir` (or in the folder above
 * `dir`, a point's): a committed one is finished, a prepared one whose owner is gone is undone. Returns
 * what it did; "in progress" while a prepared merge's owner lives.
 */
export async function settleMerge(dir: string): Promise<"none" | "finished" | "undone" | "in progress"> {
  for (const setDir of [dir, path.dirname(dir)]) {
    const journal = await readJournal(setDir).catch((error) => {
      // A journal that can't be read is left alone: it names what to finish or undo.
      if (isCofferError(error)) return undefined;
      throw error;
    });
    if (!journal) continue;
    if (journal.state === "committed") {
      await rollForward(setDir, journal);
      return "finished";
    }
    const stale = journal.owner.host !== os.hostname() && Date.now() - Date.parse(journal.preparedAt) > STALE_AFTER_MS;
    if (!ownerIsGone(journal.owner) && !stale) return "in progress";
    await rollBack(setDir, journal);
    return "undone";
  }
  return "none";
}

/** Refuses to start while another merge of the set is under way (one at a time per set). */
async function noMergeUnderWay(setDir: string): Promise<void> {
  const settled = await settleMerge(setDir);
  if (settled === "in progress") {
    throw new CofferError(
      "IO_FAILED",
      `set ${path.basename(setDir)}: another merge is under way (${MERGE_JOURNAL_FILE})`,
    );
  }
}

/** `into`'s manifest, checked with the chain's secret (its HMAC) and its place; its items that build on `from`. */
async function linksOnFrom(req: MergeRequest) {
  const intoDir = path.join(req.setDir, req.into);
  const text = await readFileIfExists(path.join(intoDir, MANIFEST_FILE));
  const subject = `point ${req.into}`;
  if (text === undefined) throw new CofferError("SOURCE_MISSING", `${subject}: its manifest is missing`);
  const opened = await openManifest(text, req.manifestSecret);
  if (!opened.ok) throw new CofferError("VERIFY_FAILED", `${subject}: ${opened.problem}`);
  if (!opened.authentic) {
    throw new CofferError(
      "VERIFY_FAILED",
      `${subject}: its manifest's HMAC does not match: it was changed, or the key is not its chain's`,
    );
  }
  const misplaced = misplacement(opened.manifest, intoDir);
  if (misplaced) throw new CofferError("VERIFY_FAILED", `${subject}: ${misplaced}`);
  const links = opened.manifest.items.filter((i) => i.chain?.base?.pointId === req.from);
  if (links.length === 0) {
    throw new CofferError(
      "INVALID_INPUT",
      `${subject}: none of its backups builds on point ${req.from}: nothing to merge`,
    );
  }
  // The pruned point's manifest, as the links recorded it (its digest): the files its folder holds.
  const fromText = await readFileIfExists(path.join(req.setDir, req.from, MANIFEST_FILE));
  const fromRead = fromText === undefined ? undefined : readManifest(fromText);
  if (!fromRead?.ok || links.some((i) => i.chain!.base!.manifestSha256 !== sha256Text(fromText!))) {
    const why = "its manifest is missing, or not the one the links were built on";
    throw new CofferError("VERIFY_FAILED", `point ${req.from}: ${why}`);
  }
  return { intoDir, manifest: opened.manifest, links, fromFiles: fromRead.manifest.items.map((i) => i.file) };
}

/**
 * The first half of a merge of point `from` into point `into`: for each of `into`'s backups that
 * builds on `from`, a merged backup beside it (a new name), verified: read over `from`'s own bases it
 * is the guest data `into` recorded. Nothing a reader uses changes; the journal (state "prepared")
 * names the new files, so a stopped run's are removed. On any failure everything it made goes.
 */
export async function prepareMerge(
  req: MergeRequest,
  events: { signal?: AbortSignal; progress?: (item: string, percent: number) => void } = {},
): Promise<{ files: MergedFile[] }> {
  await noMergeUnderWay(req.setDir);
  const { intoDir, manifest, links, fromFiles } = await linksOnFrom(req);
  const encrypted = manifest.policy.encrypted;
  const journal: MergeJournal = {
    kind: "coffer.Merge",
    from: req.from,
    into: req.into,
    owner: req.owner,
    state: "prepared",
    preparedAt: new Date().toISOString(),
    files: links.map((i) => ({ item: i.name, file: mergedFileName(i.file, req.from), replaces: i.file })),
    fromFiles,
    manifests: [],
  };
  // A merged backup always takes a new name: the one it replaces is removed only after the commit.
  const unnamed = journal.files.find(({ file, replaces }) => file === replaces);
  if (unnamed) {
    throw new CofferError("INVALID_INPUT", `point ${req.into}: ${unnamed.replaces} is not a backup a merge can rename`);
  }
  await writeJournal(req.setDir, journal);
  try {
    const files: MergedFile[] = [];
    await withSecretFd(encrypted ? req.manifestSecret : "", async (key) => {
      for (const [n, item] of links.entries()) {
        const made = await mergeBackup(intoDir, item, journal.files[n].file, encrypted ? key : undefined, events);
        files.push({ item: item.name, replaces: item.file, ...made });
      }
    });
    return { files };
  } catch (error) {
    await rollBack(req.setDir, journal);
    throw isCofferError(error)
      ? error
      : new CofferError("IO_FAILED", `point ${req.into}: merge: ${(error as Error).message}`, {
          secrets: [req.manifestSecret],
        });
  }
}

/** One merged backup: `item`'s base's file with `item`'s clusters committed into it, verified, renamed to `file`. */
async function mergeBackup(
  intoDir: string,
  item: ManifestItem,
  file: string,
  key: SecretFd | undefined,
  events: { signal?: AbortSignal },
): Promise<{ file: string; sizeBytes: number; fileSha256: string }> {
  const subject = `point ${path.basename(intoDir)}: item ${item.name}`;
  const encrypted = key !== undefined;
  // The whole chain must be as its manifests say before anything is built from it.
  const bases = await chainBases(intoDir, item.chain, subject);
  await checkBaseFiles(bases, subject, true);
  const own = path.join(intoDir, item.file);
  const ownStat = await fs.stat(own).catch(() => undefined);
  if (ownStat?.size !== item.sizeBytes || (await fileSha256(own)) !== item.fileSha256) {
    const what = ownStat ? "has changed since it was made (its size or SHA-256 differs)" : "is missing";
    throw new CofferError(ownStat ? "VERIFY_FAILED" : "SOURCE_MISSING", `${subject}: ${item.file} ${what}`);
  }
  const merged = path.join(intoDir, partialName(file));
  // The top is a copy: qemu-img commit opens its top read-write, and the kept backup must never change.
  const top = path.join(intoDir, partialName(`${item.file}.top`));
  try {
    await fs.copyFile(bases[0].file, merged);
    await fs.copyFile(own, top);
    const commit = ["commit", "-q", "-d", ...(key ? ["--object", SECRET_OBJECT] : [])];
    await run("qemu-img", [...commit, "--image-opts", backupImageOpts(top, encrypted, [merged])], {
      subject,
      key,
      signal: events.signal,
    });
    await fs.rm(top, { force: true });
    await checkImage(merged, encrypted, key, subject);
    const below = bases.slice(1).map((b) => b.file);
    const [streamHash, fileHash] = await Promise.all([
      streamSha256(backupImageOpts(merged, encrypted, below), key, subject, events.signal),
      fileSha256(merged),
    ]);
    if (streamHash !== item.streamSha256) {
      const hashes = `sha256 ${streamHash.slice(0, 12)}, recorded ${item.streamSha256.slice(0, 12)}`;
      throw new CofferError("VERIFY_FAILED", `${subject}: the merged backup is not the recorded disk (${hashes})`);
    }
    const sizeBytes = (await fs.stat(merged)).size;
    await fs.chmod(merged, 0o600);
    // Once committed it holds the only copy of the kept backup's data: on disk before it takes its name.
    await syncAndRename(merged, path.join(intoDir, file));
    return { file, sizeBytes, fileSha256: fileHash };
  } finally {
    await fs.rm(merged, { force: true });
    await fs.rm(top, { force: true });
  }
}

/** A rewritten manifest: the point's id and the manifest file's whole text (signed and HMAC'd by the provider). */
export interface RewrittenManifest {
  pointId: string;
  text: string;
}

/**
 * The second half: each rewritten manifest is checked (it opens with the chain's secret, belongs in
 * its folder; `into`'s names the merged files and no longer `from`) and written beside the current
 * one; then the journal says "committed", and the merge is finished (rollForward). A failure before
 * that undoes the merge: `from` and `into` stay exactly as they were.
 */
export async function commitMerge(
  req: MergeRequest & { manifests: RewrittenManifest[] },
): Promise<{ removed: string; unfinished?: string }> {
  const journal = await readJournal(req.setDir);
  if (!journal || journal.state !== "prepared" || journal.from !== req.from || journal.into !== req.into) {
    throw new CofferError(
      "INVALID_INPUT",
      `set ${path.basename(req.setDir)}: no prepared merge of ${req.from} into ${req.into}`,
    );
  }
  try {
    for (const { pointId, text } of req.manifests) await checkRewritten(req, journal, pointId, text);
    if (!req.manifests.some((m) => m.pointId === req.into)) {
      throw new CofferError("INVALID_INPUT", `the rewritten manifests must include point ${req.into}'s`);
    }
    await noLinkLeftBehind(req);
    for (const { pointId, text } of req.manifests) {
      await writeFileAtomic(path.join(req.setDir, pointId, NEXT_MANIFEST_FILE), text);
    }
    // Still this merge's journal: a command that took the merge for abandoned may have undone it meanwhile.
    const now = await readJournal(req.setDir);
    if (now?.state !== "prepared" || now.preparedAt !== journal.preparedAt || now.owner.pid !== journal.owner.pid) {
      throw new CofferError("IO_FAILED", `set ${path.basename(req.setDir)}: the merge was undone before its commit`);
    }
  } catch (error) {
    await rollBack(req.setDir, journal);
    throw error;
  }
  const committed: MergeJournal = { ...journal, state: "committed", manifests: req.manifests.map((m) => m.pointId) };
  await writeJournal(req.setDir, committed);
  // Committed: the merge has happened. What is left of it, the next command on the set finishes.
  const unfinished = await rollForward(req.setDir, committed).then(
    () => undefined,
    (error: Error) => error.message,
  );
  return { removed: req.from, ...(unfinished ? { unfinished } : {}) };
}

/**
 * Refuses a commit that would leave a point building on what it changes: every point of the set whose
 * backups link on `from` or on a rewritten point (its manifest's digest changes) must be rewritten too.
 * The agent sees the folder; the provider's view of it (state, an index) may miss a point.
 */
export async function noLinkLeftBehind(req: MergeRequest & { manifests: RewrittenManifest[] }): Promise<void> {
  const changed = new Set([req.from, ...req.manifests.map((m) => m.pointId)]);
  for (const entry of await fs.readdir(req.setDir, { withFileTypes: true })) {
    if (!entry.isDirectory() || changed.has(entry.name)) continue;
    const bases = await basePointsOf(path.join(req.setDir, entry.name, MANIFEST_FILE));
    const base = bases.find((id) => changed.has(id));
    if (base) {
      throw new CofferError(
        "INVALID_INPUT",
        `point ${entry.name} builds on point ${base}, which the merge changes, but its manifest is not ` +
          "among the rewritten ones: nothing was changed; refresh the set and run it again",
      );
    }
  }
}

async function checkRewritten(req: MergeRequest, journal: MergeJournal, pointId: string, text: string) {
  const subject = `point ${pointId}: its rewritten manifest`;
  const opened = await openManifest(text, req.manifestSecret);
  if (!opened.ok) throw new CofferError("INVALID_INPUT", `${subject}: ${opened.problem}`);
  if (!opened.authentic) throw new CofferError("INVALID_INPUT", `${subject}: its HMAC is not the chain's`);
  const dir = path.join(req.setDir, pointId);
  const misplaced = misplacement(opened.manifest, dir);
  if (misplaced) throw new CofferError("INVALID_INPUT", `${subject}: ${misplaced}`);
  if ((await readFileIfExists(path.join(dir, MANIFEST_FILE))) === undefined) {
    throw new CofferError("INVALID_INPUT", `${subject}: the point has no manifest to replace`);
  }
  if (opened.manifest.items.some((i) => i.chain?.base?.pointId === req.from)) {
    throw new CofferError("INVALID_INPUT", `${subject}: it still builds on point ${req.from}`);
  }
  if (pointId !== req.into) return;
  for (const { item, file } of journal.files) {
    const named = opened.manifest.items.find((i) => i.name === item);
    const stat = await fs.stat(path.join(dir, file)).catch(() => undefined);
    if (named?.file !== file || stat?.size !== named.sizeBytes) {
      throw new CofferError("INVALID_INPUT", `${subject}: item ${item} must name the merged ${file}, of its size`);
    }
  }
}

/** Undoes a prepared merge on the provider's word (it could not compose the rewritten manifests). */
export async function abortMerge(req: Pick<MergeRequest, "setDir" | "from" | "into">): Promise<void> {
  const journal = await readJournal(req.setDir);
  if (journal?.state === "prepared" && journal.from === req.from && journal.into === req.into) {
    await rollBack(req.setDir, journal);
  }
}
