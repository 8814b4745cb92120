import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { readFileIfExists, removeEmptyDirs, writeFileAtomic } from "../common/atomicFile";
import { CofferError, isCofferError } from "../common/errors";
import {
  BACKUP_FILE,
  Compression,
  StoredFormat,
  backupFileName,
  backupImageOpts,
  checkImage,
  fileSha256,
  streamSha256,
} from "./image";
import type { SigningPublicKey } from "../common/signingKey";
import { BaseFile, BrokenChain, chainBases, checkBaseFiles } from "./chain";
import type { ChainRequest, ItemChain } from "./chainLink";
import {
  Manifest,
  ManifestItem,
  misplacement,
  openManifest,
  pointSecret,
  readManifest,
  renderSignedManifest,
  signatureProblem,
} from "./manifest";
import { SetOwner, clearOwners, folderOwners, markOwner } from "./setOwner";
import { withSecretFd } from "./tempFiles";
import { SourceFields, chooseSourceKind, removeItems, verifyItems } from "../sources/registry";
import { partialName, pidAlive, run } from "./tools";
import { MANIFEST_FILE, OWNER_PATTERN, PARTIAL_PATTERN } from "../targets/layout";

export type IntegrityCheck = "none" | "metadata" | "full";
/** The user's source object without name and host: its fields choose its kind (provider/sources/). */
export type Source = SourceFields;

export interface ItemRequest {
  /** `<target>/sets/<zone>`: the folder of every set of one zone. */
  zoneDir: string;
  setId: string;
  /** The point's folder in the set's; absent from providers before histories (the set's folder is the point's). */
  pointId?: string;
  name: string;
  source: Source;
  compression: Compression;
  encrypted: boolean;
  bandwidthLimitMiBps: number;
  integrityCheck: IntegrityCheck;
  passphrase?: string;
  /** `passphrase` is the point's own random key: its LUKS keyslot needs no stretching. */
  randomKey?: boolean;
  /** The provider process taking the set (older providers send none). */
  owner?: SetOwner;
  /** An incremental source: a link on the previous point's backup where its disk allows, else a full one. */
  chain?: ChainRequest;
}

export interface Events {
  progress?(item: string, percent: number): void;
  signal?: AbortSignal;
}

/**
 * Backs up one source into its set's folder. The backup is written under a name no reader takes
 * for a backup (`.<file>.partial-<host>-<pid>-<random>`), verified at the policy's level, and
 * renamed into place only then; on any failure the partial file is removed.
 */
export async function backupItem(req: ItemRequest, events: Events = {}): Promise<ManifestItem> {
  const subject = `source ${req.name}`;
  if (req.encrypted && !req.passphrase)
    throw new CofferError("INVALID_INPUT", `${subject}: encryption is on but no passphrase reached the agent`);
  const { kind, input } = chooseSourceKind(req.source, subject);
  const setDir = path.join(req.zoneDir, req.setId, req.pointId ?? "");
  await fs.mkdir(setDir, { recursive: true, mode: 0o700 });
  if (req.owner) await markOwner(setDir, req.owner);
  await sweepLeftovers(req.zoneDir, path.relative(req.zoneDir, setDir));
  const format: StoredFormat = { compression: req.compression, encrypted: req.encrypted };
  const finalFile = path.join(setDir, backupFileName(req.name, format));
  if (
    await fs.access(finalFile).then(
      () => true,
      (e: NodeJS.ErrnoException) => e.code !== "ENOENT",
    )
  ) {
    throw new CofferError("IO_FAILED", `${subject}: ${finalFile} already exists; a set never overwrites a backup`);
  }
  const partial = path.join(setDir, partialName(path.basename(finalFile)));
  const startedAt = new Date().toISOString();
  const onProgress = (percent: number) => events.progress?.(req.name, percent);
  try {
    // A link's base must be whole before anything builds on it: a changed base would pass into every later link.
    const chain = await checkedChain(req.chain, setDir, subject);
    return await withSecretFd(req.passphrase ?? "", async (passphraseFd) => {
      const key = req.encrypted ? { ...passphraseFd, random: req.randomKey } : undefined;
      const ctx = {
        partial,
        format,
        key,
        bandwidthLimitMiBps: req.bandwidthLimitMiBps,
        subject,
        signal: events.signal,
        onProgress,
        chain: chain?.request,
      };
      const backedUp = await kind.backup(input, ctx);
      const { source: manifestSource, virtualSize, sourceSha256 } = backedUp;
      if (req.integrityCheck !== "none") await checkImage(partial, req.encrypted, key, subject);
      const linked = backedUp.chain;
      const itemChain: ItemChain | undefined = linked && {
        ...(linked.bitmap ? { bitmap: linked.bitmap } : {}),
        ...(linked.base ? { base: baseOf(linked.base) } : {}),
        depth: linked.base ? linked.base.depth + 1 : 0,
        ...(linked.fullBecause ? { fullBecause: linked.fullBecause } : {}),
      };
      // A link is read over its bases: its hash is the disk's as it was at this point.
      const bases = linked?.base ? chain!.bases.map((b) => b.file) : [];
      // The read-back, the file's own hash and (for "full") the source's run side by side: three reads, no waiting.
      const [streamHash, fileHash, expected] = await Promise.all([
        streamSha256(backupImageOpts(partial, req.encrypted, bases), key, subject, events.signal),
        fileSha256(partial),
        req.integrityCheck === "full" && sourceSha256 ? sourceSha256() : undefined,
      ]);
      // A source that still holds what was copied (a stopped VM's disk): "full" proves the copy equals it.
      if (expected !== undefined) {
        if (expected !== streamHash) {
          throw new CofferError(
            "VERIFY_FAILED",
            `${subject}: the backup's data differs from the disk's (sha256 ${streamHash.slice(0, 12)} vs ${expected.slice(0, 12)}); the disk may have changed during the backup`,
          );
        }
      }
      const sizeBytes = (await fs.stat(partial)).size;
      // The agent's umask makes it 0600 from the start; this holds for callers without it too.
      await fs.chmod(partial, 0o600);
      await fs.rename(partial, finalFile);
      return {
        name: req.name,
        host: os.hostname(),
        source: manifestSource,
        file: path.basename(finalFile),
        format: req.encrypted ? "qcow2-in-luks" : "qcow2",
        compression: req.compression,
        encrypted: req.encrypted,
        virtualSize,
        sizeBytes,
        streamSha256: streamHash,
        fileSha256: fileHash,
        verifiedAtBackup: req.integrityCheck,
        startedAt,
        finishedAt: new Date().toISOString(),
        ...(itemChain ? { chain: itemChain } : {}),
      };
    });
  } catch (error) {
    throw isCofferError(error)
      ? error
      : new CofferError("IO_FAILED", `${subject}: ${(error as Error).message}`, {
          cause: error,
          secrets: req.passphrase ? [req.passphrase] : [],
        });
  } finally {
    await fs.rm(partial, { force: true });
  }
}

