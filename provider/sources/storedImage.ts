/**
 * What every agent kind keeps: one backup image (qcow2, or qcow2 in LUKS) in the set's folder,
 * named by the item's `file`. Its kinds differ in how the image is written, not in how it is
 * verified, removed or restored, so they share this.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import type { IntegrityCheck } from "../agent/backupSet";
import { backupImageOpts, checkImage, fileSha256, restoreImage, sourceImageOpts, streamSha256 } from "../agent/image";
import { BrokenChain, chainBases, checkBaseFiles } from "../agent/chain";
import { CofferError, isCofferError } from "../common/errors";
import type { ItemProblem, RemoveContext, RestoreContext, RestoreTarget, StoredItem, VerifyContext } from "./kind";

/**
 * Per item: the file's size and SHA-256 (catches bit rot without the key); "metadata" adds
 * `qemu-img check`; "full" recomputes the SHA-256 of the decrypted guest stream and compares it
 * with the one recorded at backup time.
 */
export async function verifyStoredImages(
  items: StoredItem<unknown>[],
  level: IntegrityCheck,
  ctx: VerifyContext,
): Promise<ItemProblem[]> {
  const problems: ItemProblem[] = [];
  for (const item of items) {
    const failed = (message: string) => problems.push({ item: item.name, status: "failed", message });
    const file = path.join(ctx.setDir, item.file);
    const stat = await fs.stat(file).catch(() => undefined);
    if (!stat) {
      problems.push({ item: item.name, status: "missing", message: `item ${item.name}: ${item.file} is missing` });
      continue;
    }
    if (stat.size !== item.sizeBytes) {
      const says = `the manifest says ${item.sizeBytes} (truncated or changed)`;
      failed(`item ${item.name}: ${item.file} is ${stat.size} bytes, ${says}`);
      continue;
    }
    if ((await fileSha256(file)) !== item.fileSha256) {
      failed(`item ${item.name}: ${item.file} has changed since the backup (its SHA-256 differs)`);
      continue;
    }
    const key = item.encrypted ? ctx.key : undefined;
    const subject = `item ${item.name}`;
    try {
      // A link is checked as far as its chain goes: its bases' manifests, and their files are there whole
      // in size (their hashes are their own points' to check).
      const found = await chainBases(ctx.setDir, item.chain, subject);
      await checkBaseFiles(found, subject, false);
      const bases = found.map((b) => b.file);
      if (level !== "none") await checkImage(file, item.encrypted, key, subject);
      if (level === "full") {
        const onProgress = (percent: number) => ctx.progress?.(item.name, percent);
        const read = { totalBytes: item.virtualSize, onProgress };
        const opts = backupImageOpts(file, item.encrypted, bases);
        const stream = await streamSha256(opts, key, subject, ctx.signal, read);
        if (stream !== item.streamSha256) failed(`item ${item.name}: the guest data differs from what was backed up`);
      }
    } catch (error) {
      if (error instanceof BrokenChain && error.status === "missing") {
        problems.push({ item: item.name, status: "missing", message: error.shortMessage });
      } else failed(isCofferError(error) ? error.shortMessage : `item ${item.name}: ${(error as Error).message}`);
    }
  }
  return problems;
}

export async function removeStoredImages(items: StoredItem<unknown>[], ctx: RemoveContext): Promise<void> {
  for (const item of items) await fs.rm(path.join(ctx.setDir, item.file), { force: true });
}

/** Writes the item's guest data to `to`, and checks what was written is what was backed up. */
export async function restoreStoredImage(
  item: StoredItem<unknown>,
  to: RestoreTarget,
  ctx: RestoreContext,
): Promise<void> {
  const file = path.join(ctx.setDir, item.file);
  const step = ctx.step ?? ((_label, _total, work) => work());
  const read = (totalBytes: number) => (onProgress?: (percent: number) => void) =>
    onProgress ? { totalBytes, onProgress } : undefined;
  const fileSha = await step(`check ${item.file}`, item.sizeBytes, (onProgress) =>
    fileSha256(file, read(item.sizeBytes)(onProgress)),
  );
  if (fileSha !== item.fileSha256)
    throw new CofferError("VERIFY_FAILED", `${item.file} has changed since the backup: restore from another set`);
  // A base changed since shows in the restored data's hash below; a missing one is named here, first.
  const found = await chainBases(ctx.setDir, item.chain, `item ${item.name}`);
  await checkBaseFiles(found, `item ${item.name}`, false);
  const bases = found.map((b) => b.file);
  await step(`restore ${item.name}`, item.virtualSize, (onProgress) =>
    restoreImage({
      file,
      bases,
      encrypted: item.encrypted,
      key: ctx.key,
      to: to.file,
      format: to.format,
      subject: `item ${item.name}`,
      onProgress,
    }),
  );
  const written = sourceImageOpts({ disk: to.file, format: to.format, backing: [] });
  const restored = await step(`check restored ${item.name}`, item.virtualSize, (onProgress) =>
    streamSha256(written, undefined, `restored ${item.name}`, undefined, read(item.virtualSize)(onProgress)),
  );
  if (restored !== item.streamSha256)
    throw new CofferError("VERIFY_FAILED", `the restored data of ${item.name} differs from what was backed up`);
}

/**
 * The agent's side of a kind whose backups Pulumi's process takes through a cloud's API: it takes
 * none itself, and what the target holds of it (a copy) is a stored image like any other.
 */
export function storedCopiesOf(label: string) {
  return {
    async backup(): Promise<never> {
      throw new CofferError(
        "INVALID_INPUT",
        `${label} is backed up through the cloud's API from Pulumi's process, not by an agent`,
      );
    },
    verify: verifyStoredImages,
    remove: removeStoredImages,
    restore: restoreStoredImage,
  };
}
