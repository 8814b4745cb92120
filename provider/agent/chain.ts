import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { readFileIfExists } from "../common/atomicFile";
import { CofferError } from "../common/errors";
import { MANIFEST_FILE, PREVIOUS_MANIFEST_FILE } from "../targets/layout";
import { z } from "zod";
import { ItemChain, itemChainSchema } from "./chainLink";
import { fileSha256 } from "./image";

/**
 * What a base point's manifest must say for a link to build on it: its items' names, files and
 * chains. Its digest, which the link recorded, vouches for the rest (and keeps manifest.ts, which
 * the source kinds feed, out of this module's imports).
 */
const baseManifestSchema = z.object({
  manifest: z.object({
    items: z.array(
      z.object({
        name: z.string(),
        file: z.string(),
        sizeBytes: z.number(),
        fileSha256: z.string(),
        chain: itemChainSchema.optional(),
      }),
    ),
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

/** A backup a link builds on: its file, and the size and SHA-256 its point's manifest records. */
export interface BaseFile {
  pointId: string;
  file: string;
  sizeBytes: number;
  fileSha256: string;
}

/**
 * The backups an incremental backup in `pointDir` builds on, nearest first (none for a full backup).
 * Each base point's manifest must be the one the link recorded (its SHA-256), which names its own
 * base in turn: a trusted top manifest vouches for the whole chain. The files themselves are checked
 * by checkBaseFiles.
 */
export async function chainBases(pointDir: string, chain: ItemChain | undefined, subject: string): Promise<BaseFile[]> {
  const bases: BaseFile[] = [];
  const setDir = path.dirname(pointDir);
  const seen = new Set<string>();
  for (let base = chain?.base; base;) {
    const baseDir = path.join(setDir, base.pointId);
    if (seen.has(base.pointId) || base.pointId === path.basename(pointDir)) {
      throw new BrokenChain("failed", `${subject}: its chain of bases loops at point ${base.pointId}`);
    }
    seen.add(base.pointId);
    let text = await readFileIfExists(path.join(baseDir, MANIFEST_FILE)).catch(() => undefined);
    // A merge being finished (agent/merge.ts) keeps the manifest it replaced until every link is rewritten.
    if (text !== undefined && sha256Text(text) !== base.manifestSha256) {
      const replaced = await readFileIfExists(path.join(baseDir, PREVIOUS_MANIFEST_FILE)).catch(() => undefined);
      if (replaced !== undefined && sha256Text(replaced) === base.manifestSha256) text = replaced;
    }
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
    const { sizeBytes, fileSha256 } = item;
    bases.push({ pointId: base.pointId, file: path.join(baseDir, base.file), sizeBytes, fileSha256 });
    base = item.chain?.base;
  }
  return bases;
}

/**
 * Throws BrokenChain unless each base file is there, of its recorded size, and (with `hash`) of its
 * recorded SHA-256: a link read over a changed base would record, or restore, the change as good.
 */
export async function checkBaseFiles(bases: readonly BaseFile[], subject: string, hash: boolean): Promise<void> {
  for (const base of bases) {
    const its = `${subject}: it builds on point ${base.pointId}'s ${path.basename(base.file)}, which`;
    const stat = await fs.stat(base.file).catch(() => undefined);
    if (!stat) throw new BrokenChain("missing", `${its} is missing`);
    if (stat.size !== base.sizeBytes) {
      throw new BrokenChain("failed", `${its} is ${stat.size} bytes, not the ${base.sizeBytes} its manifest says`);
    }
    if (hash && (await fileSha256(base.file)) !== base.fileSha256) {
      throw new BrokenChain("failed", `${its} has changed since it was made (its SHA-256 differs)`);
    }
  }
}