/**
 * `request` with its base's backups found and checked (each file's size and SHA-256 against its
 * point's manifest); a base that fails makes the backup a full one that says why.
 */
async function checkedChain(
  request: ChainRequest | undefined,
  setDir: string,
  subject: string,
): Promise<{ request: ChainRequest; bases: BaseFile[] } | undefined> {
  if (!request?.base) return request && { request, bases: [] };
  const { bitmap: _bitmap, depth, virtualSize: _size, ...base } = request.base;
  try {
    // The base itself is the nearest link of the chain the new one extends.
    const bases = await chainBases(setDir, { base, depth: depth + 1 }, subject);
    await checkBaseFiles(bases, subject, true);
    return { request, bases };
  } catch (error) {
    if (!(error instanceof BrokenChain)) throw error;
    const { base: _unusable, ...full } = request;
    return { request: { ...full, fullBecause: error.shortMessage.replace(`${subject}: `, "") }, bases: [] };
  }
}

/** What a manifest item records of the base a link was built on. */
const baseOf = ({ pointId, item, file, manifestSha256 }: NonNullable<ChainRequest["base"]>) => ({
  pointId,
  item,
  file,
  manifestSha256,
});

/**
 * Removes what killed runs on this host left under the zone's sets: partial files whose process
 * is gone; and folders without a manifest whose owner (the provider that was taking the set) is
 * gone, with the backups finished in them, since no manifest will ever name those. A folder
 * without an owner marker is left alone (a run of an older Coffer, maybe still going), and so is
 * one whose owner is on another host (it can't be checked from here), and the folder `working` on
 * (relative to the zone's: `<set>` or `<set>/<point>`).
 * Returns what it removed.
 */
