import { createHash } from "node:crypto";
import * as path from "node:path";
import { readFileIfExists } from "../common/atomicFile";
import { CofferError } from "../common/errors";
import { MANIFEST_FILE } from "../targets/layout";
import { z } from "zod";
import { ItemChain, itemChainSchema } from "./chainLink";

/**
 * What a base point's manifest must say for a link to build on it: its items' names, files and
 * chains. Its digest, which the link recorded, vouches for the rest (and keeps manifest.ts, which
 * the source kinds feed, out of this module's imports).
 */
const baseManifestSchema = z.object({
  manifest: z.object({
    items: z.array(z.object({ name: z.string(), file: z.string(), chain: itemChainSchema.optional() })),
  }),
});

function baseItems(text: string) {
  try {
    const parsed = baseManifestSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data.manifest.items : [];
  } catch {
    return [];
  }
}

/** A chain's link whose base is gone or is not the one it was built on: "missing" or "failed". */
export class BrokenChain extends CofferError {
  constructor(
    readonly status: "missing" | "failed",
    message: string,
  ) {
    super(status === "missing" ? "SOURCE_MISSING" : "VERIFY_FAILED", message);
  }
}

export const sha256Text = (text: string): string => createHash("sha256").update(text, "utf8").digest("hex");

/**
 * The backup files an incremental backup in `pointDir` builds on, nearest first (none for a full
 * backup). Each base point's manifest must be the one the link recorded (its SHA-256), which names
 * its own base in turn: a trusted top manifest vouches for the whole chain.
 */
export async function chainBases(pointDir: string, chain: ItemChain | undefined, subject: string): Promise<string[]> {
  const files: string[] = [];
  const setDir = path.dirname(pointDir);
  const seen = new Set<string>();
  for (let base = chain?.base; base;) {
    const baseDir = path.join(setDir, base.pointId);
    if (seen.has(base.pointId) || base.pointId === path.basename(pointDir)) {
      throw new BrokenChain("failed", `${subject}: its chain of bases loops at point ${base.pointId}`);
    }
    seen.add(base.pointId);
    const text = await readFileIfExists(path.join(baseDir, MANIFEST_FILE)).catch(() => undefined);
    const builtOn = `it holds only what changed since point ${base.pointId}`;
    if (text === undefined) {
      const why = "that point's manifest is gone, so this backup can't be read";
      throw new BrokenChain("missing", `${subject}: ${builtOn}, and ${why}`);
    }
    if (sha256Text(text) !== base.manifestSha256) {
      const why = "that point's manifest is not the one it was built on (changed or replaced)";
      throw new BrokenChain("failed", `${subject}: ${builtOn}, and ${why}`);
    }
    const item = baseItems(text).find((i) => i.name === base!.item);
    if (!item || item.file !== base.file) {
      throw new BrokenChain("failed", `${subject}: ${builtOn}, whose manifest has no backup ${base.file}`);
    }
    files.push(path.join(baseDir, base.file));
    base = item.chain?.base;
  }
  return files;
}
