/**
 * Incremental sources' chains, from the provider's side: which point the next one builds on
 * (chainFrom, from state alone), and what each incremental source asks its agent for once that
 * point's manifest is read and checked (continueChains). A link is only ever built on a point
 * whose manifest verifies with this set's keys; anything else starts a new chain, and says why.
 */
import { ChainRequest, bitmapName, bitmapPrefix } from "../agent/chainLink";
import { sha256Text } from "../agent/chain";
import { ManifestItem, openManifest, pointSecret, readManifest } from "../agent/manifest";
import { formatBytes } from "../common/sizes";
import type { ChainStatus } from "../sources/kind";
import { linkDecision } from "../sources/qemuCopy";
import type { AgentClient } from "./agentClient";
import type { PointPlan } from "./plan";
import type { PointLocation, PointRecord } from "./state";

/** The point a new point's links build on, or why there is none. */
export type ChainFrom = { pointId: string; pointDir: string } | { fullBecause: string };

/**
 * The set's newest point, when links may build on it: it passed its last check, was made with the
 * current keys, and is where the new point goes (its target, zone and manifest host).
 */
export function chainFrom(
  points: readonly PointRecord[],
  locations: readonly PointLocation[],
  now: { keyVersion: number; location: Pick<PointLocation, "targetPath" | "zone" | "manifestHost"> },
  pointDirOf: (point: PointRecord) => string,
): ChainFrom {
  const newest = [...points].sort((a, b) => (a.takenAt < b.takenAt ? -1 : a.takenAt > b.takenAt ? 1 : 0)).at(-1);
  if (!newest) return { fullBecause: "it is the set's first point" };
  const at = locations[newest.loc];
  if (newest.status !== "ok") {
    return { fullBecause: `the previous point ${newest.id} did not pass its last check (${newest.status})` };
  }
  if (newest.key !== now.keyVersion) return { fullBecause: `the keys changed since the previous point ${newest.id}` };
  const { targetPath, zone, manifestHost } = now.location;
  if (!at || at.targetPath !== targetPath || at.zone !== zone || at.manifestHost !== manifestHost) {
    return { fullBecause: `the previous point ${newest.id} is in another target, zone or host` };
  }
  return { pointId: newest.id, pointDir: pointDirOf(newest) };
}

/**
 * `plan` with a chain request for each incremental source: a link on the base point's backup of it
 * where that point's manifest verifies and holds one, else a full backup and why. A point that
 * links anything uses the base's key, so that its chain opens with one key (one KDF per restore).
 */
export async function continueChains(
  plan: PointPlan,
  agent: AgentClient,
  target: { path: string; id?: string; zone?: string },
): Promise<PointPlan> {
  const incremental = plan.items.filter((i) => i.incremental);
  if (incremental.length === 0) return plan;
  const from = plan.chainFrom ?? { fullBecause: "it is the set's first point" };
  const prefix = bitmapPrefix(plan.setId);
  const start: Pick<ChainRequest, "bitmap" | "bitmapPrefix" | "keep"> = {
    bitmap: bitmapName(plan.setId, plan.pointId),
    bitmapPrefix: prefix,
  };
  const allFull = (fullBecause: string): PointPlan => ({
    ...plan,
    items: plan.items.map((i) => (i.incremental ? { ...i, chain: { ...start, fullBecause } } : i)),
  });
  if ("fullBecause" in from) return allFull(from.fullBecause);
  start.keep = bitmapName(plan.setId, from.pointId);
  const { text } = await agent.call("read-manifest", { target, setDir: from.pointDir });
  const its = `the previous point ${from.pointId}'s manifest`;
  if (text === undefined) return allFull(`${its} is gone`);
  const read = readManifest(text);
  if (!read.ok) return allFull(`${its} can't be read (${read.problem})`);
  const base = read.manifest;
  if (base.setId !== plan.setId || (base.pointId ?? base.setId) !== from.pointId) {
    return allFull(`${its} is another point's`);
  }
  if (base.policy.encrypted !== plan.policy.encrypted) {
    return allFull(`encryption is ${plan.policy.encrypted ? "on" : "off"} now, and was not at point ${from.pointId}`);
  }
  if (plan.policy.encrypted && !base.wrappedKey) {
    return allFull(`the previous point ${from.pointId} has no key of its own (made before per-point keys)`);
  }
  const given = plan.wrapWith ?? plan.keys.manifestSecret;
  const key = base.keySource === "recipients" ? undefined : await pointSecret(base, given);
  const opened = key === undefined ? undefined : await openManifest(text, key);
  if (!opened?.ok || !opened.authentic) return allFull(`${its} does not verify with this set's keys`);
  const manifestSha256 = sha256Text(text);
  let linked = false;
  const items = plan.items.map((planned) => {
    if (!planned.incremental) return planned;
    const found = baseFor(planned.name, planned.incremental.fullEvery, base.items, from.pointId, manifestSha256);
    linked ||= "base" in found;
    return { ...planned, chain: { ...start, ...found } };
  });
  if (!linked || !plan.policy.encrypted) return { ...plan, items };
  // The chain's key: the base point's own, wrapped as its manifest has it.
  return {
    ...plan,
    items,
    keys: { ...plan.keys, passphrase: key, manifestSecret: key! },
    wrapWith: undefined,
    wrappedKey: base.wrappedKey,
    keyOf: base.keyOf ?? base.pointId,
    secrets: [...plan.secrets, key!],
  };
}

