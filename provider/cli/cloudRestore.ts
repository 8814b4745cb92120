/**
 * `coffer restore --to-cinder` / `--to-glance` (and `--from-copy`): an item of a set into the cloud,
 * its recorded metadata applied only from an authentic manifest; and the volume key an encrypted
 * Cinder volume's copy needs, for this and for a restore to a file.
 */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CofferError } from "../common/errors";
import { ManifestItem, misplacement, openManifest, signatureProblem } from "../agent/manifest";
import { SigningPublicKey } from "../common/signingKey";
import { withSecretFd } from "../agent/tempFiles";
import { cloudDeps, openCloudFrom } from "../openstack";
import { restoreCopyToCinder } from "../sources/cinderCopyRestore";
import { preflight, restoreToCinder } from "../sources/cinderRestore";
import { restoreToGlance } from "../sources/glanceRestore";
import { restorerOf } from "../sources/registry";
import { KeyOptions, OpenedSet, UsageError, openSet, readPublicKey, secretFrom } from "./common";
import { progressOn, withProgress } from "./progress";

export interface CloudRestoreOptions extends KeyOptions {
  manifest?: string;
  item?: string;
  quiet?: boolean;
  toCinder?: boolean;
  toGlance?: boolean;
  fromCopy?: boolean;
  name?: string;
  recreateType?: boolean;
  preflight?: boolean;
  withoutMetadata?: boolean;
  publicKey?: string;
  volumeKeyFile?: string;
}

/**
 * Why the manifest of `set` is not authentic, or undefined when its HMAC (with the set's key) or
 * its signature (with `publicKey`) checks out; "unchecked" when there was nothing to check it with.
 */
export async function authenticity(set: OpenedSet, publicKey?: SigningPublicKey): Promise<string | undefined> {
  if (set.manifestSecret) {
    const opened = await openManifest(set.text, set.manifestSecret);
    if (!opened.ok) return opened.problem;
    if (!opened.authentic) return "its HMAC does not match: it was changed, or this is not the set's key";
  } else if (publicKey) {
    const problem = signatureProblem(set.text, publicKey);
    if (problem) return problem.message;
  } else {
    return "unchecked";
  }
  return misplacement(set.manifest, set.setDir);
}

/**
 * `restore --to-cinder` (Cinder's backup, or with --from-copy the copy in the target, into a new volume) and
 * `restore --to-glance` (the stored image into a new image): metadata only from an authentic manifest.
 */
export async function restoreToCloud(values: CloudRestoreOptions): Promise<number> {
  const publicKey = values.publicKey === undefined ? undefined : await readPublicKey(values.publicKey);
  const set = await openSet(values, true);
  const option = values.toCinder ? "--to-cinder" : "--to-glance";
  if (!values.item) throw new UsageError(`restore ${option} needs --item`);
  const all = [...set.manifest.items, ...(set.manifest.cloudItems ?? [])];
  const found = all.find((i) => i.name === values.item);
  if (!found)
    throw new UsageError(`no item "${values.item}" in this set (it has: ${all.map((i) => i.name).join(", ")})`);
  const wanted = values.toCinder ? "cinderVolume" : "glanceImage";
  if (found.source.kind !== wanted) {
    const restores = values.toCinder ? "Cinder volumes" : "Glance images";
    throw new UsageError(`item ${found.name} is a ${found.source.kind} source: ${option} restores ${restores}`);
  }
  const problem = await authenticity(set, publicKey);
  if (problem === "unchecked" && !values.withoutMetadata) {
    throw new UsageError(
      "the manifest must be checked before its metadata is applied: give the set's key (--passphrase-file or " +
        "--manifest-key-file) or the policy's --public-key; or --without-metadata to restore the data alone",
    );
  }
  if (problem && problem !== "unchecked" && !values.withoutMetadata) {
    const fix = "its metadata is refused; --without-metadata restores the data alone, without it";
    throw new CofferError("MANIFEST_TAMPERED", `the manifest failed its check (${problem}): ${fix}`);
  }
  const say = (line: string) => values.quiet || process.stderr.write(`coffer: ${line}\n`);
  if (problem && problem !== "unchecked") say(`the manifest failed its check (${problem}): restoring the data alone`);
  const deps = cloudDeps();
  const cloud = await openCloudFrom({ env: process.env }, deps);
  const applyMetadata = problem === undefined;
  if (found.source.kind === "glanceImage") {
    const stored = set.manifest.items.find((i) => i.name === found.name)!;
    const image = found.source;
    const restored = await viaLocalFile(set, stored, values.quiet, (file) =>
      restoreToGlance(image, file, cloud, { name: values.name, applyMetadata, waits: deps, progress: say }),
    );
    process.stdout.write(JSON.stringify({ restored: found.name, ...restored }) + "\n");
    return 0;
  }
  if (found.source.kind !== "cinderVolume") throw new UsageError(`item ${found.name} can't go to the cloud`);
  const item = found.source;
  if (values.fromCopy) {
    const stored = set.manifest.items.find((i) => i.name === found.name);
    if (!stored)
      throw new UsageError(`item ${found.name} has no copy in the target (it was taken without copyToTarget)`);
    const volumeKeyHex = item.volume.encrypted
      ? await secretFrom(values.volumeKeyFile, false, "COFFER_VOLUME_KEY")
      : undefined;
    if (item.volume.encrypted && !volumeKeyHex) throw missingVolumeKey(stored);
    const restored = await viaLocalFile(set, stored, values.quiet, (file) =>
      restoreCopyToCinder(item, file, cloud, {
        name: values.name,
        volumeKeyHex,
        applyMetadata,
        waits: deps,
        progress: say,
      }),
    );
    process.stdout.write(JSON.stringify({ restored: found.name, ...restored }) + "\n");
    return 0;
  }
  if (values.preflight) {
    const result = await preflight(item, cloud);
    process.stdout.write(JSON.stringify({ item: found.name, ok: result.ok, checks: result.checks }, null, 2) + "\n");
    return result.ok ? 0 : 1;
  }
  const restored = await restoreToCinder(item, cloud, {
    name: values.name,
    recreateType: values.recreateType ?? false,
    applyMetadata,
    waits: deps,
    progress: say,
  });
  process.stdout.write(JSON.stringify({ restored: found.name, ...restored }) + "\n");
  return 0;
}

