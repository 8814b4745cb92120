import { randomBytes } from "node:crypto";
import * as path from "node:path";
import { z } from "zod";
import { CofferError } from "./errors";

/**
 * A backup target's identity, `<target>/.coffer/target.json`, written once, at the target's first
 * use by a BackupPolicy. An unmounted NAS leaves its mount point, an empty folder on the local
 * disk: without the identity a folder is not the target. It is then unreachable (an error), never
 * a target whose policy and backups are gone, and never written to.
 */
export const TARGET_KIND = "coffer.Target";
export const TARGET_SCHEMA_VERSION = 1;

const targetIdentity = z.object({
  kind: z.literal(TARGET_KIND),
  schemaVersion: z.number().int().min(1).max(TARGET_SCHEMA_VERSION),
  targetId: z.string().regex(/^[0-9a-f]{32}$/),
  createdAt: z.string(),
});
export type TargetIdentity = z.output<typeof targetIdentity>;

/** A target as a request names it: its path, and its id when the resource knows it. */
export interface TargetRef {
  path: string;
  id?: string;
  /**
   * The zone of the set a request works on. A target first used by an older Coffer has no identity
   * yet; when this zone's policy document is on it, it is mounted, and the agent writes one.
   */
  zone?: string;
}

/** The file operations the identity needs: the policy provider passes its host, the agent the real ones. */
export interface IdentityFiles {
  /** The file's text, or undefined when it does not exist. */
  readFile(file: string): Promise<string | undefined>;
  /** Writes `file` whole unless it exists; false (nothing written) when it does. */
  writeFileExclusive(file: string, content: string): Promise<boolean>;
}

export function targetIdentityPath(targetPath: string): string {
  return path.join(targetPath, ".coffer", "target.json");
}

const MOUNT_FIX = "is the NAS mounted? mount it and run again";
type ReadFile = Pick<IdentityFiles, "readFile">;

async function readIdentity(files: ReadFile, targetPath: string): Promise<TargetIdentity | undefined> {
  const file = targetIdentityPath(targetPath);
  let text: string | undefined;
  try {
    text = await files.readFile(file);
  } catch (cause) {
    const problem = `backup target ${targetPath}: can't read its identity ${file} (${(cause as Error).message})`;
    throw new CofferError("TARGET_UNREACHABLE", `${problem}: ${MOUNT_FIX}`, { field: "target.path", cause });
  }
  if (text === undefined) return undefined;
  let parsed: ReturnType<typeof targetIdentity.safeParse> | undefined;
  try {
    parsed = targetIdentity.safeParse(JSON.parse(text));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success) {
    throw new CofferError(
      "TARGET_UNREACHABLE",
      `${file} is not a Coffer target identity Coffer can read: put the original back ` +
        "(every BackupPolicy on this target has its targetId in its outputs), then run again",
      { field: "target.path" },
    );
  }
  return parsed.data;
}

/** The target's id: the one it has, or a new one written now, at its first use. */
export async function claimTargetIdentity(files: IdentityFiles, targetPath: string, now: Date): Promise<string> {
  const existing = await readIdentity(files, targetPath);
  if (existing) return existing.targetId;
  const identity: TargetIdentity = {
    kind: TARGET_KIND,
    schemaVersion: TARGET_SCHEMA_VERSION,
    targetId: randomBytes(16).toString("hex"),
    createdAt: now.toISOString(),
  };
  const file = targetIdentityPath(targetPath);
  try {
    if (await files.writeFileExclusive(file, JSON.stringify(identity, null, 2) + "\n")) return identity.targetId;
  } catch (cause) {
    const problem = `could not write the identity of backup target ${targetPath} (${file})`;
    throw new CofferError("IO_FAILED", `${problem}: ${(cause as Error).message}`, { field: "target.path", cause });
  }
  // Another first use wrote one meanwhile: that one is the target's.
  return checkTargetIdentity(files, { path: targetPath });
}

/**
 * The target's id, after checking that the folder is the target `target.id` names, or (id not
 * known) any Coffer target; otherwise TARGET_UNREACHABLE, naming the path. `fix` is added to
 * what the message says to do.
 */
export async function checkTargetIdentity(files: ReadFile, target: TargetRef, fix?: string): Promise<string> {
  const identity = await readIdentity(files, target.path);
  const file = targetIdentityPath(target.path);
  const also = fix ? `; ${fix}` : "";
  if (!identity) {
    const howMade =
      target.id === undefined
        ? "a target gets it when a BackupPolicy is created on it, or, first used by an older Coffer, " +
          "when its BackupPolicy is refreshed"
        : `if it is mounted and the file was removed, put it back (targetId ${target.id})`;
    const problem = `backup target ${target.path} has no Coffer target identity (${file})`;
    const message = `${problem}: ${MOUNT_FIX}; ${howMade}${also}`;
    throw new CofferError("TARGET_UNREACHABLE", message, { field: "target.path" });
  }
  if (target.id !== undefined && identity.targetId !== target.id) {
    const ids = `${file} says ${identity.targetId}, this resource's is ${target.id}`;
    const problem = `backup target ${target.path} is another target (${ids})`;
    const fixIt = "another NAS or share is mounted there; mount the right one and run again";
    throw new CofferError("TARGET_UNREACHABLE", `${problem}: ${fixIt}${also}`, { field: "target.path" });
  }
  return identity.targetId;
}
