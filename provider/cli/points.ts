import { promises as fs } from "node:fs";
import * as path from "node:path";
import { deleteSet } from "../agent/backupSet";
import { IndexedPoint, RewrittenPoint, SetIndex, currentSetIndex, setAt, writeSetIndex } from "../agent/pointIndex";
import { formatBytes } from "../common/sizes";
import { formatAge } from "../history/duration";
import { holdsAt } from "../history/holds";
import { HistoryPoint, basesOf } from "../history/point";
import { RetentionPlan, RetentionRules, planRetention, retentionRules } from "../history/retention";
import { cloudAccessOf } from "../backupSet/take";
import { cloudDeps, openCloudFrom } from "../openstack";
import { agentClient } from "../backupSet/agentClient";
import { mergePoint } from "../backupSet/merge";
import { itemsDigest } from "../backupSet/state";
import { thisProcess } from "../agent/setOwner";
import { settleMerge } from "../agent/merge";
import { publicKeyOf } from "../common/signingKey";
import { chainLinksOf, pointsBuiltOn } from "../sources/kind";
import { CloudProjectAccess, removePointsBackups } from "../sources/cinderBackups";
import type { CloudProject } from "../sources/kind";

/** One point as `coffer list` shows it. */
export interface ListedPoint {
  zone: string;
  set: string;
  point: string;
  takenAt: string;
  sizeBytes: number;
  status: IndexedPoint["status"];
  checkedAt?: string;
  held?: string;
  escrowVersion?: number;
  /** A final-state point: why it was taken, delete or replace, and the FinalStateBackup's URN. */
  final?: IndexedPoint["final"];
  dir: string;
}

/** The set folders under `<target>/sets`, in one zone or all. */
async function setFolders(target: string, zone?: string, set?: string) {
  const setsDir = path.join(target, "sets");
  const zones = zone ? [zone] : (await fs.readdir(setsDir).catch(() => [] as string[])).sort();
  const found: { zone: string; setDir: string }[] = [];
  for (const z of zones) {
    const sets = set ? [set] : (await fs.readdir(path.join(setsDir, z)).catch(() => [] as string[])).sort();
    for (const s of sets) {
      const setDir = path.join(setsDir, z, s);
      if ((await fs.stat(setDir).catch(() => undefined))?.isDirectory()) found.push({ zone: z, setDir });
    }
  }
  return found;
}

const pointDirOf = (setDir: string, id: string) => (id === path.basename(setDir) ? setDir : path.join(setDir, id));

/** Every point on `target` (optionally of one zone or set), from the sets' indexes, without any key. */
export async function listPoints(options: { target: string; zone?: string; set?: string; now: Date }) {
  const listed: ListedPoint[] = [];
  for (const { zone, setDir } of await setFolders(options.target, options.zone, options.set)) {
    const { index } = await currentSetIndex(setAt(options.target, setDir));
    for (const p of index.points) {
      const hold = index.holds.find((h) => h.point === p.id && holdsAt(h, options.now));
      listed.push({
        zone,
        set: index.setId,
        point: p.id,
        takenAt: p.takenAt,
        sizeBytes: p.sizeBytes,
        status: p.status,
        ...(p.checkedAt ? { checkedAt: p.checkedAt } : {}),
        ...(hold ? { held: hold.reason } : {}),
        ...(p.escrow ? { escrowVersion: p.escrow.version } : {}),
        ...(p.final ? { final: p.final } : {}),
        dir: pointDirOf(setDir, p.id),
      });
    }
  }
  return listed;
}

