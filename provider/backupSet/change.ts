import { canonicalJson } from "../common/canonicalJson";
import { formatBytes } from "../common/sizes";
import { UNKNOWN, changedKeys, unknownPaths } from "../common/check";
import { formatAge } from "../history/duration";
import { newestPoints } from "../history/point";
import { planRetention } from "../history/retention";
import { pointDue } from "../history/schedule";
import { chainLinksOf } from "../sources/kind";
import { chainFrom } from "./chain";
import { chainsThroughQemu } from "./plan";
import type { BackupSetInputs } from "./schema";
import { type BackupSetOutputs, type PointRecord, targetOfPolicy } from "./state";

/** Settings that shape the next point; a change applies from it on and never touches a point taken. */
const NEXT_POINT_SETTINGS = ["policy", "keys", "sources", "host", "escrow", "keyEscrow"] as const;
/** Settings of the set itself. */
const SET_SETTINGS = ["concurrency", "schedule", "holds", "deleteBackupsOnDestroy", "history"] as const;

/** What the next `up` does to a set, decided before anything happens; `pulumi preview` prints it. */
export interface SetChange {
  changes: boolean;
  /** Why a point is due; undefined when none is. */
  take?: string[];
  /** Points the next `up` prunes (after its new point verifies, when it takes one), oldest first. */
  prune: PointRecord[];
  /** Links of qcow2 chains it prunes by merging each into the kept point that builds on it, in order. */
  merge: PointMerge[];
  /** Changed settings of the next point. */
  fromNextPoint: string[];
  /** Changed settings of the set (concurrency, schedule, holds...). */
  setSettings: string[];
  /** What could not be planned because a value is not known until apply. */
  unknown: string[];
  /** Held point ids this set has no point of (a typo holds nothing). */
  strayHolds: string[];
}

/** The key a set is made with: the passphrase, or for an unencrypted set the manifest key. */
export function usedKey(inputs: object): unknown {
  const { policy, keys } = inputs as {
    policy?: { encrypted?: unknown };
    keys?: { passphrase?: unknown; manifestKey?: unknown };
  };
  return policy?.encrypted === false ? keys?.manifestKey : keys?.passphrase;
}

const isUnknown = (value: unknown) => value === UNKNOWN;

/** A pruned link of a qcow2 chain and the kept point it is merged into. */
export interface PointMerge {
  point: PointRecord;
  into: PointRecord;
}

export { newestPoints };
const dateOf = (point: PointRecord | undefined) => (point ? new Date(point.takenAt) : undefined);

/** chainLinksOf for a point of state: its Cinder backups are `cloud`, and a merge works in one location. */
export const stateChainLinksOf = (point: PointRecord, points: readonly PointRecord[]): string[] =>
  chainLinksOf(
    point,
    points,
    (p) => p.cloud ?? [],
    (base) => base.loc === point.loc,
  );

/**
 * The retention decision for `points` under the set's declared rules and holds, at `now`: the points
 * it prunes, and the links it merges into the kept points that build on them. Points are pruned only
 * when rules are declared; a point about to be taken counts as the newest good one (a link on
 * `newPoint.linksOn`, when it will be one).
 */
export function pruneCandidates(
  points: readonly PointRecord[],
  inputs: Pick<BackupSetInputs, "history" | "holds">,
  now: Date,
  newPoint?: { linksOn?: string },
): { prune: PointRecord[]; merge: PointMerge[] } {
  const rules = inputs.history?.retention;
  if (!rules || Object.keys(rules).length === 0) return { prune: [], merge: [] };
  const candidates: PointRecord[] = [...points];
  if (newPoint) {
    const next = { id: "(the new point)", takenAt: now.toISOString(), status: "ok" as const, sizeBytes: 0 };
    const linksOn = newPoint.linksOn;
    const loc = points.find((p) => p.id === linksOn)?.loc ?? 0;
    const links = linksOn ? { dependsOn: [linksOn] } : {};
    candidates.push({ ...next, loc, itemsSha256: "", key: 0, checkedAt: next.takenAt, ...links });
  }
  const plan = planRetention({
    points: candidates.map((p) => ({ ...p, links: stateChainLinksOf(p, candidates) })),
    rules,
    holds: inputs.holds ?? [],
    now,
    timeZone: rules.timeZone,
  });
  const pruned = new Set(plan.prune.map((p) => p.point.id));
  const record = (id: string) => candidates.find((p) => p.id === id)!;
  return {
    prune: points.filter((p) => pruned.has(p.id)),
    merge: plan.merge.map(({ point, into }) => ({ point: record(point.id), into: record(into.id) })),
  };
}

/**
 * The plan of an update: whether a point is due (trigger changed, schedule, the newest point
 * failed, the RPO passed), what retention prunes, and which settings apply from the next point.
 * `news` are checked inputs; during preview some values are Pulumi's unknown sentinel.
 */
