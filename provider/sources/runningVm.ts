import { z } from "zod";
import { createEmptyBackup } from "../agent/image";
import { QmpClient, backupRunningVm, findSourceNode, sweepStale } from "../agent/qmp";
import { removeStoredImages, restoreStoredImage, verifyStoredImages } from "./storedImage";
import { SourceKind, SourceRules, absolutePath, kindInput } from "./kind";

/** A running VM's disk: a point-in-time copy made by its QEMU (blockdev-backup over QMP). */
export interface RunningVmInput {
  qmpSocket: string;
  /** The VM's disk: a qdev id ("vda"), a BlockBackend name, or a node name. */
  device: string;
}

const fields = {
  qmpSocket: absolutePath("qmpSocket").optional(),
  device: z.string().min(1, { message: 'device names the VM\'s disk, e.g. "vda"' }).optional(),
};

const rules: SourceRules = (source, ctx) => {
  if (source.qmpSocket === undefined || source.device === undefined) {
    const message = "a running VM's source needs both qmpSocket and device";
    ctx.addIssue({ code: "custom", path: [source.qmpSocket === undefined ? "qmpSocket" : "device"], message });
  }
};

const item = z.object({ kind: z.literal("qmp"), socket: z.string(), device: z.string() });
export type RunningVmItem = z.output<typeof item>;

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
      });
      // A running VM's disk moves on: there is nothing to compare the copy with.
      return {
        source: { kind: "qmp", socket: input.qmpSocket, device: input.device },
        virtualSize: source.virtualSize,
      };
    } finally {
      qmp.close();
    }
  },
  verify: verifyStoredImages,
  remove: removeStoredImages,
  restore: restoreStoredImage,
};