/** `coffer list`'s table: one line per point. */
export function renderPoints(points: readonly ListedPoint[], now: Date): string {
  const rows = points.map((p) => [
    `${p.zone}/${p.set}`,
    p.point,
    `${p.takenAt} (${formatAge(now.getTime() - Date.parse(p.takenAt))} ago)`,
    formatBytes(p.sizeBytes),
    p.status,
    p.held ? `held: ${p.held}` : "",
    p.escrowVersion !== undefined ? `escrow v${p.escrowVersion}` : "",
    p.final
      ? `${p.final.operation} of ${p.final.urn.slice(p.final.urn.lastIndexOf("::") + 2)} (${p.final.reason})`
      : "",
  ]);
  // The final-state column only where there are final points: other tables stay as they were.
  const columns = points.some((p) => p.final) ? 8 : 7;
  const header = ["SET", "POINT", "TAKEN", "SIZE", "STATUS", "HOLD", "ESCROW", "FINAL STATE"].slice(0, columns);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows.map((r) => r.slice(0, columns))]
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

export interface PruneResult {
  setDir: string;
  rules: RetentionRules & { timeZone?: string };
  keep: { point: string; reasons: string[] }[];
  /** `cloudBackups`: the ids of its Cinder backups, deleted (children first) before its folder. */
  prune: { point: string; reason: string; cloudBackups?: string[] }[];
  /** Links merged into the kept point that builds on them (`into`), in order; `problem`: not merged, and why. */
  merge: { point: string; into: string; reason: string; problem?: string }[];
  /** Points no one has verified since the index was rebuilt: kept, and not counted. */
  unchecked: string[];
  deleted: string[];
  cloudBackups: {
    deleted: { point: string; ids: string[] }[];
    /** The backups of points whose folder stays because they could not all be deleted, and why. */
    kept: { point: string; ids: string[]; project?: CloudProject; problem: string }[];
  };
}

/** The cloud as a person's `coffer` signs in to it: OS_* variables, or OS_CLOUD and clouds.yaml. */
export async function cloudFromEnvironment(): Promise<CloudProjectAccess> {
  const deps = cloudDeps();
  return cloudAccessOf(await openCloudFrom({ env: process.env }, deps), deps);
}

type PlannedPoint = IndexedPoint & { status: HistoryPoint["status"]; links?: string[] };

/** The keys `coffer prune` merges links with (absent: it keeps every point a kept point builds on, as before). */
export interface PruneKeys {
  /** An encrypted set's passphrase (it unwraps the chain's key); the policy's manifest key for an unencrypted one. */
  passphrase?: string;
  manifestKey?: string;
  /** Signs the rewritten manifests: needed when the set's manifests are signed. */
  signingKey?: string;
}

/**
 * What pruning `index` would delete, with the functions `pulumi up` uses: the rules (`rules`, or
 * those the set last declared) or the one `point` named, the holds, and what the incrementals
 * build on. Pure: deletes nothing.
 */
export function planPrune(
  index: SetIndex,
  options: { rules?: Record<string, unknown>; point?: string; now: Date; merges?: boolean },
): { rules: PruneResult["rules"]; plan: RetentionPlan<PlannedPoint>; unchecked: string[] } {
  const declared = options.rules ?? index.retention ?? {};
  const { timeZone, ...ruleFields } = declared as Record<string, unknown> & { timeZone?: string };
  const parsed = retentionRules.safeParse(ruleFields);
  if (!parsed.success) throw new Error(parsed.error.issues[0].message);
  const unchecked = index.points.filter((p) => p.status === "unchecked").map((p) => p.id);
  const backups = (p: IndexedPoint) => p.cloud?.backups ?? [];
  const points = index.points.map((p) => ({
    ...p,
    // Not verified since a rebuild: neither counted nor pruned (as failed points are not).
    status: p.status === "unchecked" ? ("missing" as const) : p.status,
    links: chainLinksOf(p, index.points, backups),
  }));
  // Merging needs the set's keys: without them, what a kept point builds on is kept.
  const retained = options.merges ? points : points.map(({ links: _links, ...p }) => p);
  const plan = options.point
    ? choosePoint(points, options.point, index.holds, options.now, options.merges ?? false)
    : planRetention({ points: retained, rules: parsed.data, holds: index.holds, now: options.now, timeZone });
  return { rules: { ...parsed.data, ...(timeZone ? { timeZone } : {}) }, plan, unchecked };
}