/**
 * Restores `stored`'s data into a file (raw unless `format` says) in a temporary folder, checked
 * against the manifest, runs `work` on it, and removes it whatever happens.
 */
export async function viaLocalFile<T>(
  set: OpenedSet,
  stored: ManifestItem,
  quiet: boolean | undefined,
  work: (file: string) => Promise<T>,
  format: "raw" | "qcow2" = "raw",
) {
  if (stored.encrypted && !set.passphrase)
    throw new UsageError(
      set.manifest.keySource === "recipients"
        ? "this point is sealed for recipients: give a recipient's private key with --key <private.pem>"
        : "this set is encrypted: give its passphrase with --passphrase-file, --passphrase-stdin or COFFER_PASSPHRASE",
    );
  const restoreItem = restorerOf(stored)!;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-restore-"));
  const file = path.join(dir, stored.name);
  const progressOf = progressOn(quiet);
  try {
    const step = <T>(label: string, totalBytes: number, run: (onProgress?: (p: number) => void) => Promise<T>) =>
      withProgress(progressOf(label, totalBytes), run);
    await withSecretFd(set.passphrase ?? "", (key) => restoreItem({ file, format }, { setDir: set.setDir, key, step }));
    return await work(file);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * For the copy of an encrypted Cinder volume (a LUKS container): the file with its key, or
 * undefined with --keep-luks (the container as it is) and for every other item.
 */
export function luksOf(
  item: ManifestItem,
  values: { keepLuks?: boolean; volumeKeyFile?: string },
): { keyFile?: string } | undefined {
  if (item.source.kind !== "cinderVolume" || !item.source.volume.encrypted || values.keepLuks) return undefined;
  if (values.volumeKeyFile || process.env.COFFER_VOLUME_KEY) return { keyFile: values.volumeKeyFile };
  throw missingVolumeKey(item);
}

/** What to give for an encrypted volume's copy: its key, and how to get it from the escrow. */
function missingVolumeKey(item: ManifestItem): UsageError {
  const escrowed = item.source.kind === "cinderVolume" ? item.source.escrowedKeys?.[0] : undefined;
  const recover = escrowed
    ? `coffer escrow recover --store ${escrowed.store} --id ${escrowed.record} --key <private.pem> --format hex ` +
      "--out key.hex"
    : "its volume's key in hex";
  return new UsageError(
    `item ${item.name} is an encrypted volume's copy (a LUKS container): give its key with --volume-key-file ` +
      `(${recover}) or COFFER_VOLUME_KEY, or --keep-luks to write the container as it is`,
  );
}
