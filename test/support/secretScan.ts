import { promises as fs } from "node:fs";
import * as path from "node:path";

/** Installed packages and Jest's cache of compiled sources: no test's secret, and most files under /tmp. */
const skipped = (folder: string) => folder === "node_modules" || folder === ".git" || folder.startsWith("jest_");

/**
 * Files under `root` (any depth, links not followed) whose bytes contain `text`. Only files up
 * to `maxBytes` are read: a key file is small, and disk images would make the scan slow.
 */
export async function filesContaining(root: string, text: string, maxBytes = 64 * 1024): Promise<string[]> {
  const found: string[] = [];
  const needle = Buffer.from(text);
  const visit = async (dir: string): Promise<void> => {
    const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory() && !skipped(entry.name)) await visit(file);
      if (!entry.isFile()) continue;
      const stat = await fs.stat(file).catch(() => undefined);
      if (!stat || stat.size > maxBytes) continue;
      const bytes = await fs.readFile(file).catch(() => undefined);
      if (bytes?.includes(needle)) found.push(file);
    }
  };
  await visit(root);
  return found;
}
