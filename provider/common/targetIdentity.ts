import { randomBytes } from "node:crypto";
import { z } from "zod";
import { targetLayout } from "../targets/layout";
import type { TargetStore } from "../targets/store";
import type { SwiftTargetAccess } from "../targets/swiftTarget";
import { CofferError } from "./errors";

/**
 * A backup target's identity (targetLayout.identity()), written once, at the target's first
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
  /**
   * A Swift target: the container holds the objects, and `path` is the agent's local spool of it (laid out as
   * the container is). Holds the key: a request carries it on stdin only.
   */
  swift?: SwiftTargetAccess;
}

const MOUNT_FIX = "is the NAS mounted? mount it and run again";
/** What reading the identity needs of the target's store (the policy provider's host or the agent opens it). */
type IdentityReader = Pick<TargetStore, "location" | "locate" | "readText">;

async function readIdentity(store: IdentityReader): Promise<TargetIdentity | undefined> {
  const file = store.locate(targetLayout.identity());
  let text: string | undefined;
  try {
    text = await store.readText(targetLayout.identity());
  } catch (cause) {
    const problem = `backup target ${store.location}: can't read its identity ${file} (${(cause as Error).message})`;
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
export async function claimTargetIdentity(
  store: IdentityReader & Pick<TargetStore, "writeTextExclusive">,
  now: Date,
): Promise<string> {
  const existing = await readIdentity(store);
  if (existing) return existing.targetId;
  const identity: TargetIdentity = {
    kind: TARGET_KIND,
    schemaVersion: TARGET_SCHEMA_VERSION,
    targetId: randomBytes(16).toString("hex"),
    createdAt: now.toISOString(),
  };
  const text = JSON.stringify(identity, null, 2) + "\n";
  try {
    if (await store.writeTextExclusive(targetLayout.identity(), text)) return identity.targetId;
  } catch (cause) {
    const file = store.locate(targetLayout.identity());
    const problem = `could not write the identity of backup target ${store.location} (${file})`;
    throw new CofferError("IO_FAILED", `${problem}: ${(cause as Error).message}`, { field: "target.path", cause });
  }
  // Another first use wrote one meanwhile: that one is the target's.
  return checkTargetIdentity(store, undefined);
}

/**
 * The target's id, after checking that the store is the target `id` names, or (id not known) any
 * Coffer target; otherwise TARGET_UNREACHABLE, naming the path. `fix` is added to what the
 * message says to do.
 */
export async function checkTargetIdentity(
  store: IdentityReader,
  id: string | undefined,
  fix?: string,
): Promise<string> {
  const identity = await readIdentity(store);
  const file = store.locate(targetLayout.identity());
  const also = fix ? `; ${fix}` : "";
  if (!identity) {
    const howMade =
      id === undefined
        ? "a target gets it when a BackupPolicy is created on it, or, first used by an older Coffer, " +
          "when its BackupPolicy is refreshed"
        : `if it is mounted and the file was removed, put it back (targetId ${id})`;
    const problem = `backup target ${store.location} has no Coffer target identity (${file})`;
    const message = `${problem}: ${MOUNT_FIX}; ${howMade}${also}`;
    throw new CofferError("TARGET_UNREACHABLE", message, { field: "target.path" });
  }
  if (id !== undefined && identity.targetId !== id) {
    const ids = `${file} says ${identity.targetId}, this resource's is ${id}`;
    const problem = `backup target ${store.location} is another target (${ids})`;
    const fixIt = "another NAS or share is mounted there; mount the right one and run again";
    throw new CofferError("TARGET_UNREACHABLE", `${problem}: ${fixIt}${also}`, { field: "target.path" });
  }
  return identity.targetId;
}