/** The backup of source `name` in the base point's `items` that its next backup may link on, or why not. */
function baseFor(
  name: string,
  fullEvery: number | undefined,
  items: readonly ManifestItem[],
  pointId: string,
  manifestSha256: string,
): Pick<ChainRequest, "base" | "fullBecause"> {
  const backup = items.find((i) => i.name === name && i.chain);
  if (!backup?.chain) return { fullBecause: `the previous point ${pointId} has no incremental backup of it` };
  const { bitmap, depth } = backup.chain;
  if (!bitmap) return { fullBecause: `the previous point ${pointId} started no dirty bitmap on its disk` };
  if (fullEvery !== undefined && depth + 1 >= fullEvery) {
    return { fullBecause: `fullEvery is ${fullEvery}, and its chain has ${depth + 1} backups` };
  }
  const { file, virtualSize } = backup;
  return { base: { pointId, item: backup.name, file, manifestSha256, bitmap, depth, virtualSize } };
}

/** An incremental source as preview reads it: its name, its fields for the agent, and its agent's host. */
export interface PreviewedSource {
  name: string;
  source: Record<string, unknown>;
  via?: string;
  fullEvery?: number;
}

/**
 * What `pulumi preview` says of each incremental source of the point an update takes: a link on which
 * point, and how much it copies as QEMU counts it, or a full backup and why. Reads only: the base
 * point's manifest (unchecked: it only words a forecast; the point itself checks it) and each disk's
 * bitmaps. A source that can't be read is said to be decided when the point is taken.
 */
export async function previewChains(
  setId: string,
  from: ChainFrom,
  sources: readonly PreviewedSource[],
  agent: (host: string | undefined) => AgentClient,
  manifestWhere: { host?: string; target: { path: string; id?: string; zone?: string } },
): Promise<string[]> {
  if (sources.length === 0) return [];
  const full = (name: string, why: string) => `source ${name}: a full backup: ${why}`;
  if ("fullBecause" in from) return sources.map((s) => full(s.name, from.fullBecause));
  const undecided = (name: string, why: string) =>
    `source ${name}: a link on point ${from.pointId} or a full backup, decided when the point is taken (${why})`;
  let items: ManifestItem[];
  let manifestSha256: string;
  try {
    const { text } = await agent(manifestWhere.host).call("read-manifest", {
      target: manifestWhere.target,
      setDir: from.pointDir,
    });
    const its = `the previous point ${from.pointId}'s manifest`;
    if (text === undefined) return sources.map((s) => full(s.name, `${its} is gone`));
    const read = readManifest(text);
    if (!read.ok) return sources.map((s) => full(s.name, `${its} can't be read (${read.problem})`));
    items = read.manifest.items;
    manifestSha256 = sha256Text(text);
  } catch (error) {
    return sources.map((s) => undecided(s.name, (error as Error).message));
  }
  const next = { bitmap: bitmapName(setId, "next"), bitmapPrefix: bitmapPrefix(setId) };
  return Promise.all(
    sources.map(async ({ name, source, via, fullEvery }) => {
      const found = baseFor(name, fullEvery, items, from.pointId, manifestSha256);
      if (!found.base) return full(name, found.fullBecause!);
      try {
        const disk = await agent(via).call("chain-status", { name, source: source as never });
        const decided = linkDecision({ ...next, base: found.base }, { ...disk, bitmaps: disk.bitmaps.map(asBitmap) });
        if (!decided.base) return full(name, decided.fullBecause!);
        const count = disk.bitmaps.find((b) => b.name === found.base!.bitmap)?.count;
        const size = count === undefined ? "" : `: about ${formatBytes(count)} to copy (QEMU's count of what changed)`;
        return `source ${name}: a link on point ${from.pointId}${size}`;
      } catch (error) {
        return undecided(name, (error as Error).message);
      }
    }),
  );
}

/** A preview's bitmap as linkDecision reads one (a stopped disk's header has no dirty count). */
const asBitmap = (b: ChainStatus["bitmaps"][number]) => ({ persistent: true, granularity: 0, count: 0, ...b });
