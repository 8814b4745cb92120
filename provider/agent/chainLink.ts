/**
 * Incremental backups of qcow2 disks: a chain of backups per source, one full backup and links that
 * hold only the clusters QEMU marked dirty since the backup before. The dirty marks are a persistent
 * bitmap in the disk, one per point, started in the same QMP transaction as the point's copy; the
 * link's manifest item names its base by the base point's manifest digest, so a missing or altered
 * link is found before a restore. A link's file names no backing file (Coffer refuses headers that
 * do): readers give its base explicitly (provider/agent/chain.ts).
 */
import { z } from "zod";

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

/** The backup a link builds on: the same source's backup in an earlier point of the set. */
const plainName = (what: string) =>
  z.string().refine((f) => f !== "" && f !== "." && f !== ".." && !f.includes("/"), {
    message: `must be a file name in the ${what}`,
  });

export const chainBaseSchema = z.object({
  pointId: plainName("set's folder"),
  /** The base's item name (the source's name when it was taken). */
  item: z.string().min(1),
  file: plainName("base point's folder"),
  /** SHA-256 of the base point's manifest file, which in turn names its own base. */
  manifestSha256: sha256Hex,
});
export type ChainBase = z.output<typeof chainBaseSchema>;

/** What a manifest item records of its chain (since schema 7). */
export const itemChainSchema = z.object({
  /** The persistent dirty bitmap this backup started on the disk: the next link copies what it marks. Absent: none. */
  bitmap: z.string().min(1).optional(),
  /** Present: the backup holds only what changed since `base`. */
  base: chainBaseSchema.optional(),
  /** Links between this backup and its chain's full backup: 0 for the full one. */
  depth: z.number().int().min(0),
  /** Why a source backed up incrementally got a full backup this time (first point, lost bitmap, ...). */
  fullBecause: z.string().optional(),
  /** The pruned points whose backups were merged into this one (provider/agent/merge.ts), oldest merge first. */
  merged: z.array(z.string()).optional(),
});
export type ItemChain = z.output<typeof itemChainSchema>;

/** What the provider asks of an incremental source's backup: a link on `base`, or a full one and why. */
export const chainRequestSchema = z.object({
  /** The name of the bitmap this backup starts (bitmapName). */
  bitmap: z.string().min(1),
  /** The set's bitmaps start with it: before the copy, those the next point can't use are removed. */
  bitmapPrefix: z.string().min(1),
  /** The newest good point's bitmap, kept whatever this backup is: if this point fails, the next links on it. */
  keep: z.string().min(1).optional(),
  base: chainBaseSchema
    .extend({ bitmap: z.string().min(1), depth: z.number().int().min(0), virtualSize: z.number().int().min(0) })
    .optional(),
  /** Why there is no base (the provider decided a full backup). */
  fullBecause: z.string().optional(),
});
export type ChainRequest = z.output<typeof chainRequestSchema>;

/** The prefix of a set's bitmaps on a disk; QEMU allows 1023 bytes of name. */
export const bitmapPrefix = (setId: string): string => `coffer.${setId}.`;

/** The bitmap point `pointId` of set `setId` starts on each incremental disk. */
export const bitmapName = (setId: string, pointId: string): string => `${bitmapPrefix(setId)}${pointId}`;
