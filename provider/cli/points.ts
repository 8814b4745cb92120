import { promises as fs } from "node:fs";
import * as path from "node:path";
import { deleteSet } from "../agent/backupSet";
import { IndexedPoint, SetIndex, currentSetIndex, setAt, writeSetIndex } from "../agent/pointIndex";
import { formatBytes } from "../common/sizes";
import { formatAge } from "../history/duration";
import { holdsAt } from "../history/holds";
import { RetentionRules, planRetention, retentionRules } from "../history/retention";

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
  ]);
  const header = ["SET", "POINT", "TAKEN", "SIZE", "STATUS", "HOLD", "ESCROW"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows]
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
  prune: { point: string; reason: string }[];
  /** Points no one has verified since the index was rebuilt: kept, and not counted. */
  unchecked: string[];
  deleted: string[];
}

/**
 * Applies retention to one set from the target alone, with the functions `pulumi up` uses: the
 * rules and holds are those the set last declared (its index), or `rules` when given. Only
 * verified points count and can be pruned; held points stay. With `dryRun`, nothing is deleted.
 * Each deletion is recorded in the index, so the set's next refresh drops it from Pulumi's state.
 */
export async function prunePoints(options: {
  target: string;
  zone: string;
  set: string;
  rules?: Record<string, unknown>;
  /** Delete exactly this point, whatever its status (a person's decision), unless it is held. */
  point?: string;
  dryRun: boolean;
  now: Date;
  by: string;
}): Promise<PruneResult> {
  const setDir = path.join(options.target, "sets", options.zone, options.set);
  if (!(await fs.stat(setDir).catch(() => undefined))?.isDirectory()) {
    throw new Error(`no set ${options.set} in zone ${options.zone} of ${options.target}: see coffer list`);
  }
  const set = setAt(options.target, setDir);
  const { index } = await currentSetIndex(set);
  const declared = options.rules ?? index.retention ?? {};
  const { timeZone, ...ruleFields } = declared as Record<string, unknown> & { timeZone?: string };
  const parsed = retentionRules.safeParse(ruleFields);
  if (!parsed.success) throw new Error(parsed.error.issues[0].message);
  const rules = parsed.data;
  const unchecked = index.points.filter((p) => p.status === "unchecked").map((p) => p.id);
  const points = index.points.map((p) => ({
    ...p,
    // Not verified since a rebuild: neither counted nor pruned (as failed points are not).
    status: p.status === "unchecked" ? ("missing" as const) : p.status,
  }));
  const plan = options.point
    ? choosePoint(points, options.point, index.holds, options.now)
    : planRetention({ points, rules, holds: index.holds, now: options.now, timeZone });
  const result: PruneResult = {
    setDir,
    rules: { ...rules, ...(timeZone ? { timeZone } : {}) },
    keep: plan.keep.map((k) => ({ point: k.point.id, reasons: k.reasons })),
    prune: plan.prune.map((p) => ({ point: p.point.id, reason: p.reason })),
    unchecked,
    deleted: [],
  };
  if (options.dryRun) return result;
  let current: SetIndex = index;
  for (const { point } of plan.prune) {
    await deleteSet(pointDirOf(setDir, point.id), options.target);
    result.deleted.push(point.id);
    const pruned = [...current.pruned, { id: point.id, prunedAt: options.now.toISOString(), by: options.by }];
    current = { ...current, points: current.points.filter((p) => p.id !== point.id), pruned };
    // After each deletion: a run stopped half-way still leaves a true index.
    await writeSetIndex(set, { ...current, updatedAt: new Date().toISOString() });
  }
  return result;
}

/** The plan of deleting one named point by hand: refused for a held point or one the index does not list. */
function choosePoint<P extends { id: string }>(
  points: P[],
  id: string,
  holds: SetIndex["holds"],
  now: Date,
): { keep: { point: P; reasons: string[] }[]; prune: { point: P; reason: string }[] } {
  const point = points.find((p) => p.id === id);
  if (!point) throw new Error(`the set has no point ${id}: see coffer list`);
  const hold = holds.find((h) => h.point === id && holdsAt(h, now));
  if (hold) throw new Error(`point ${id} is held (${hold.reason}): remove the hold from the set first`);
  const keep = points.filter((p) => p.id !== id).map((p) => ({ point: p, reasons: ["not the point named"] }));
  return { keep, prune: [{ point, reason: "named with --point" }] };
}
