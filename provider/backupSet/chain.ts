/**
 * Incremental sources' chains, from the provider's side: which point the next one builds on
 * (chainFrom, from state alone), and what each incremental source asks its agent for once that
 * point's manifest is read and checked (continueChains). A link is only ever built on a point
 * whose manifest verifies with this set's keys; anything else starts a new chain, and says why.
 */
import { ChainRequest, bitmapName, bitmapPrefix } from "../agent/chainLink";
import { sha256Text } from "../agent/chain";
import { openManifest, pointSecret, readManifest } from "../agent/manifest";
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
  const start = { bitmap: bitmapName(plan.setId, plan.pointId), bitmapPrefix: prefix };
  const allFull = (fullBecause: string): PointPlan => ({
    ...plan,
    items: plan.items.map((i) => (i.incremental ? { ...i, chain: { ...start, fullBecause } } : i)),
  });
  if ("fullBecause" in from) return allFull(from.fullBecause);
  const { text } = await agent.call("read-manifest", { target, setDir: from.pointDir });
  const its = `the previous point ${from.pointId}'s manifest`;
  if (text === undefined) return allFull(`${its} is gone`);
  const read = readManifest(text);
  if (!read.ok) return allFull(`${its} can't be read (${read.problem})`);
  const base = read.manifest;
  if (base.setId !== plan.setId || (base.pointId ?? base.setId) !== from.pointId) {
    return allFull(`${its} is another point's`);
  }
  const given = plan.wrapWith ?? plan.keys.manifestSecret;
  const key = base.keySource === "recipients" ? undefined : await pointSecret(base, given);
  const opened = key === undefined ? undefined : await openManifest(text, key);
  if (!opened?.ok || !opened.authentic) return allFull(`${its} does not verify with this set's keys`);
  const manifestSha256 = sha256Text(text);
  let linked = false;
  const items = plan.items.map((planned) => {
    if (!planned.incremental) return planned;
    const backup = base.items.find((i) => i.name === planned.name && i.chain);
    const { fullEvery } = planned.incremental;
    let chain: ChainRequest;
    if (!backup?.chain) {
      chain = { ...start, fullBecause: `the previous point ${from.pointId} has no incremental backup of it` };
    } else if (!backup.chain.bitmap) {
      chain = { ...start, fullBecause: `the previous point ${from.pointId} started no dirty bitmap on its disk` };
    } else if (fullEvery !== undefined && backup.chain.depth + 1 >= fullEvery) {
      chain = { ...start, fullBecause: `fullEvery is ${fullEvery}, and its chain has ${fullEvery} backups` };
    } else {
      linked = true;
      const { file, virtualSize } = backup;
      const { bitmap, depth } = backup.chain;
      const link = { pointId: from.pointId, item: backup.name, file, manifestSha256, bitmap, depth, virtualSize };
      chain = { ...start, base: link };
    }
    return { ...planned, chain };
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
