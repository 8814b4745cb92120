import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import * as path from "node:path";

const repoRoot = path.resolve(__dirname, "../..");
const binDir = path.join(repoRoot, ".work", "bin");

/**
 * Whether the Pulumi CLI that tools/pulumi-cli/build.sh provides is ready; puts its folder on PATH.
 * In CI a missing CLI is an error (tier 5 must run there); elsewhere the tier is skipped, and
 * tools/test.sh prints the one line saying how to enable it (Jest hides the output of a suite
 * that runs no test).
 */
export function pulumiCliReady(): boolean {
  if (existsSync(path.join(binDir, "pulumi"))) {
    if (!process.env.PATH?.split(":").includes(binDir)) process.env.PATH = `${binDir}:${process.env.PATH}`;
    execFileSync("pulumi", ["version"], { stdio: "ignore", env: process.env });
    return true;
  }
  if (process.env.CI === "true") {
    throw new Error("tier 5 needs the Pulumi CLI in CI: run tools/test.sh, which builds it (needs Go)");
  }
  return false;
}
