import { readFileSync, promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { z } from "zod";
import { OWNER_PATTERN, ownerMarkerName } from "../targets/layout";
import { pidAlive } from "./tools";

/**
 * Who is taking a set: the provider process that runs `create`. Its marker,
 * ownerMarkerName(host, pid), lies in the set's folder from the first backup until the manifest is
 * written, so that a folder without a manifest can be told apart: still being made, or left by a
 * crash (its owner is dead, or the host rebooted since), which the next run's sweep removes.
 */
export const setOwner = z.object({ host: z.string(), pid: z.number().int().positive(), bootId: z.string() });
export type SetOwner = z.output<typeof setOwner>;

/** The boot's id: a pid from before a reboot is dead whatever process has that number now. */
export function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "unknown";
  }
}

export function thisProcess(): SetOwner {
  return { host: os.hostname(), pid: process.pid, bootId: bootId() };
}

export async function markOwner(setDir: string, owner: SetOwner): Promise<void> {
  const file = path.join(setDir, ownerMarkerName(owner.host, owner.pid));
  const body = JSON.stringify({ ...owner, markedAt: new Date().toISOString() }) + "\n";
  await fs.writeFile(file, body, { mode: 0o600, flag: "wx" }).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== "EEXIST") throw error;
  });
}

/** Removes the folder's owner markers: its manifest is written, so it is a set now. */
export async function clearOwners(setDir: string): Promise<void> {
  for (const entry of await fs.readdir(setDir).catch(() => [] as string[])) {
    if (OWNER_PATTERN.test(entry)) await fs.rm(path.join(setDir, entry), { force: true });
  }
}

/**
 * Whether the owner a marker's text names is gone for sure. An owner on another host can't be
 * checked from here and counts as alive; so does a marker that can't be read (undefined).
 */
function ownerGone(text: string | undefined): boolean {
  let parsed: ReturnType<typeof setOwner.safeParse> | undefined;
  try {
    parsed = text === undefined ? undefined : setOwner.safeParse(JSON.parse(text));
  } catch {
    parsed = undefined;
  }
  return parsed?.success ? ownerIsGone(parsed.data) : false;
}

/** Whether `owner` is gone for sure: on this host, dead or from an earlier boot (another host's can't be checked). */
export function ownerIsGone(owner: SetOwner): boolean {
  if (owner.host !== os.hostname()) return false;
  return owner.bootId !== bootId() || !pidAlive(owner.pid);
}

/**
 * Who a set folder's markers say is taking it: "none" (no marker: an older Coffer, or not ours),
 * "alive" (an owner is alive or can't be checked from here), or "gone" (every owner is).
 * `entries` are the names in the folder; `readMarker` reads one (undefined when it can't).
 */
export async function markedOwners(
  entries: readonly string[],
  readMarker: (entry: string) => Promise<string | undefined>,
): Promise<"none" | "alive" | "gone"> {
  const owners = entries.filter((e) => OWNER_PATTERN.test(e));
  if (owners.length === 0) return "none";
  const gone = await Promise.all(owners.map(async (owner) => ownerGone(await readMarker(owner))));
  return gone.includes(false) ? "alive" : "gone";
}

/** markedOwners of the set folder `setDir`, whose names are `entries`. */
export async function folderOwners(setDir: string, entries: readonly string[]): Promise<"none" | "alive" | "gone"> {
  return markedOwners(entries, (entry) => fs.readFile(path.join(setDir, entry), "utf8").catch(() => undefined));
}
