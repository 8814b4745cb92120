import { CronExpressionParser } from "cron-parser";
import { z } from "zod";
import { isTimeZone } from "./calendar";
import { DURATION_EXAMPLES, formatAge, MS, parseDuration } from "./duration";
import type { PointStatus } from "./point";

/** A set's schedule: a point every fixed duration after the last one, or at cron times in a zone. */
export type Schedule = { every: string } | { cron: string; timeZone?: string };

const SHAPES = '{ every: "24h" } or { cron: "0 3 * * *", timeZone: "Europe/Berlin" }';
const CRON_EXAMPLES =
  '5 fields "minute hour day-of-month month day-of-week" like "0 3 * * *", ' +
  'or 6 with seconds first like "*/30 * * * * *"';

/** Why `expression` is not a cron expression Coffer takes, or undefined when it is one. */
export function cronProblem(expression: string): string | undefined {
  const fields = expression.trim().split(/\s+/);
  const predefined = fields.length === 1 && fields[0].startsWith("@");
  if (!predefined && fields.length !== 5 && fields.length !== 6) {
    const count = expression.trim() ? fields.length : 0;
    return `schedule.cron must have ${CRON_EXAMPLES}; ${JSON.stringify(expression)} has ${count}`;
  }
  // cron-parser's H picks a random value unless seeded: a plan must not change from run to run.
  if (fields.some((field) => /(^|[^A-Za-z])H([^A-Za-z]|$)/.test(field))) {
    return `schedule.cron must not use H (a random value): write the minute and hour out, e.g. "17 3 * * *"`;
  }
  try {
    CronExpressionParser.parse(expression, { currentDate: 0, tz: "UTC" }).next();
    return undefined;
  } catch (error) {
    return `schedule.cron is not a valid cron expression (${(error as Error).message}): use ${CRON_EXAMPLES}`;
  }
}

/**
 * `{ every: "<duration>" }` | `{ cron: "<expression>", timeZone?: "<IANA zone>" }`. Durations are
 * whole d/h/m/s, largest first; cron takes 5 fields, or 6 with seconds first, or "@daily" and the
 * like; cron times are in `timeZone` (default UTC), DST included.
 */
export const schedule = z
  .object(
    {
      every: z
        .string({ error: `schedule.every must be a duration such as ${DURATION_EXAMPLES}` })
        .refine((every) => parseDuration(every) !== undefined, {
          message:
            `schedule.every must be a duration such as ${DURATION_EXAMPLES}: ` +
            "whole days, hours, minutes and seconds, largest first, more than 0",
        })
        .optional(),
      cron: z
        .string({ error: `schedule.cron must be a cron expression such as "0 3 * * *"` })
        .superRefine((cron, ctx) => {
          const problem = cronProblem(cron);
          if (problem) ctx.addIssue({ code: "custom", message: problem });
        })
        .optional(),
      timeZone: z
        .string({ error: 'schedule.timeZone must be an IANA time zone such as "Europe/Berlin"' })
        .refine(isTimeZone, {
          message: 'schedule.timeZone must be an IANA time zone such as "Europe/Berlin" or "UTC"',
        })
        .optional(),
    },
    { error: `schedule must be ${SHAPES}, or absent to take points only when trigger changes` },
  )
  .strict()
  .superRefine((value, ctx) => {
    if (value.every !== undefined && value.cron !== undefined) {
      ctx.addIssue({ code: "custom", path: ["cron"], message: `schedule takes every or cron, not both: ${SHAPES}` });
    } else if (value.every === undefined && value.cron === undefined) {
      ctx.addIssue({ code: "custom", path: [], message: `schedule must be ${SHAPES}` });
    }
    if (value.timeZone !== undefined && value.cron === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["timeZone"],
        message: 'schedule.timeZone applies to cron only: { cron: "0 3 * * *", timeZone: "Europe/Berlin" }',
      });
    }
  })
  .transform((value) => value as Schedule);

/** How a schedule reads in messages: "every 24h", `cron "0 3 * * *" (Europe/Berlin)`. */
export function describeSchedule(schedule: Schedule): string {
  if ("every" in schedule) return `every ${schedule.every}`;
  return `cron ${JSON.stringify(schedule.cron)} (${schedule.timeZone ?? "UTC"})`;
}

/**
 * When the schedule next asks for a point: `every` after the last point, or the first cron time
 * after it. With no point yet: now.
 */
export function nextDue(input: { schedule: Schedule; lastPointAt?: Date; now: Date }): Date {
  const { schedule, lastPointAt, now } = input;
  if (!lastPointAt) return now;
  if ("every" in schedule) {
    const every = parseDuration(schedule.every);
    if (every === undefined) throw new Error(`schedule.every ${JSON.stringify(schedule.every)} is not a duration`);
    return new Date(lastPointAt.getTime() + every);
  }
  return nextCronTime(schedule.cron, lastPointAt, schedule.timeZone ?? "UTC");
}

const HALF_HOUR_MS = 30 * 60_000;
const isLoopLimit = (error: unknown) => /loop limit/i.test((error as Error).message);

