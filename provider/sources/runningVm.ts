import { z } from "zod";
import { QmpClient, findSourceNode, sweepStale } from "../agent/qmp";
import { copyThroughQemu } from "./qemuCopy";
import { removeStoredImages, restoreStoredImage, verifyStoredImages } from "./storedImage";
import { SourceKind, SourceRules, absolutePath, chainRules, fullEveryField, incrementalField, kindInput } from "./kind";

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

const fields = {
  qmpSocket: absolutePath("qmpSocket").optional(),
  device: z.string().min(1, { message: 'device names the VM\'s disk, e.g. "vda"' }).optional(),
  incremental: incrementalField,
  fullEvery: fullEveryField,
};

const rules: SourceRules = (source, ctx) => {
  if (source.qmpSocket === undefined || source.device === undefined) {
    const message = "a running VM's source needs both qmpSocket and device";
    ctx.addIssue({ code: "custom", path: [source.qmpSocket === undefined ? "qmpSocket" : "device"], message });
  }
  chainRules(source, ctx);
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
      const { chain } = await copyThroughQemu(qmp, source, ctx);
      // A running VM's disk moves on: there is nothing to compare the copy with.
      return {
        source: { kind: "qmp", socket: input.qmpSocket, device: input.device },
        virtualSize: source.virtualSize,
        ...(chain ? { chain } : {}),
      };
    } finally {
      qmp.close();
    }
  },
  async chainStatus(input, subject) {
    const qmp = await QmpClient.connect(input.qmpSocket, subject);
    try {
      const { driver, virtualSize, bitmaps } = await findSourceNode(qmp, input.device, subject);
      return { driver, virtualSize, bitmaps };
    } finally {
      qmp.close();
    }
  },
  verify: verifyStoredImages,
  remove: removeStoredImages,
  restore: restoreStoredImage,
};
