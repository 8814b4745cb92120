/** `coffer verify` and `coffer restore` of a point in a Swift container: fetched into scratch, then as a folder's. */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { withFetchedPoint } from "../agent/swiftSpool";
import { keyNames } from "../targets/store";
import { swiftAccessOf, swiftTargetSchema } from "../targets/swiftTarget";
import { UsageError, secretFrom } from "./common";

export interface SwiftPointOptions {
  manifest?: string;
  /** A JSON file: { authUrl, user, container, prefix?, segmentMiB? } (no key). */
  swift?: string;
  swiftKeyFile?: string;
  scratch?: string;
}

/**
 * Runs `work` with the local path of the manifest that `values.manifest` names in the container `values.swift`
 * describes: the point's objects are fetched into a new folder under `values.scratch` (default the temp
 * folder), laid out as in the container so the manifest's place still checks, and removed afterwards.
 */
export async function withSwiftPoint<T>(values: SwiftPointOptions, work: (manifest: string) => Promise<T>): Promise<T> {
  if (!values.manifest)
    throw new UsageError("--manifest is required: with --swift, the manifest's key in the container");
  const names = (() => {
    try {
      return keyNames(values.manifest!.replace(/^swift:[^/]+\//, ""));
    } catch (error) {
      throw new UsageError(`--manifest: ${(error as Error).message}`);
    }
  })();
  const text = await fs.readFile(values.swift!, "utf8").catch(() => {
    throw new UsageError(`--swift ${values.swift} can't be read`);
  });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`--swift ${values.swift} is not JSON: { "authUrl", "user", "container", "prefix"? }`);
  }
  const parsed = swiftTargetSchema.safeParse({ ...(json as object), kind: "swift" });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new UsageError(`--swift ${values.swift}: ${issue.message.replace(/^target\./, "")}`);
  }
  const key = await secretFrom(values.swiftKeyFile, false, "COFFER_SWIFT_KEY");
  if (!key) throw new UsageError("give the Swift user's key with --swift-key-file or COFFER_SWIFT_KEY");
  const scratch = await fs.mkdtemp(path.join(values.scratch ?? os.tmpdir(), "coffer-swift-"));
  try {
    const manifest = path.join(scratch, ...names);
    const target = { path: scratch, swift: swiftAccessOf(parsed.data, key) };
    return await withFetchedPoint(target, path.dirname(manifest), (dir) =>
      work(path.join(dir, path.basename(manifest))),
    );
  } finally {
    await fs.rm(scratch, { recursive: true, force: true });
  }
}
