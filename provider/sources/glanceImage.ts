/**
 * A Glance image as a source: its data streamed into the policy's target in Coffer's format (its
 * bytes as they are, whatever its disk format), its hash checked against Glance's os_hash_value,
 * and its record (formats, properties, including cinder_encryption_key_id) in the signed manifest.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { CofferError } from "../common/errors";
import { stageImage } from "./glanceStage";
import type { CloudTakeContext, SourceKind, SourceRules } from "./kind";
import { kindInput } from "./kind";
import { removeStaged } from "./staging";
import { storedCopiesOf } from "./storedImage";

export interface GlanceImageInput {
  glanceImage: string;
}

const fields = {
  glanceImage: z
    .string({ error: "glanceImage must be a Glance image's id, e.g. image.id of an openstack.images.Image" })
    .regex(/^[A-Za-z0-9-]{1,64}$/, { message: "glanceImage must be a Glance image's id (a UUID), not its name" })
    .optional(),
};

const rules: SourceRules = () => undefined;

const item = z.object({
  kind: z.literal("glanceImage"),
  cloud: z.object({ authUrl: z.string(), region: z.string().optional(), projectId: z.string() }),
  imageId: z.string(),
  name: z.string().optional(),
  diskFormat: z.string(),
  containerFormat: z.string(),
  minDiskGiB: z.number().int().optional(),
  minRamMiB: z.number().int().optional(),
  /** The image's user properties, as Glance has them (strings; others as JSON). */
  properties: z.record(z.string(), z.string()),
  tags: z.array(z.string()),
  hashAlgo: z.string(),
  hashValue: z.string(),
  sizeBytes: z.number().int(),
});
export type GlanceImageItem = z.output<typeof item>;

const asText = (value: unknown) => (typeof value === "string" ? value : JSON.stringify(value));

async function take(input: GlanceImageInput, ctx: CloudTakeContext) {
  const image = await ctx.cloud.glance.getImage(input.glanceImage, ctx.signal);
  if (image.status !== "active") {
    const message = `glance image ${image.id} is ${image.status}, not active: only an active image has all its data`;
    throw new CofferError("SOURCE_MISSING", `${ctx.subject}: ${message}`);
  }
  await fs.mkdir(ctx.stagingDir, { recursive: true, mode: 0o700 });
  const file = path.join(ctx.stagingDir, `${ctx.label.pointId}-${ctx.label.source}-${randomBytes(4).toString("hex")}`);
  try {
    ctx.progress(`${ctx.subject}: downloading glance image ${image.id}`);
    const staged = await stageImage(image.id, file, ctx);
    // Its bytes as they are (a qcow2 image too): a restore gives Glance the same bytes and hash back.
    const stored = await ctx.storeCopy(file);
    const extra = image as unknown as { min_disk?: number; min_ram?: number };
    const source: GlanceImageItem = {
      kind: "glanceImage",
      cloud: ctx.project,
      imageId: image.id,
      ...(image.name ? { name: image.name } : {}),
      diskFormat: image.disk_format ?? "raw",
      containerFormat: image.container_format ?? "bare",
      ...(typeof extra.min_disk === "number" ? { minDiskGiB: extra.min_disk } : {}),
      ...(typeof extra.min_ram === "number" ? { minRamMiB: extra.min_ram } : {}),
      properties: Object.fromEntries(Object.entries(image.properties).map(([k, v]) => [k, asText(v)])),
      tags: image.tags ?? [],
      hashAlgo: staged.hashAlgo,
      hashValue: staged.hashValue,
      sizeBytes: staged.sizeBytes,
    };
    return { source, refs: [], stored, discard: async () => undefined };
  } finally {
    await removeStaged(file, ctx.scrubStaging);
  }
}

export const glanceImageSource: SourceKind<GlanceImageInput, GlanceImageItem, typeof fields> = {
  kind: "glanceImage",
  label: "a Glance image",
  selectors: ["glanceImage"],
  fields,
  rules,
  input: kindInput<GlanceImageInput>(fields, rules),
  item,
  runsOn: "provider",
  cloud: { take },

  // What the target holds of it: nothing, or a copy (a stored image).
  ...storedCopiesOf("a Glance image"),
};