/**
 * Applies retention to one set from the target alone, with the functions `pulumi up` uses: the
 * rules and holds are those the set last declared (its index), or `rules` when given. Only
 * verified points count and can be pruned; held points stay, and so do the points a kept point's
 * incrementals build on. With `dryRun`, nothing is deleted. A point's Cinder backups are deleted
 * through `cloud` before its folder; when they can't all be, its folder stays. Each deletion is
 * recorded in the index, so the set's next refresh drops it from Pulumi's state.
 */
export async function prunePoints(options: {
  target: string;
  zone: string;
  set: string;
  rules?: Record<string, unknown>;
  /** Delete exactly this point, whatever its status (a person's decision), unless it is held or needed. */
  point?: string;
  /** With keys, a pruned link a kept point builds on is merged into it; without, it is kept. */
  keys?: PruneKeys;
  dryRun: boolean;
  now: Date;
  by: string;
  /** Signs in to the cloud that holds the points' Cinder backups; called only when a pruned point has some. */
  cloud: () => Promise<CloudProjectAccess>;
  progress?: (message: string) => void;
}): Promise<PruneResult> {
  const setDir = path.join(options.target, "sets", options.zone, options.set);
  if (!(await fs.stat(setDir).catch(() => undefined))?.isDirectory()) {
    throw new Error(`no set ${options.set} in zone ${options.zone} of ${options.target}: see coffer list`);
  }
  const set = setAt(options.target, setDir);
  await settleMerge(setDir);
  const { index } = await currentSetIndex(set);
  const { rules, plan, unchecked } = planPrune(index, { ...options, merges: options.keys !== undefined });
  const backupIds = (p: IndexedPoint) => (p.cloud?.backups ?? []).map((b) => b.id);
  const result: PruneResult = {
    setDir,
    rules,
    keep: plan.keep.map((k) => ({ point: k.point.id, reasons: k.reasons })),
    prune: plan.prune.map(({ point, reason }) => ({
      point: point.id,
      reason,
      ...(point.cloud ? { cloudBackups: backupIds(point) } : {}),
    })),
    merge: plan.merge.map(({ point, into, reason }) => ({ point: point.id, into: into.id, reason })),
    unchecked,
    deleted: [],
    cloudBackups: { deleted: [], kept: [] },
  };
  if (options.dryRun) return result;
  let current: SetIndex = index;
  for (const [n, { point, into }] of plan.merge.entries()) {
    const merged = await mergeByHand(options, setDir, current, point.id, into.id).catch((error: Error) => {
      result.merge[n].problem = error.message;
      return undefined;
    });
    if (!merged) continue;
    result.deleted.push(point.id);
    current = merged;
    await writeSetIndex(set, { ...current, updatedAt: new Date().toISOString() });
  }
  // The cloud's backups first, dependents before their bases (the plan's order): a point whose
  // backups are not all gone keeps its folder and its record, and the next prune tries again.
  let signedIn: Promise<CloudProjectAccess> | undefined;
  const failed = await removePointsBackups(
    plan.prune.map(({ point }) => ({
      id: point.id,
      project: point.cloud?.project,
      refs: point.cloud?.backups ?? [],
      dependsOn: basesOf(point),
    })),
    { access: () => (signedIn ??= options.cloud()), progress: options.progress ?? (() => undefined) },
  );
  for (const { point } of plan.prune) {
    const error = failed.get(point.id);
    if (error) {
      const { project } = point.cloud ?? {};
      result.cloudBackups.kept.push({ point: point.id, ids: backupIds(point), project, problem: error.message });
      continue;
    }
    await deleteSet(pointDirOf(setDir, point.id), options.target);
    result.deleted.push(point.id);
    const cloudBackups = backupIds(point);
    if (cloudBackups.length > 0) result.cloudBackups.deleted.push({ point: point.id, ids: cloudBackups });
    const record = {
      id: point.id,
      prunedAt: options.now.toISOString(),
      by: options.by,
      ...(cloudBackups.length > 0 ? { cloudBackups } : {}),
    };
    const pruned = [...current.pruned, record];
    current = { ...current, points: current.points.filter((p) => p.id !== point.id), pruned };
    // After each deletion: a run stopped half-way still leaves a true index.
    await writeSetIndex(set, { ...current, updatedAt: new Date().toISOString() });
  }
  return result;
}

