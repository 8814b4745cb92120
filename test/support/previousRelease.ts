import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, promises as fs, readFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/**
 * The release before histories (0.2, commit 4b1cc35: its sources, lockfile and build config in
 * test/fixtures/release-0.2.tar.gz), installed and built once in ~/.cache/coffer, so a test can
 * make a stack with it and then take the stack over with this code. Returns the release's folder;
 * its node_modules holds it as `coffer`.
 */
export async function previousRelease(): Promise<string> {
  const tarball = path.resolve(__dirname, "../fixtures/release-0.2.tar.gz");
  const tag = createHash("sha256").update(readFileSync(tarball)).digest("hex").slice(0, 12);
  const dir = path.join(os.homedir(), ".cache", "coffer", `release-0.2-${tag}`);
  if (existsSync(path.join(dir, ".built"))) return dir;
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  execFileSync("tar", ["-xzf", tarball, "-C", dir]);
  // From npm's cache when it has them: the same packages as this release's, minus the newer ones.
  execFileSync("npm", ["ci", "--no-audit", "--no-fund", "--prefer-offline"], { cwd: dir, stdio: "ignore" });
  execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: dir, stdio: "ignore" });
  await fs.writeFile(path.join(dir, ".built"), new Date().toISOString());
  return dir;
}