export async function sweepLeftovers(zoneDir: string, working?: string): Promise<string[]> {
  const removed: string[] = [];
  const host = os.hostname();
  const remove = async (file: string) => {
    await fs.rm(file, { force: true });
    removed.push(file);
  };
  // A set's own folder (sets taken before histories) and its points' folders.
  const folders: string[] = [];
  for (const set of await fs.readdir(zoneDir).catch(() => [] as string[])) {
    folders.push(set);
    const inSet = await fs.readdir(path.join(zoneDir, set), { withFileTypes: true }).catch(() => []);
    folders.push(...inSet.filter((e) => e.isDirectory()).map((e) => path.join(set, e.name)));
  }
  for (const folder of folders) {
    const setDir = path.join(zoneDir, folder);
    const entries = await fs.readdir(setDir).catch(() => undefined);
    if (!entries) continue;
    for (const entry of entries) {
      const match = PARTIAL_PATTERN.exec(entry);
      if (match && match[2] === host && !pidAlive(Number(match[3]))) await remove(path.join(setDir, entry));
    }
    if (folder === working || (await folderOwners(setDir, entries)) !== "gone") continue;
    if (entries.includes(MANIFEST_FILE)) {
      // A crash between writing the manifest and clearing the marker: the set is whole.
      for (const owner of entries.filter((e) => OWNER_PATTERN.test(e))) await remove(path.join(setDir, owner));
      continue;
    }
    for (const entry of await fs.readdir(setDir)) {
      const coffers = BACKUP_FILE.test(entry) || OWNER_PATTERN.test(entry) || PARTIAL_PATTERN.test(entry);
      if (coffers) await remove(path.join(setDir, entry));
    }
    await fs.rmdir(setDir).catch(() => undefined);
  }
  return removed;
}

export async function qemuVersion(): Promise<string> {
  const out = await run("qemu-img", ["--version"], { subject: "qemu-img" });
  return out.split("\n")[0].replace(/^qemu-img version /, "");
}

/**
 * Writes the signed manifest last: a set without one is never taken for a good set. `signature`:
 * the Ed25519 signature the provider made (signManifest), written beside the HMAC.
 */
export async function writeManifest(
  setDir: string,
  manifest: Manifest,
  secret: string,
  signature?: string,
): Promise<string> {
  const file = path.join(setDir, MANIFEST_FILE);
  await writeFileAtomic(file, await renderSignedManifest(manifest, secret, signature));
  await clearOwners(setDir);
  return file;
}

export interface Verification {
  status: "ok" | "failed" | "missing";
  checkedAt: string;
  level: IntegrityCheck;
  failures: string[];
}

/**
 * What a manifest is checked with: the secret of its HMAC (`manifestSecret`, or the one of
 * `passphrase` and `manifestKey` its key source names) and, for a signed point, the public key
 * it must be signed with. With a public key and no secret, the HMAC is not checked.
 */
export interface VerifyKeys {
  manifestSecret?: string;
  passphrase?: string;
  manifestKey?: string;
  publicKey?: SigningPublicKey;
}

/** A set's verification, with what it covered in words (`coffer verify` prints them). */
export type SetVerification = Verification & { manifest?: Manifest; checked: string[]; notChecked: string[] };

/** What checking a point's manifest found: the manifest to trust, or why not, and what was covered. */
export type ManifestCheck = { checked: string[]; notChecked: string[] } & (
  | {
      ok: true;
      manifest: Manifest;
      keyName: string;
      /** The key of the point's backups (a wrapped point's own key, unwrapped), when one was given. */
      backupsKey?: string;
    }
  | { ok: false; status: "missing" | "failed"; failures: string[]; manifest?: Manifest }
);

/**
 * Checks the manifest in `setDir` before anything of it is trusted: its signature (given a public
 * key), its HMAC (with the secret its key source names) and its place (its set's, point's and zone's
 * folder). With a public key and no secret, the HMAC is not checked.
 */
export async function checkManifest(setDir: string, secrets: VerifyKeys): Promise<ManifestCheck> {
  const checked: string[] = [];
  const notChecked: string[] = [];
  const text = await readFileIfExists(path.join(setDir, MANIFEST_FILE)).catch(() => undefined);
  if (text === undefined) {
    const failures = [`manifest: ${path.join(setDir, MANIFEST_FILE)} is missing`];
    return { ok: false, status: "missing", failures, checked, notChecked };
  }
  const fail = (failures: string[], manifest?: Manifest): ManifestCheck => {
    return { ok: false, status: "failed", failures, manifest, checked, notChecked };
  };
  // A set's points may be signed with different keys: the manifest says which one it needs.
  const read = readManifest(text);
  if (!read.ok) return fail([read.problem]);
  const { manifest } = read;
  const keyName = {
    passphrase: "the passphrase",
    "manifest-key": "the manifest key",
    recipients: "the point's key (a recipient's private key opens it)",
  }[manifest.keySource];
  // A point sealed for recipients has one key: its backups' passphrase and its HMAC's secret.
  const needed = manifest.keySource === "manifest-key" ? secrets.manifestKey : secrets.passphrase;
  let secret = secrets.manifestSecret ?? needed;
  let backupsKey = secrets.passphrase;
  const failures: string[] = [];
  // A wrapped point's own key is both (a given manifestSecret is that key already).
  const unwraps = manifest.wrappedKey && secrets.manifestSecret === undefined && needed !== undefined;
  const pointKey = unwraps ? await pointSecret(manifest, needed) : undefined;
  if (unwraps) {
    secret = backupsKey = pointKey;
    const why = "it is not this set's passphrase, or the manifest was changed";
    if (!pointKey) failures.push(`manifest: the passphrase does not unwrap the point's key: ${why}`);
  }
  if (secrets.publicKey) {
    const problem = signatureProblem(text, secrets.publicKey);
    if (problem) failures.push(problem.message);
    else checked.push(`the manifest's Ed25519 signature, with key ${secrets.publicKey.fingerprint}`);
  } else if (manifest.signing) {
    notChecked.push(`the manifest's Ed25519 signature (key ${manifest.signing.keyFingerprint}): give its public key`);
  }
  // Without a secret the public key alone vouches for the manifest; with neither, nothing does.
  if (unwraps && !pointKey) {
    notChecked.push(`the manifest's HMAC: it needs the point's key, which ${keyName} wraps`);
  } else if (secret !== undefined || !secrets.publicKey) {
    const opened = await openManifest(text, secret ?? "");
    if (opened.ok && opened.authentic) checked.push(`the manifest's HMAC, with ${keyName}`);
    else failures.push("manifest: its HMAC does not match: it was changed, or the key is not this set's");
  } else {
    notChecked.push(`the manifest's HMAC: it needs ${keyName}`);
  }
  if (failures.length > 0) return fail(failures, manifest);
  const misplaced = misplacement(manifest, setDir);
  if (misplaced) return fail([misplaced], manifest);
  checked.push("the manifest's place: its set's, point's and zone's folder");
  return { ok: true, manifest, keyName, checked, notChecked, ...(backupsKey ? { backupsKey } : {}) };
}