/** `coffer prune`'s lines: what went (or would), what stays and why, and what to do about backups left. */
export function renderPrune(result: PruneResult, dryRun: boolean): string {
  const verb = dryRun ? "would prune" : "pruned";
  const kept = new Map(result.cloudBackups.kept.map((k) => [k.point, k]));
  const lines = result.prune.map((p) => {
    const backups = p.cloudBackups?.length ? p.cloudBackups.join(", ") : undefined;
    const problem = kept.get(p.point);
    if (problem) {
      const where = problem.project ? ` (project ${problem.project.projectId} at ${problem.project.authUrl})` : "";
      return (
        `not pruned ${p.point}: its Cinder backups ${backups}${where} could not all be deleted ` +
        `(${problem.problem}); its folder and record stay. Run coffer prune again with credentials for that ` +
        "project (OS_* variables, or OS_CLOUD and clouds.yaml), or delete the backups in the cloud yourself " +
        "(incrementals first; one already gone counts as deleted) and run it again"
      );
    }
    const cloud = backups ? `; ${dryRun ? "would delete" : "deleted"} its Cinder backups ${backups}` : "";
    return `${verb} ${p.point}: ${p.reason}${cloud}`;
  });
  for (const m of result.merge) {
    const what = `${m.point} into ${m.into} (${m.reason}; ${m.into}'s incremental backups build on it)`;
    lines.push(
      m.problem
        ? `not merged ${what}: ${m.problem}; both stay as they were`
        : `${dryRun ? "would merge" : "merged"} ${what}`,
    );
  }
  lines.push(...result.keep.map((k) => `keep ${k.point}: ${k.reasons.join("; ")}`));
  if (result.unchecked.length > 0) {
    lines.push(`kept, not verified since the index was rebuilt: ${result.unchecked.join(", ")} (run pulumi refresh)`);
  }
  return lines.join("\n");
}

/**
 * The plan of deleting one named point by hand: refused for a held point, one the index does not
 * list, or one another point's backups build on; except (with `merges`, the set's keys given) a link
 * of a qcow2 chain that one point builds on: it is merged into that point.
 */
function choosePoint<P extends IndexedPoint & { links?: string[] }>(
  points: P[],
  id: string,
  holds: SetIndex["holds"],
  now: Date,
  merges: boolean,
): RetentionPlan<P> {
  const point = points.find((p) => p.id === id);
  if (!point) throw new Error(`the set has no point ${id}: see coffer list`);
  const held = (p: P) => holds.find((h) => h.point === p.id && holdsAt(h, now));
  const hold = held(point);
  if (hold) {
    // A final-state point's hold is in its signed manifest: only time ends it.
    const fix = point.final
      ? `it can be deleted after ${hold.until}`
      : `remove the hold from the set first${hold.until ? `, or wait until ${hold.until}` : ""}`;
    throw new Error(`point ${id} is held (${hold.reason}): ${fix}`);
  }
  const keep = points.filter((p) => p.id !== id).map((p) => ({ point: p, reasons: ["not the point named"] }));
  const dependents = points.filter((p) => p.id !== id && basesOf(p).includes(id));
  if (dependents.length === 0) return { keep, prune: [{ point, reason: "named with --point" }], merge: [] };
  const names = dependents.map((p) => p.id).join(", ");
  const needed = `point ${id} is needed by ${names}: their incrementals build on its backups`;
  const into = dependents.length === 1 ? dependents[0] : undefined;
  // Every point whose manifest a merge rewrites: the one merged into, and the points after it.
  const rewritten = into ? [into, ...points.filter((p) => dependsOnTransitively(points, p, into.id))] : [];
  const frozen = rewritten.find((p) => p.status !== "ok" || held(p));
  if (into && merges && point.status === "ok" && (into.links ?? []).includes(id) && !frozen) {
    return { keep, prune: [], merge: [{ point, into, reason: "named with --point" }] };
  }
  const why =
    !into || !(into.links ?? []).includes(id)
      ? "prune those first, or let retention prune them together"
      : frozen
        ? `it can't be merged into ${into.id}: point ${frozen.id} is ${held(frozen) ? "held" : frozen.status}, ` +
          "and its files never change"
        : point.status !== "ok"
          ? `it can't be merged into ${into.id}: it is ${point.status}`
          : `give the set's passphrase (or manifest key) to merge it into ${into.id}, or prune ${into.id} first`;
  throw new Error(`${needed}; ${why}`);
}

