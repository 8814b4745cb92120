import { z } from "zod";
import type { ChainRequest } from "../agent/chainLink";
import { createEmptyBackup } from "../agent/image";
import { QmpClient, SourceNode, backupRunningVm, findSourceNode, removeBitmaps, sweepStale } from "../agent/qmp";
import { removeStoredImages, restoreStoredImage, verifyStoredImages } from "./storedImage";
import { SourceKind, SourceRules, absolutePath, incrementalField, kindInput } from "./kind";

/** A running VM's disk: a point-in-time copy made by its QEMU (blockdev-backup over QMP). */
export interface RunningVmInput {
  qmpSocket: string;
  /** The VM's disk: a qdev id ("vda"), a BlockBackend name, or a node name. */
  device: string;
  /** Copy only what changed since the set's previous point (a qcow2 disk's dirty bitmap). */
  incremental?: boolean;
  /** With `incremental`: every `fullEvery`th backup of a chain is a full one again (bounds restore time). */
  fullEvery?: number;
}

const FULL_EVERY_MESSAGE = "fullEvery must be a whole number of at least 2: a chain's length, its full backup included";

const fields = {
  qmpSocket: absolutePath("qmpSocket").optional(),
  device: z.string().min(1, { message: 'device names the VM\'s disk, e.g. "vda"' }).optional(),
  incremental: incrementalField,
  fullEvery: z
    .number({ error: FULL_EVERY_MESSAGE })
    .int({ message: FULL_EVERY_MESSAGE })
    .min(2, FULL_EVERY_MESSAGE)
    .optional(),
};

const rules: SourceRules = (source, ctx) => {
  if (source.qmpSocket === undefined || source.device === undefined) {
    const message = "a running VM's source needs both qmpSocket and device";
    ctx.addIssue({ code: "custom", path: [source.qmpSocket === undefined ? "qmpSocket" : "device"], message });
  }
  if (source.fullEvery !== undefined && source.incremental !== true) {
    const message = "fullEvery bounds a chain of incremental backups: add incremental: true, or remove fullEvery";
    ctx.addIssue({ code: "custom", path: ["fullEvery"], message });
  }
};

const item = z.object({ kind: z.literal("qmp"), socket: z.string(), device: z.string() });
export type RunningVmItem = z.output<typeof item>;

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

export const runningVmSource: SourceKind<RunningVmInput, RunningVmItem, typeof fields> = {
  kind: "qmp",
  label: "a running VM",
  selectors: ["qmpSocket", "device"],
  fields,
  rules,
  input: kindInput<RunningVmInput>(fields, rules),
  item,
  runsOn: "agent",

  async backup(input, ctx) {
    const qmp = await QmpClient.connect(input.qmpSocket, ctx.subject);
    try {
      await sweepStale(qmp);
      const source = await findSourceNode(qmp, input.device, ctx.subject);
      const link = ctx.chain && linkDecision(ctx.chain, source);
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
      if (ctx.chain && link?.start) {
        // The set's other bitmaps (older points', failed points', untrusted ones) only slow the VM's writes.
        const kept = [link.start, link.base?.bitmap];
        const { bitmapPrefix } = ctx.chain;
        const stale = source.bitmaps.filter((b) => b.name.startsWith(bitmapPrefix) && !kept.includes(b.name));
        await removeBitmaps(qmp, source.node, [...new Set(stale.map((b) => b.name))]);
      }
      // A running VM's disk moves on: there is nothing to compare the copy with.
      return {
        source: { kind: "qmp", socket: input.qmpSocket, device: input.device },
        virtualSize: source.virtualSize,
        ...(link ? { chain: { bitmap: link.start, base: link.base, fullBecause: link.fullBecause } } : {}),
      };
    } finally {
      qmp.close();
    }
  },
  verify: verifyStoredImages,
  remove: removeStoredImages,
  restore: restoreStoredImage,
};