/**
 * Re-verifies a set: the manifest (checkManifest), then its items, each by its source kind (for a
 * backup image in the set's folder: see provider/sources/storedImage.ts). An encrypted set's items
 * are checked at level "none" without the passphrase.
 */
export async function verifySet(
  setDir: string,
  level: IntegrityCheck,
  secrets: VerifyKeys,
  events: Events = {},
): Promise<SetVerification> {
  const checkedAt = new Date().toISOString();
  const opened = await checkManifest(setDir, secrets);
  const { checked, notChecked } = opened;
  if (!opened.ok) {
    const { status, failures, manifest } = opened;
    notChecked.push(status === "missing" ? "everything: no manifest" : "the items: the manifest did not pass");
    return { status, checkedAt, level, failures, manifest, checked, notChecked };
  }
  const { manifest, keyName, backupsKey } = opened;
  const itemLevel = manifest.policy.encrypted && !backupsKey ? "none" : level;
  const problems = await withSecretFd(backupsKey ?? "", (key) =>
    verifyItems(manifest.items, itemLevel, { setDir, key, signal: events.signal, progress: events.progress }),
  );
  checked.push("each item's stored file: its size and SHA-256");
  if (itemLevel !== "none") checked.push("each item's qcow2 metadata (qemu-img check)");
  if (itemLevel === "full") checked.push("each item's guest data: its SHA-256");
  if (itemLevel !== level) {
    notChecked.push(`each item's qcow2 metadata and guest data: the backups are encrypted, and that needs ${keyName}`);
  } else if (level !== "full") notChecked.push("each item's guest data: that is a full check");
  const failed = problems.filter((p) => p.status === "failed").map((p) => p.message);
  const missing = problems.filter((p) => p.status === "missing").map((p) => p.message);
  const status = failed.length > 0 ? "failed" : missing.length > 0 ? "missing" : "ok";
  return { status, checkedAt, level: itemLevel, failures: [...failed, ...missing], manifest, checked, notChecked };
}

/**
 * Deletes a set: the backups its manifest names (each by its source kind), the files named by
 * `knownFiles` (the resource's outputs, for when the manifest is gone), partial files, owner
 * markers, the manifest last, then the folders up to (not including) `stopAt` while they are
 * empty. Nothing else.
 */
export async function deleteSet(setDir: string, stopAt: string, knownFiles: readonly string[] = []): Promise<void> {
  const text = await readFileIfExists(path.join(setDir, MANIFEST_FILE)).catch(() => undefined);
  const opened = text === undefined ? undefined : readManifest(text);
  if (opened?.ok) await removeItems(opened.manifest.items, { setDir });
  const named = knownFiles.map((f) => path.basename(f));
  const entries = await fs.readdir(setDir).catch(() => [] as string[]);
  for (const entry of entries) {
    const coffers = named.includes(entry) || PARTIAL_PATTERN.test(entry) || OWNER_PATTERN.test(entry);
    if (coffers) await fs.rm(path.join(setDir, entry), { force: true });
  }
  await fs.rm(path.join(setDir, MANIFEST_FILE), { force: true });
  await removeEmptyDirs(setDir, stopAt);
}