/** Whether `point` builds on `baseId`, directly or through other points. */
function dependsOnTransitively<P extends IndexedPoint>(points: readonly P[], point: P, baseId: string): boolean {
  const seen = new Set<string>();
  const pending = [...basesOf(point)];
  while (pending.length > 0) {
    const id = pending.pop()!;
    if (id === baseId) return true;
    if (seen.has(id)) continue;
    seen.add(id);
    pending.push(...basesOf(points.find((p) => p.id === id) ?? {}));
  }
  return false;
}

/**
 * Merges `from` into `into` by hand (backupSet/merge.ts, with this machine's agent): the index after
 * it, with `from` recorded as merged (and the records of the rewritten points, which refresh takes).
 */
async function mergeByHand(
  options: { target: string; keys?: PruneKeys; now: Date; by: string },
  setDir: string,
  index: SetIndex,
  from: string,
  into: string,
): Promise<SetIndex> {
  const keys = options.keys ?? {};
  const later = index.points
    .filter((p) => dependsOnTransitively(index.points, p, into))
    .sort((a, b) => a.takenAt.localeCompare(b.takenAt));
  const secrets = [keys.passphrase, keys.manifestKey, keys.signingKey].filter((s): s is string => !!s);
  const result = await mergePoint(
    {
      agent: agentClient(undefined),
      target: { path: options.target },
      setDir,
      keys,
      ...(keys.signingKey ? { signingKey: keys.signingKey } : {}),
      keepSigned: true,
      owner: thisProcess(),
      secrets,
    },
    { from, into, later: later.map((p) => p.id) },
  );
  const signer = keys.signingKey ? publicKeyOf(keys.signingKey) : undefined;
  const rewritten: RewrittenPoint[] = result.rewritten.map(({ pointId, manifest }) => {
    const previous = index.points.find((p) => p.id === pointId);
    const linkedTo = manifest.items.flatMap((i) => (i.chain?.base ? [i.chain.base.pointId] : []));
    const cinder = previous
      ? pointsBuiltOn(index.points, (p) => p.cloud?.backups ?? [], previous.cloud?.backups ?? [])
      : [];
    const dependsOn = [...new Set([...cinder, ...linkedTo])];
    return {
      id: pointId,
      itemsSha256: itemsDigest(manifest.items, manifest.cloudItems),
      sizeBytes: manifest.items.reduce((sum, i) => sum + i.sizeBytes, 0),
      ...(dependsOn.length > 0 ? { dependsOn } : {}),
      ...(signer ? { signer } : {}),
    };
  });
  const points = index.points
    .filter((p) => p.id !== from)
    .map((p) => {
      const now = rewritten.find((r) => r.id === p.id);
      if (!now) return p;
      const { dependsOn: _old, ...rest } = p;
      return { ...rest, sizeBytes: now.sizeBytes, ...(now.dependsOn ? { dependsOn: now.dependsOn } : {}) };
    });
  const record = { id: from, prunedAt: options.now.toISOString(), by: options.by, mergedInto: into, rewritten };
  return { ...index, points, pruned: [...index.pruned, record] };
}
