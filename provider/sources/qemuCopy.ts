/**
 * A disk copied by a QEMU process (a running VM's, or a qemu-storage-daemon over a stopped disk):
 * a blockdev-backup job into a new backup image, and for an incremental source the dirty bitmaps of
 * its chain (provider/agent/chainLink.ts).
 */
import type { ChainRequest } from "../agent/chainLink";
import { createEmptyBackup } from "../agent/image";
import { QmpClient, SourceNode, backupRunningVm, removeBitmaps } from "../agent/qmp";
import type { BackedUp, BackupContext } from "./kind";

/** How a chained backup of `disk` goes: a link on `base` copying what its bitmap marks, or a full one and why. */
export interface LinkDecision {
  /** The bitmap to start with the copy; absent when the disk can keep none. */
  start?: string;
  base?: NonNullable<ChainRequest["base"]>;
  fullBecause?: string;
}

/** Never a link on a bitmap Coffer cannot trust: a missing, inconsistent or idle one makes a full backup. */
export function linkDecision(
  chain: ChainRequest,
  disk: Pick<SourceNode, "driver" | "bitmaps" | "virtualSize">,
): LinkDecision {
  if (disk.driver !== "qcow2") {
    return {
      fullBecause: `the disk is ${disk.driver}: only a qcow2 disk keeps a dirty bitmap, so its backups are full`,
    };
  }
  const { base } = chain;
  if (!base) return { start: chain.bitmap, fullBecause: chain.fullBecause ?? "its chain starts here" };
  const bitmap = disk.bitmaps.find((b) => b.name === base.bitmap);
  const its = `the dirty bitmap of point ${base.pointId}`;
  const unusable =
    disk.virtualSize !== base.virtualSize
      ? `the disk's size changed since point ${base.pointId} (${base.virtualSize} to ${disk.virtualSize} bytes)`
      : !bitmap
        ? `${its} is not on the disk (its QEMU was restarted before saving it, or it was removed)`
        : bitmap.inconsistent
          ? `${its} is inconsistent: its QEMU stopped without saving it (killed or crashed), so it may miss writes`
          : !bitmap.recording
            ? `${its} is not recording writes`
            : bitmap.busy
              ? `${its} is in use by another job`
              : undefined;
  return unusable ? { start: chain.bitmap, fullBecause: unusable } : { start: chain.bitmap, base };
}

/**
 * Copies `source` into `ctx.partial`: in full, or (a chain request) as a link on the base's bitmap
 * where linkDecision trusts it. First the set's bitmaps that no next point can use go (they only slow
 * writes): all but the newest good point's (`keep`), and any QEMU can't vouch for. Should this point
 * fail, the next still finds that one.
 */
export async function copyThroughQemu(
  qmp: QmpClient,
  source: SourceNode,
  ctx: BackupContext,
): Promise<Pick<BackedUp<unknown>, "chain">> {
  const link = ctx.chain && linkDecision(ctx.chain, source);
  if (ctx.chain && link?.start) {
    const { bitmapPrefix, keep } = ctx.chain;
    const stale = source.bitmaps.filter(
      (b) => b.name.startsWith(bitmapPrefix) && (b.name !== keep || b.inconsistent) && b.name !== link.base?.bitmap,
    );
    await removeBitmaps(qmp, source.node, [...new Set(stale.map((b) => b.name))]);
  }
  await createEmptyBackup(ctx.partial, source.virtualSize, ctx.format.compression, ctx.key, ctx.subject);
  await backupRunningVm({
    qmp,
    sourceNode: source.node,
    target: ctx.partial,
    encrypted: ctx.format.encrypted,
    passphrase: ctx.key?.value,
    compression: ctx.format.compression,
    bandwidthLimitMiBps: ctx.bandwidthLimitMiBps,
    subject: ctx.subject,
    signal: ctx.signal,
    onProgress: ctx.onProgress,
    ...(link?.start ? { bitmaps: { start: link.start, since: link.base?.bitmap } } : {}),
  });
  if (!ctx.chain || !link) return {};
  return { chain: { bitmap: link.start, base: link.base, fullBecause: link.fullBecause } };
}
