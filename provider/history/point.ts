/**
 * One point of a set's backup history, as retention and scheduling see it. Callers pass their own
 * richer records (with manifests, paths, ...): the planning functions hand the same objects back.
 */
export const POINT_STATUSES = ["ok", "failed", "missing"] as const;
export type PointStatus = (typeof POINT_STATUSES)[number];

export interface HistoryPoint {
  /** Unique within the set. */
  id: string;
  /** ISO 8601 time the point was taken, e.g. "2026-11-25T03:00:00Z". */
  takenAt: string;
  /**
   * ok: verified, counts for retention and RPO. failed: verification failed (kept as evidence,
   * never deleted automatically). missing: recorded, but its data is gone.
   */
  status: PointStatus;
  sizeBytes: number;
  /** What verification found, for a failed point. */
  failures?: string[];
  /** The point(s) this one needs to be restored (the bases of its incrementals). */
  dependsOn?: string | readonly string[];
  /**
   * Those of `dependsOn` whose backups this point's links of a qcow2 chain build on (Coffer's own
   * chains, not Cinder's): retention prunes such a base by merging it into this point.
   */
  links?: readonly string[];
}

/** The ids of the points `point` depends on. */
export const basesOf = (point: Pick<HistoryPoint, "dependsOn">): readonly string[] =>
  point.dependsOn === undefined ? [] : typeof point.dependsOn === "string" ? [point.dependsOn] : point.dependsOn;

/** Milliseconds since the epoch of `point.takenAt`, or NaN when it is not a valid time. */
export function takenAtMs(point: Pick<HistoryPoint, "takenAt">): number {
  return Date.parse(point.takenAt);
}

/** Newest first; ties (same instant) by id, so the order never depends on how points were listed. */
export function newestFirst(a: HistoryPoint, b: HistoryPoint): number {
  const byTime = takenAtMs(b) - takenAtMs(a);
  if (byTime !== 0) return byTime;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/**
 * The newest point of any status and the newest ok one: what `pointDue` and `overdue` need.
 * Points whose takenAt is not a valid time are left out.
 */
export function newestPoints<P extends HistoryPoint>(points: readonly P[]): { newest?: P; newestGood?: P } {
  const dated = points.filter((p) => !Number.isNaN(takenAtMs(p))).sort(newestFirst);
  return { newest: dated[0], newestGood: dated.find((p) => p.status === "ok") };
}
