import { z } from "zod";
import { DiskSource, convertDisk, sourceImageOpts, sourceInfo, storedBitmaps, streamSha256 } from "../agent/image";
import { withStorageDaemon } from "../agent/storageDaemon";
import { removeStoredImages, restoreStoredImage, verifyStoredImages } from "./storedImage";
import { SourceKind, SourceRules, absolutePath, chainRules, fullEveryField, incrementalField, kindInput } from "./kind";
import { copyThroughQemu } from "./qemuCopy";

/**
 * A stopped VM's disk file: copied with `qemu-img convert`, reading only the declared files; an
 * incremental qcow2 disk through qemu-storage-daemon, which keeps its dirty bitmaps.
 */
export type DiskInput = DiskSource & { incremental?: boolean; fullEvery?: number };

const FORMAT_MESSAGE = 'format must be "raw" or "qcow2": the disk\'s format, which is never guessed from its bytes';
const BACKING_FILES_MESSAGE = "backingFiles must be a list of absolute paths: the disk's backing chain, nearest first";

const fields = {
  disk: absolutePath("disk").optional(),
  // No default: sources are compared as canonical JSON, and a new default would replace every set.
  format: z.enum(["raw", "qcow2"], { error: FORMAT_MESSAGE }).optional(),
  backingFiles: z.array(absolutePath("each of backingFiles"), { error: BACKING_FILES_MESSAGE }).optional(),
  dataFile: absolutePath("dataFile").optional(),
  incremental: incrementalField,
  fullEvery: fullEveryField,
};

const qcow2Only = { backingFiles: "backing files", dataFile: "an external data file" } as const;

const rules: SourceRules = (source, ctx) => {
  const s = source as Partial<DiskInput>;
  for (const field of ["backingFiles", "dataFile"] as const) {
    if (s[field] !== undefined && s.format !== "qcow2") {
      const message = `${field} needs format: "qcow2": only a qcow2 image has ${qcow2Only[field]}`;
      ctx.addIssue({ code: "custom", path: [field], message });
    }
  }
  if (s.incremental === true && s.format !== "qcow2") {
    const message =
      'incremental needs format: "qcow2": a raw disk keeps no dirty bitmap, so each of its backups is full; ' +
      "remove incremental";
    ctx.addIssue({ code: "custom", path: ["incremental"], message });
  }
  chainRules(source, ctx);
  const files = [s.disk, ...(s.backingFiles ?? []), s.dataFile].filter((f): f is string => f !== undefined);
  const repeated = files.find((f, i) => files.indexOf(f) !== i);
  if (repeated !== undefined) {
    const message = `${repeated} is named twice among disk, backingFiles and dataFile: each is a different file`;
    ctx.addIssue({ code: "custom", path: [repeated === s.dataFile ? "dataFile" : "backingFiles"], message });
  }
};

const item = z.object({
  kind: z.literal("disk"),
  path: z.string(),
  format: z.enum(["raw", "qcow2"]),
  // Declared files the disk read besides itself; absent in older manifests.
  backingFiles: z.array(z.string()).optional(),
  dataFile: z.string().optional(),
});
export type DiskItem = z.output<typeof item>;

export const diskSource: SourceKind<DiskInput, DiskItem, typeof fields> = {
  kind: "disk",
  label: "a stopped VM's disk file",
  selectors: ["disk"],
  fields,
  rules,
  input: kindInput<DiskInput>(fields, rules),
  item,
  runsOn: "agent",

  async backup(input, ctx) {
    const { disk, backingFiles, dataFile } = input;
    const info = await sourceInfo(input, ctx.subject);
    const declared = { ...(backingFiles ? { backingFiles } : {}), ...(dataFile ? { dataFile } : {}) };
    const imageOpts = sourceImageOpts(info.layout);
    const backedUp = {
      source: { kind: "disk" as const, path: disk, format: info.layout.format, ...declared },
      virtualSize: info.virtualSize,
      // A stopped VM's disk still holds what was copied: "full" proves the copy equals it.
      sourceSha256: () => streamSha256(imageOpts, undefined, ctx.subject, ctx.signal),
    };
    if (ctx.chain) {
      // The bitmaps live in the disk: a QEMU opens it to add one with the copy, and saves them as it closes.
      const { chain } = await withStorageDaemon(info.layout, ctx.subject, ctx.signal, (qmp, node) =>
        copyThroughQemu(qmp, node, ctx),
      );
      return { ...backedUp, ...(chain ? { chain } : {}) };
    }
    await convertDisk({
      sourceImageOpts: imageOpts,
      target: ctx.partial,
      format: ctx.format,
      virtualSize: info.virtualSize,
      bandwidthLimitMiBps: ctx.bandwidthLimitMiBps,
      key: ctx.key,
      subject: ctx.subject,
      signal: ctx.signal,
      onProgress: ctx.onProgress,
    });
    return backedUp;
  },
  async chainStatus(input, subject) {
    const info = await sourceInfo(input, subject);
    const { format } = info.layout;
    if (format !== "qcow2") return { driver: format, virtualSize: info.virtualSize, bitmaps: [] };
    return { driver: format, virtualSize: info.virtualSize, bitmaps: await storedBitmaps(info.layout, subject) };
  },
  verify: verifyStoredImages,
  remove: removeStoredImages,
  restore: restoreStoredImage,
};
