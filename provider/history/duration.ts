const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const DURATION = /^(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?$/;

export const DURATION_EXAMPLES = '"24h", "90m", "1h30m", "7d" or "5s"';

/**
 * Milliseconds of a duration written as whole days, hours, minutes and seconds, largest unit first
 * ("24h", "90m", "1h30m", "7d", "5s"); undefined when it is not one or is zero.
 */
export function parseDuration(text: string): number | undefined {
  const match = DURATION.exec(text);
  if (!match || text === "") return undefined;
  const [days, hours, minutes, seconds] = match.slice(1).map((part) => Number(part ?? 0));
  const ms = days * DAY + hours * HOUR + minutes * MINUTE + seconds * SECOND;
  return ms > 0 ? ms : undefined;
}

/**
 * An age for people, in one whole unit, rounded down so it never overstates: "5 s", "90 min",
 * "26 h", "3 d". Seconds below 2 min, minutes below 2 h, hours below 3 d. Negative ages (a clock
 * behind the point's) read "0 s".
 */
export function formatAge(ms: number): string {
  const age = Math.max(0, ms);
  if (age < 2 * MINUTE) return `${Math.floor(age / SECOND)} s`;
  if (age < 2 * HOUR) return `${Math.floor(age / MINUTE)} min`;
  if (age < 3 * DAY) return `${Math.floor(age / HOUR)} h`;
  return `${Math.floor(age / DAY)} d`;
}

export const MS = { SECOND, MINUTE, HOUR, DAY } as const;
