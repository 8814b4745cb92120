import { z } from "zod";
import { CofferError } from "../common/errors";
import { type Periods, periodsIn } from "./calendar";
import { formatAge, MS } from "./duration";
import { type Hold, holdReason, holdsAt } from "./holds";
import { basesOf, type HistoryPoint, newestFirst, takenAtMs } from "./point";

/** The calendar rules, in the order they are applied (Proxmox Backup Server's order). */
export const CALENDAR_RULES = ["keepHourly", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly"] as const;
export const RETENTION_RULES = ["keepLast", ...CALENDAR_RULES, "maxAgeDays"] as const;
export type CalendarRule = (typeof CALENDAR_RULES)[number];
export type RetentionRule = (typeof RETENTION_RULES)[number];

const PERIOD_OF: Record<CalendarRule, keyof Periods> = {
  keepHourly: "hour",
  keepDaily: "day",
  keepWeekly: "week",
  keepMonthly: "month",
  keepYearly: "year",
};

const positiveInteger = (field: string) =>
  z
    .number({ error: `${field} must be a whole number of at least 1` })
    .int({ message: `${field} must be a whole number of at least 1` })
    .min(1, { message: `${field} must be at least 1: leave it out to keep backups without this rule` });

/**
 * A set's retention rules. Each is a whole number >= 1 where given; none at all means retention is
 * not declared, and nothing is pruned.
 */
export const retentionRules = z
  .object(
    {
      keepLast: positiveInteger("retention.keepLast").optional(),
      keepHourly: positiveInteger("retention.keepHourly").optional(),
      keepDaily: positiveInteger("retention.keepDaily").optional(),
      keepWeekly: positiveInteger("retention.keepWeekly").optional(),
      keepMonthly: positiveInteger("retention.keepMonthly").optional(),
      keepYearly: positiveInteger("retention.keepYearly").optional(),
      /** Also keeps every good point younger than this many days. */
      maxAgeDays: positiveInteger("retention.maxAgeDays").optional(),
    },
    {
      error:
        "retention must be an object like { keepLast: 3, keepDaily: 7, keepWeekly: 4, keepMonthly: 6 }, " +
        "or absent to keep every backup",
    },
  )
  .strict();

export type RetentionRules = z.output<typeof retentionRules>;

/** The rules as people write them, in the order they apply: "keepLast 3, keepDaily 7, maxAgeDays 30". */
export function describeRetention(rules: RetentionRules | undefined): string {
  const given = RETENTION_RULES.filter((rule) => rules?.[rule] !== undefined).map((rule) => `${rule} ${rules![rule]}`);
  return given.length > 0 ? given.join(", ") : "no retention rules";
}

export interface RetentionInput<P extends HistoryPoint> {
  points: readonly P[];
  /** Absent or empty: retention is not declared and every point is kept. */
  rules?: RetentionRules;
  holds?: readonly Hold[];
  now: Date;
  /** The IANA zone whose calendar days, weeks, ... the rules count; default "UTC". */
  timeZone?: string;
}

export interface KeptPoint<P> {
  point: P;
  /** Why, e.g. "keepDaily 2026-11-25", "newest good point", "held: legal hold", "needed by p-42". */
  reasons: string[];
}

export interface PrunedPoint<P> {
  point: P;
  /** Why no rule keeps it, e.g. "keepDaily 2026-11-25 keeps the newer point p-17". */
  reason: string;
}

/** A pruned link of a qcow2 chain that a kept point builds on: its backups are merged into that point's. */
export interface MergedPoint<P> {
  point: P;
  /** The kept point whose backups take in its clusters (its nearest kept descendant). */
  into: P;
  /** Why no rule keeps it (as a pruned point's). */
  reason: string;
}

export interface RetentionPlan<P> {
  /** Newest first. */
  keep: KeptPoint<P>[];
  /** In an order safe to delete one by one: a point comes before any point it depends on. */
  prune: PrunedPoint<P>[];
  /**
   * In the order to merge, one by one: each into its kept point, nearest base first. Then the point
   * goes; its kept point (and every point after it in the chain) stays restorable.
   */
  merge: MergedPoint<P>[];
}

/**
 * Which points of a set retention keeps and which it prunes. Pure: the same input gives the same
 * plan, whatever order the points are listed in.
 *
 * - Only `ok` points count for the rules and can be pruned; failed points (evidence) and missing
 *   ones are kept, and so is every point whose takenAt is not a valid time.
 * - The rules run in the order keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly,
 *   keepYearly, as in Proxmox Backup Server: each keeps the newest point of each of its last N
 *   periods that have a point, newest first; a period whose newest point an earlier rule already
 *   keeps does not count, so each rule reaches further back than the rules before it.
 *   (PBS instead skips a period holding any kept point; that differs only where weeks straddle
 *   months or years, and makes adding a rule able to prune a point, which this never does.)
 * - maxAgeDays N also keeps every point younger than N days, without shifting the other rules.
 * - The newest good point, points under a hold still in force, and (transitively) every point a
 *   kept point depends on are always kept; except a link of a qcow2 chain (`links`) that no rule
 *   keeps and only one point builds on: it is merged into its nearest kept descendant (`merge`),
 *   unless a held or not-ok point depends on it (a held point's or evidence's files never change).
 * - Without rules nothing is pruned.
 */
export function planRetention<P extends HistoryPoint>(input: RetentionInput<P>): RetentionPlan<P> {
  const { points, rules = {}, holds = [], now } = input;
  const byId = new Map<string, P>();
  for (const point of points) {
    if (byId.has(point.id)) {
      throw new CofferError("INVALID_INPUT", `point ids must be unique within a set: "${point.id}" appears twice`, {
        field: "points",
      });
    }
    byId.set(point.id, point);
  }
  const reasons = new Map<string, string[]>();
  const keep = (point: P, reason: string) => {
    const list = reasons.get(point.id);
    if (!list) reasons.set(point.id, [reason]);
    else if (!list.includes(reason)) list.push(reason);
  };

  const good = points.filter((p) => p.status === "ok" && !Number.isNaN(takenAtMs(p))).sort(newestFirst);
  const declared = RETENTION_RULES.some((rule) => rules[rule] !== undefined);
  const covered = declared ? applyRules(good, rules, input.timeZone ?? "UTC", keep) : [];
  if (!declared) for (const point of good) keep(point, "no retention rules");
  if (rules.maxAgeDays !== undefined) {
    for (const point of good) {
      const age = now.getTime() - takenAtMs(point);
      if (age < rules.maxAgeDays * MS.DAY) keep(point, `maxAgeDays ${rules.maxAgeDays} (${formatAge(age)} old)`);
    }
  }
  if (good.length > 0) keep(good[0], "newest good point");
  for (const hold of holds) {
    const point = byId.get(hold.point);
    if (point && holdsAt(hold, now)) keep(point, holdReason(hold));
  }
  for (const point of points) {
    if (point.status !== "ok") keep(point, `${point.status}: never pruned automatically`);
    else if (Number.isNaN(takenAtMs(point))) keep(point, "takenAt is not a valid time: never pruned automatically");
  }
  // What a held point or evidence depends on never changes: their ancestors are kept as they are.
  const frozen = points.filter(
    (p) => p.status !== "ok" || Number.isNaN(takenAtMs(p)) || holds.some((h) => h.point === p.id && holdsAt(h, now)),
  );
  keepDependencies(byId, frozen, keep);
  const merging = keepOrMergeDependencies(byId, reasons, keep);

  const sorted = [...points].sort(safeNewestFirst);
  const kept = sorted.filter((p) => reasons.has(p.id)).map((point) => ({ point, reasons: reasons.get(point.id)! }));
  const why = (point: P) => pruneReason(point, covered, rules, now);
  const pruned = deletionOrder(
    sorted.filter((p) => !reasons.has(p.id) && !merging.has(p.id)),
    byId,
  ).map((point) => ({ point, reason: why(point) }));
  const merge = [...merging.entries()].map(([id, into]) => ({
    point: byId.get(id)!,
    into,
    reason: why(byId.get(id)!),
  }));
  return { keep: kept, prune: pruned, merge };
}

/** For each calendar rule, the periods it went through and the kept point that stands for each. */
type Coverage<P> = { rule: CalendarRule; periodOf: (point: P) => string; keptIn: Map<string, P> }[];

/** Runs keepLast and the calendar rules over `good` (newest first), calling `keep` for what they keep. */
function applyRules<P extends HistoryPoint>(
  good: P[],
  rules: RetentionRules,
  timeZone: string,
  keep: (point: P, reason: string) => void,
): Coverage<P> {
  const coverage: Coverage<P> = [];
  const kept = new Set<string>();
  const mark = (point: P, reason: string) => {
    kept.add(point.id);
    keep(point, reason);
  };
  if (rules.keepLast !== undefined) {
    const last = good.slice(0, rules.keepLast);
    last.forEach((point, i) => mark(point, `keepLast (${i + 1} of ${rules.keepLast})`));
  }
  const calendarRules = CALENDAR_RULES.filter((rule) => rules[rule] !== undefined);
  if (calendarRules.length === 0) return coverage;
  const periodsAt = periodsIn(timeZone);
  const periodsOf = new Map(good.map((point) => [point.id, periodsAt(takenAtMs(point))]));
  for (const rule of calendarRules) {
    const limit = rules[rule]!;
    const periodOf = (point: P) => (periodsOf.get(point.id) ?? periodsAt(takenAtMs(point)))[PERIOD_OF[rule]];
    const keptIn = new Map<string, P>();
    let counted = 0;
    for (const point of good) {
      const period = periodOf(point);
      if (keptIn.has(period)) continue;
      // `point` is the newest of `period`: already kept means the period is covered and doesn't count.
      if (!kept.has(point.id)) {
        if (counted === limit) break;
        counted++;
        mark(point, `${rule} ${period}`);
      }
      keptIn.set(period, point);
    }
    coverage.push({ rule, periodOf, keptIn });
  }
  return coverage;
}

/** Keeps every point `from` depends on, transitively; ids not in the set are ignored. */
function keepDependencies<P extends HistoryPoint>(
  byId: Map<string, P>,
  from: readonly P[],
  keep: (point: P, reason: string) => void,
) {
  // Oldest first, so that pop() takes the newest: reasons come out the same however points are listed.
  const pending = [...from].sort(safeNewestFirst).reverse();
  const visited = new Set(pending.map((p) => p.id));
  while (pending.length > 0) {
    const dependent = pending.pop()!;
    for (const baseId of basesOf(dependent)) {
      const base = byId.get(baseId);
      if (!base || base.id === dependent.id) continue;
      keep(base, `needed by ${dependent.id}`);
      if (!visited.has(base.id)) {
        visited.add(base.id);
        pending.push(base);
      }
    }
  }
}

/**
 * For each kept point, newest first, what it depends on: a point no rule keeps that is a link of its
 * qcow2 chain (and built on by it alone) is merged into it, and that point's own bases become its
 * in turn; any other is kept (`needed by`), transitively. Returns each merged point's id and the kept
 * point it merges into, in the order to merge (nearest base first).
 */
function keepOrMergeDependencies<P extends HistoryPoint>(
  byId: Map<string, P>,
  reasons: Map<string, string[]>,
  keep: (point: P, reason: string) => void,
): Map<string, P> {
  const dependents = new Map<string, string[]>();
  for (const point of byId.values()) {
    for (const base of new Set(basesOf(point))) dependents.set(base, [...(dependents.get(base) ?? []), point.id]);
  }
  const merges = new Map<string, P>();
  const mergeable = (base: P, dependent: P) =>
    base.status === "ok" && (dependent.links ?? []).includes(base.id) && (dependents.get(base.id) ?? []).length === 1;
  // Oldest first, so that pop() takes the newest: reasons come out the same however points are listed.
  const pending = [...byId.values()]
    .filter((p) => reasons.has(p.id))
    .sort(safeNewestFirst)
    .reverse()
    .map((p) => ({ dependent: p, into: p }));
  const visited = new Set(pending.map((p) => p.dependent.id));
  while (pending.length > 0) {
    const { dependent, into } = pending.pop()!;
    // A merged point's bases are, once it is merged, the bases of the point it went into.
    const needed = `needed by ${into.id}`;
    for (const baseId of basesOf(dependent)) {
      const base = byId.get(baseId);
      if (!base || base.id === dependent.id || visited.has(base.id)) {
        if (base && reasons.has(base.id) && base.id !== dependent.id) keep(base, needed);
        continue;
      }
      visited.add(base.id);
      if (!reasons.has(base.id) && mergeable(base, dependent)) {
        merges.set(base.id, into);
        pending.push({ dependent: base, into });
      } else {
        keep(base, needed);
        pending.push({ dependent: base, into: base });
      }
    }
  }
  return merges;
}

/** Newest first, with points whose time is invalid last (by id). */
function safeNewestFirst(a: HistoryPoint, b: HistoryPoint): number {
  const aBad = Number.isNaN(takenAtMs(a));
  const bBad = Number.isNaN(takenAtMs(b));
  if (aBad || bBad) return aBad && bBad ? (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) : aBad ? 1 : -1;
  return newestFirst(a, b);
}

/** `pruned` (newest first) reordered so that a point comes before the pruned points it depends on. */
function deletionOrder<P extends HistoryPoint>(pruned: P[], byId: Map<string, P>): P[] {
  const prunedIds = new Set(pruned.map((p) => p.id));
  const dependents = new Map<string, P[]>();
  for (const point of pruned) {
    for (const base of basesOf(point)) {
      if (!prunedIds.has(base) || !byId.has(base)) continue;
      const list = dependents.get(base);
      if (list) list.push(point);
      else dependents.set(base, [point]);
    }
  }
  const order: P[] = [];
  const placed = new Set<string>();
  const place = (point: P) => {
    if (placed.has(point.id)) return;
    placed.add(point.id);
    for (const dependent of dependents.get(point.id) ?? []) place(dependent);
    order.push(point);
  };
  for (const point of pruned) place(point);
  return order;
}

function pruneReason<P extends HistoryPoint>(point: P, covered: Coverage<P>, rules: RetentionRules, now: Date): string {
  for (const { rule, periodOf, keptIn } of covered) {
    const period = periodOf(point);
    const newer = keptIn.get(period);
    if (newer) return `${rule} ${period} keeps the newer point ${newer.id}`;
  }
  return `beyond what ${describeRetention(rules)} keeps (${formatAge(now.getTime() - takenAtMs(point))} old)`;
}