/**
 * The first time of `cron` after `from`. cron-parser (5.10.6, the newest) gives up with "loop limit
 * exceeded" from some instants before a half-hour DST change (Australia/Lord_Howe's April one): it
 * then starts half an hour later, up to a day, and walks back with prev() to any time it stepped over.
 */
export function nextCronTime(cron: string, from: Date, tz: string): Date {
  const nextFrom = (at: number) => CronExpressionParser.parse(cron, { currentDate: at, tz }).next().getTime();
  for (let shift = 0; shift <= 48 * HALF_HOUR_MS; shift += HALF_HOUR_MS) {
    let found: number;
    try {
      found = nextFrom(from.getTime() + shift);
    } catch (error) {
      if (isLoopLimit(error)) continue;
      throw error;
    }
    // Only after a shift: prev() counts a time repeated in a fold that next() passes once.
    if (shift === 0) return new Date(found);
    for (;;) {
      let earlier: number;
      try {
        earlier = CronExpressionParser.parse(cron, { currentDate: found, tz }).prev().getTime();
      } catch (error) {
        if (isLoopLimit(error)) return new Date(found);
        throw error;
      }
      if (earlier <= from.getTime()) return new Date(found);
      found = earlier;
    }
  }
  throw new Error(`schedule.cron ${JSON.stringify(cron)} in ${tz}: no next time found after ${from.toISOString()}`);
}

export interface Overdue {
  overdue: boolean;
  /** e.g. "newest good point 30 h ago exceeds rpoHours 24"; absent without rpoHours. */
  reason?: string;
  /** When the newest good point will be older than rpoHours, if it isn't yet. */
  dueBy?: Date;
}

/** Whether the newest good point is older than the policy's rpoHours (refresh shows such a set as overdue). */
export function overdue(input: { newestGoodAt?: Date; rpoHours?: number; now: Date }): Overdue {
  const { newestGoodAt, rpoHours, now } = input;
  if (rpoHours === undefined) return { overdue: false };
  if (!newestGoodAt) return { overdue: true, reason: `no good point yet (rpoHours ${rpoHours})` };
  const age = now.getTime() - newestGoodAt.getTime();
  const limit = rpoHours * MS.HOUR;
  if (age > limit) {
    return { overdue: true, reason: `newest good point ${formatAge(age)} ago exceeds rpoHours ${rpoHours}` };
  }
  return {
    overdue: false,
    reason: `newest good point ${formatAge(age)} ago, within rpoHours ${rpoHours}`,
    dueBy: new Date(newestGoodAt.getTime() + limit + 1),
  };
}

export interface DueInput {
  schedule?: Schedule;
  /** When the newest point (of any status) was taken; absent when the set has none. */
  lastPointAt?: Date;
  newestStatus?: PointStatus;
  /** When the newest ok point was taken; defaults to lastPointAt when newestStatus is "ok". */
  newestGoodAt?: Date;
  triggerChanged: boolean;
  rpoHours?: number;
  now: Date;
}

export interface Due {
  due: boolean;
  /** Why a point is due, e.g. "trigger changed", "last point 26 h ago; every 24h". Empty when not due. */
  reasons: string[];
  /** When not due: when the schedule or rpoHours will next ask for a point (absent if neither will). */
  nextDueAt?: Date;
}

/**
 * Whether `pulumi up` should take a point now, and why: the trigger changed, the set has no point
 * yet, the newest point failed or is missing, the schedule says so, or the newest good point is
 * older than rpoHours.
 */
export function pointDue(input: DueInput): Due {
  const { schedule, lastPointAt, newestStatus, triggerChanged, rpoHours, now } = input;
  const reasons: string[] = [];
  if (triggerChanged) reasons.push("trigger changed");
  if (!lastPointAt) reasons.push("no point yet");
  else if (newestStatus === "failed") reasons.push("the newest point failed");
  else if (newestStatus === "missing") reasons.push("the newest point is missing");

  let scheduledAt: Date | undefined;
  if (schedule && lastPointAt) {
    scheduledAt = nextDue({ schedule, lastPointAt, now });
    if (scheduledAt.getTime() <= now.getTime()) {
      const age = formatAge(now.getTime() - lastPointAt.getTime());
      const late = formatAge(now.getTime() - scheduledAt.getTime());
      reasons.push(
        "every" in schedule
          ? `last point ${age} ago; every ${schedule.every}`
          : `last point ${age} ago; ${describeSchedule(schedule)} was due ${late} ago`,
      );
    }
  }
  const newestGoodAt = input.newestGoodAt ?? (newestStatus === "ok" ? lastPointAt : undefined);
  const rpo = lastPointAt ? overdue({ newestGoodAt, rpoHours, now }) : { overdue: false };
  if (rpo.overdue && rpo.reason) reasons.push(rpo.reason);

  if (reasons.length > 0) return { due: true, reasons };
  const candidates = [scheduledAt, rpo.dueBy].filter((d): d is Date => d !== undefined);
  const nextDueAt = candidates.length > 0 ? new Date(Math.min(...candidates.map((d) => d.getTime()))) : undefined;
  return { due: false, reasons, ...(nextDueAt ? { nextDueAt } : {}) };
}
