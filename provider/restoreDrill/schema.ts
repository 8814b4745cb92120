import * as path from "node:path";
import { z } from "zod";
import { POINT_STATUSES } from "../history/point";

/** Bumped when the shape of RestoreDrill's state changes; readers accept every older one. */
export const DRILL_SCHEMA_VERSION = 1;

export const DRILL_PICKS = ["newest", "sampled"] as const;
export type DrillPick = (typeof DRILL_PICKS)[number];

export const DEFAULT_BOOT_TIMEOUT_SECONDS = 120;
export const DEFAULT_BOOT_MEMORY_MIB = 256;

/**
 * What the resource class takes from each EncryptedBackupSet's outputs (see sdk/restoreDrill.ts):
 * its points and where they are. Only the fields the drill reads are checked; the rest passes.
 */
const drilledSet = z.object(
  {
    /** The set resource's name, for messages. */
    name: z.string(),
    setId: z.string().min(1),
    points: z.array(
      z.looseObject({
        id: z.string(),
        takenAt: z.string(),
        sizeBytes: z.number(),
        loc: z.number().int().min(0),
        key: z.number().int(),
        status: z.enum(POINT_STATUSES),
        signedBy: z.string().optional(),
      }),
    ),
    locations: z.array(
      z.looseObject({
        targetPath: z.string(),
        targetId: z.string().optional(),
        zone: z.string(),
        manifestHost: z.string(),
      }),
    ),
    signers: z.array(z.object({ pem: z.string(), fingerprint: z.string() })).optional(),
  },
  { error: "each of sets must be a coffer.EncryptedBackupSet" },
);

const keys = z.object({ passphrase: z.string().optional(), manifestKey: z.string().optional() });

/** Secret: each set's keys, as its state holds them (never its signing key; a Swift target's key). */
const setKeys = z.object({
  setId: z.string(),
  keyVersion: z.number().int(),
  keys: keys.extend({ targetKey: z.string().optional() }),
  keyring: z.array(keys.extend({ version: z.number().int() })),
});

const boot = z.strictObject(
  {
    marker: z
      .string({ error: 'boot.marker is required: text the guest prints on its serial console when up, e.g. "login:"' })
      .min(1, { message: 'boot.marker must not be empty: text the guest prints on its serial console, e.g. "login:"' }),
    timeoutSeconds: z
      .number({ error: "boot.timeoutSeconds must be a number of seconds" })
      .positive({ message: "boot.timeoutSeconds must be more than 0" })
      .max(3600, { message: "boot.timeoutSeconds can be at most 3600 (an hour)" })
      .default(DEFAULT_BOOT_TIMEOUT_SECONDS),
    memoryMiB: z
      .number({ error: "boot.memoryMiB must be a whole number of MiB" })
      .int({ message: "boot.memoryMiB must be a whole number of MiB" })
      .min(16, { message: "boot.memoryMiB must be at least 16" })
      .max(65536, { message: "boot.memoryMiB can be at most 65536" })
      .default(DEFAULT_BOOT_MEMORY_MIB),
    /** The item whose disk boots; default: each point's first item. */
    item: z.string({ error: "boot.item must be the name of a source of the sets" }).min(1).optional(),
  },
  { error: "boot must be { marker, timeoutSeconds?, memoryMiB?, item? }" },
);

/** The inputs of a RestoreDrill, validated. */
export const restoreDrillInputs = z
  .strictObject({
    sets: z
      .array(drilledSet, { error: "sets must be a list of coffer.EncryptedBackupSet" })
      .min(1, { message: "sets must name at least one coffer.EncryptedBackupSet to drill" }),
    keys: z.array(setKeys, { error: "keys is set by Coffer from sets: leave it out" }),
    pick: z
      .enum(DRILL_PICKS, {
        error: 'pick must be "newest" (the newest good point) or "sampled" (a random good point)',
      })
      .default("newest"),
    scratchDir: z
      .string({ error: "scratchDir must be an absolute path" })
      .refine((p) => path.isAbsolute(p), {
        message: "scratchDir must be an absolute path (start with /), on the machine that holds the points",
      })
      .refine((p) => !p.split("/").includes(".."), { message: 'scratchDir must not contain ".." segments' })
      .optional(),
    boot: boot.optional(),
    /** Also restore each Cinder source's backup into a scratch volume (deleted afterwards), in the cloud. */
    cinderScratch: z.boolean({ error: "cinderScratch must be true or false" }).default(false),
    /**
     * Declared "ok" by the resource class; refresh hands back what the drill found, so that
     * `pulumi preview --diff` shows a failed drill as `status: "failed" => "ok"`.
     */
    status: z.literal("ok", { error: 'status is set by Coffer (always "ok" as declared): leave it out' }).default("ok"),
  })
  .superRefine((inputs, ctx) => {
    const seen = new Map<string, number>();
    inputs.sets.forEach((set, i) => {
      const twin = seen.get(set.setId);
      if (twin !== undefined) {
        const message = `sets[${i}] (${set.name}) is sets[${twin}] again: name each set once`;
        ctx.addIssue({ code: "custom", path: ["sets", i], message });
      }
      seen.set(set.setId, i);
      if (!inputs.keys.some((k) => k.setId === set.setId)) {
        const message = `keys has none for set ${set.name}: keys is set by Coffer from sets, leave it out`;
        ctx.addIssue({ code: "custom", path: ["keys"], message });
      }
    });
  });

export type RestoreDrillInputs = z.output<typeof restoreDrillInputs>;
export type DrilledSet = RestoreDrillInputs["sets"][number];
export type SetKeys = RestoreDrillInputs["keys"][number];
export type DrillBoot = NonNullable<RestoreDrillInputs["boot"]>;
