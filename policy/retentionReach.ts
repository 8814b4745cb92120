/**
 * How many days of recovery points a retention keeps, as a lower bound a preview can know.
 *
 * "Keeps N days" means: with points taken on the set's schedule, the points retention keeps stand
 * for at least N days, each kept point counting for the period it is the newest of. Per rule form
 * (provider/history/retention.ts):
 * - no retention: every point is kept (unbounded);
 * - `maxAgeDays M`: every point younger than M days: M;
 * - `keepHourly|Daily|Weekly|Monthly|Yearly K`: the newest point of each of the last K periods that
 *   have one: K periods (an hour is 1/24 day, a month 28 days, a year 365); a schedule sparser
 *   than the period puts each point in a period of its own, so K points that far apart;
 * - `keepLast K`: K points, so K times the schedule's shortest gap; without a schedule points come
 *   only when `trigger` changes, at no known pace: 0 days.
 * Rules together keep the most any one keeps (they reach further together; that is not counted).
 * Not knowable at preview: points taken for a changed trigger besides the schedule make keepLast
 * (and a calendar rule whose period holds several) cover less; failed points do not count.
 */
import { MS, parseDuration } from "../provider/history/duration";
import type { RetentionRules } from "../provider/history/retention";
import { type Schedule, nextCronTime } from "../provider/history/schedule";

export type RetentionInput = (RetentionRules & { timeZone?: string }) | null | undefined;

/** Each calendar rule's period in hours: a month counts its shortest, 28 days. */
const PERIOD_HOURS = {
  keepHourly: 1,
  keepDaily: 24,
  keepWeekly: 7 * 24,
  keepMonthly: 28 * 24,
  keepYearly: 365 * 24,
} as const;

/** Cron runs looked at for the shortest gap: a year of daily runs, enough to meet a DST change. */
const CRON_RUNS_SAMPLED = 400;

/** The shortest time between two points the schedule asks for, in ms; undefined without a schedule. */
export function shortestScheduleGapMs(schedule: Schedule | null | undefined, from = new Date()): number | undefined {
  if (!schedule) return undefined;
  if ("every" in schedule) return parseDuration(schedule.every);
  const tz = schedule.timeZone ?? "UTC";
  let previous = nextCronTime(schedule.cron, from, tz).getTime();
  let shortest = Infinity;
  for (let i = 1; i < CRON_RUNS_SAMPLED; i++) {
    const next = nextCronTime(schedule.cron, new Date(previous), tz).getTime();
    shortest = Math.min(shortest, next - previous);
    previous = next;
  }
  return shortest;
}

export interface RetentionReach {
  /** Infinity when every point is kept. */
  days: number;
  /** The rule that reaches furthest, e.g. "keepDaily 7" or "keepLast 6, a point at most every 12 h". */
  reachedBy: string;
}

/** The days `retention` keeps for a set whose schedule's shortest gap is `gapMs` (undefined: none). */
export function retentionReach(retention: RetentionInput, gapMs: number | undefined): RetentionReach {
  if (retention === null || retention === undefined) return { days: Infinity, reachedBy: "no retention" };
  const gapHours = gapMs === undefined ? 0 : gapMs / MS.HOUR;
  const reaches: RetentionReach[] = [];
  if (retention.maxAgeDays !== undefined) {
    reaches.push({ days: retention.maxAgeDays, reachedBy: `maxAgeDays ${retention.maxAgeDays}` });
  }
  if (retention.keepLast !== undefined) {
    const pace = gapMs === undefined ? "without a schedule" : `a point at most every ${formatDays(gapHours / 24)}`;
    reaches.push({ days: (retention.keepLast * gapHours) / 24, reachedBy: `keepLast ${retention.keepLast}, ${pace}` });
  }
  for (const rule of Object.keys(PERIOD_HOURS) as (keyof typeof PERIOD_HOURS)[]) {
    const count = retention[rule];
    if (count === undefined) continue;
    reaches.push({ days: (count * Math.max(PERIOD_HOURS[rule], gapHours)) / 24, reachedBy: `${rule} ${count}` });
  }
  if (reaches.length === 0) return { days: Infinity, reachedBy: "no retention rules" };
  return reaches.reduce((best, reach) => (reach.days > best.days ? reach : best));
}

/** "3 d", "12 h", "1.5 h": short and exact enough for a message. */
export function formatDays(days: number): string {
  if (days >= 1) return `${Number(days.toFixed(2))} d`;
  return `${Number((days * 24).toFixed(2))} h`;
}