export function planSetChange(state: BackupSetOutputs, news: BackupSetInputs, now: Date): SetChange {
  const signingKeyOf = (inputs: unknown) => (inputs as { keys?: { signingKey?: unknown } }).keys?.signingKey;
  // A Swift key rotated: state must hold the new one, which refresh and prune sign in with.
  const targetKeyOf = (inputs: unknown) => (inputs as { keys?: { targetKey?: unknown } }).keys?.targetKey;
  const sameKey = {
    keys: (o: unknown, n: unknown) =>
      usedKey(o as object) === usedKey(n as object) &&
      signingKeyOf(o) === signingKeyOf(n) &&
      targetKeyOf(o) === targetKeyOf(n),
  };
  const fromNextPoint = changedKeys(state, news, [...NEXT_POINT_SETTINGS], sameKey);
  // State written before histories has no `history`: the same as one with nothing set.
  const historyOf = (inputs: object) => canonicalJson((inputs as { history?: unknown }).history ?? {});
  const sameHistory = { history: (o: object, n: object) => historyOf(o) === historyOf(n) };
  const setSettings = changedKeys(state, news, [...SET_SETTINGS], sameHistory);
  const { newest, newestGood } = newestPoints(state.points);
  // During preview any of these may be Pulumi's unknown sentinel (or hold one); `up` decides then.
  const unknownOf = {
    trigger: isUnknown(news.trigger),
    schedule: unknownPaths(news.schedule ?? null).length > 0,
    rpoHours: isUnknown(news.history) || isUnknown(news.history?.rpoHours),
    retention: unknownPaths(news.history ?? null).length > 0 || unknownPaths(news.holds ?? null).length > 0,
  };
  const unknown = Object.entries(unknownOf).flatMap(([name, isIt]) => (isIt ? [name] : []));
  const history = isUnknown(news.history) ? undefined : news.history;
  const due = pointDue({
    schedule: unknownOf.schedule ? undefined : news.schedule,
    lastPointAt: dateOf(newest),
    newestStatus: newest?.status,
    newestGoodAt: dateOf(newestGood),
    triggerChanged: !unknownOf.trigger && news.trigger !== state.trigger,
    rpoHours: unknownOf.rpoHours ? undefined : (history?.rpoHours ?? undefined),
    now,
  });
  const mayBeDue = unknownOf.trigger || unknownOf.schedule || unknownOf.rpoHours;
  const take = due.due ? due.reasons : mayBeDue ? ["maybe: a value it depends on is not known until apply"] : undefined;
  const newPoint = take === undefined ? undefined : { linksOn: nextLinksOn(state, news, fromNextPoint) };
  const { prune, merge } = unknownOf.retention
    ? { prune: [], merge: [] }
    : pruneCandidates(state.points, news, now, newPoint);
  const changes =
    take !== undefined || prune.length > 0 || merge.length > 0 || fromNextPoint.length > 0 || setSettings.length > 0;
  const ids = new Set(state.points.map((p) => p.id));
  const holds = Array.isArray(news.holds) ? news.holds : [];
  const strayHolds = holds.map((h) => h.point).filter((id) => typeof id === "string" && !isUnknown(id) && !ids.has(id));
  return { changes, take, prune, merge, fromNextPoint, setSettings, unknown, strayHolds };
}

/** The point a new point's qcow2 links will build on (chainFrom), when it has incremental sources; else none. */
function nextLinksOn(state: BackupSetOutputs, news: BackupSetInputs, fromNextPoint: string[]): string | undefined {
  const sources = Array.isArray(news.sources) ? news.sources : [];
  if (fromNextPoint.includes("keys") || !sources.some((s) => !isUnknown(s) && chainsThroughQemu(s))) return undefined;
  if (isUnknown(news.policy) || isUnknown(news.policy?.target)) return undefined;
  const location = {
    targetPath: targetOfPolicy(news.policy).targetPath,
    zone: news.policy.zone,
    manifestHost: news.host ?? news.policy.host ?? "local",
  };
  const from = chainFrom(state.points, state.locations, { keyVersion: state.keyVersion, location }, () => "");
  return "pointId" in from ? from.pointId : undefined;
}

/** What deleting a point deletes: its bytes in the target, and its backups in the cloud by id. */
function holdings(point: PointRecord): string {
  const cloud = (point.cloud ?? []).map((ref) => ref.id);
  if (cloud.length === 0) return formatBytes(point.sizeBytes);
  const backups = `cinder backup${cloud.length > 1 ? "s" : ""} ${cloud.join(", ")}`;
  return point.sizeBytes > 0 ? `${formatBytes(point.sizeBytes)} and ${backups}` : backups;
}

/** The lines `pulumi preview` shows for a set's change, naming points by id and age. */
export function describeChange(setId: string, change: SetChange, now: Date): string[] {
  const lines: string[] = [];
  const age = (p: PointRecord) => formatAge(now.getTime() - Date.parse(p.takenAt));
  if (change.take) lines.push(`set ${setId}: takes a point: ${change.take.join("; ")}`);
  if (change.prune.length > 0) {
    const named = change.prune.map((p) => `${p.id} (${age(p)} old, ${holdings(p)})`).join(", ");
    const after = change.take ? "after the new point verifies, " : "";
    lines.push(`set ${setId}: ${after}prunes ${change.prune.length} point(s) by retention: ${named}`);
  }
  for (const { point, into } of change.merge) {
    const after = change.take ? "after the new point verifies, " : "";
    const into_ = into.id === "(the new point)" ? "the new point" : into.id;
    lines.push(
      `set ${setId}: ${after}merges ${point.id} (${age(point)} old) into ${into_}: retention prunes it, and ` +
        `${into_}'s incremental backups build on it, so they take in its data`,
    );
  }
  if (change.fromNextPoint.length > 0) {
    lines.push(
      `set ${setId}: ${change.fromNextPoint.join(", ")} changed: ` +
        "applies from the next point; no point taken is changed",
    );
  }
  for (const id of change.strayHolds) {
    lines.push(
      `set ${setId}: holds names point ${id}, which this set does not have: it holds nothing (see coffer list)`,
    );
  }
  if (change.setSettings.length > 0) lines.push(`set ${setId}: ${change.setSettings.join(", ")} changed`);
  if (change.unknown.length > 0) {
    lines.push(`set ${setId}: ${change.unknown.join(" and ")} not known until apply: the up decides`);
  }
  return lines;
}
