/** A set's backup history as pure functions: which points retention keeps, and when a point is due. */
export { isoWeek, isTimeZone, periodsIn, type Periods } from "./calendar";
export { DURATION_EXAMPLES, formatAge, parseDuration } from "./duration";
export { holdReason, holds, holdsAt, type Hold } from "./holds";
export { newestFirst, newestPoints, POINT_STATUSES, takenAtMs, type HistoryPoint, type PointStatus } from "./point";
export {
  CALENDAR_RULES,
  describeRetention,
  planRetention,
  RETENTION_RULES,
  retentionRules,
  type CalendarRule,
  type KeptPoint,
  type PrunedPoint,
  type RetentionInput,
  type RetentionPlan,
  type RetentionRule,
  type RetentionRules,
} from "./retention";
export {
  cronProblem,
  describeSchedule,
  nextDue,
  overdue,
  pointDue,
  schedule,
  type Due,
  type DueInput,
  type Overdue,
  type Schedule,
} from "./schedule";
