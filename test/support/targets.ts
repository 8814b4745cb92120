import { promises as fs } from "node:fs";
import { claimTargetIdentity } from "../../provider/common/targetIdentity";
import { directoryStore } from "../../provider/targets/directory";

/** A folder made a Coffer backup target, as creating its BackupPolicy does; returns its targetId. */
export async function makeTarget(dir: string): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  return claimTargetIdentity(directoryStore(dir), new Date());
}

/** Empties a folder but keeps it: what an unmounted NAS leaves, its mount point. */
export async function emptyFolder(dir: string): Promise<void> {
  for (const entry of await fs.readdir(dir)) await fs.rm(`${dir}/${entry}`, { recursive: true });
}
