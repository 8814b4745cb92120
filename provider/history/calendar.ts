import { CofferError } from "../common/errors";

/** The calendar periods retention counts in, as their labels: "2026-11-25 14:00", "2026-11-25", "2026-W48", ... */
export interface Periods {
  hour: string;
  day: string;
  /** ISO 8601 week (weeks start on Monday; the week-year can differ from the calendar year). */
  week: string;
  month: string;
  year: string;
}

/** Whether `timeZone` is an IANA zone name this Node.js knows ("Europe/Berlin", "UTC"). */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone });
    return true;
  } catch {
    return false;
  }
}

/**
 * A function from an instant (ms since the epoch) to the local calendar periods it falls in, in
 * `timeZone`. Wall-clock time: a repeated hour at a DST change is one period, a skipped hour none.
 */
export function periodsIn(timeZone: string): (ms: number) => Periods {
  if (!isTimeZone(timeZone)) {
    throw new CofferError(
      "INVALID_INPUT",
      `timeZone must be an IANA time zone such as "Europe/Berlin" or "UTC", not ${JSON.stringify(timeZone)}`,
      { field: "timeZone" },
    );
  }
  if (timeZone === "UTC") {
    return (ms) => {
      const d = new Date(ms);
      return periods(d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours());
    };
  }
  const format = new Intl.DateTimeFormat("en-US", {
    timeZone,
    hourCycle: "h23",
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "numeric",
  });
  return (ms) => {
    const parts: Record<string, number> = {};
    for (const part of format.formatToParts(ms)) {
      if (part.type !== "literal") parts[part.type] = Number(part.value);
    }
    return periods(parts.year, parts.month, parts.day, parts.hour);
  };
}

function periods(year: number, month: number, day: number, hour: number): Periods {
  const date = `${year}-${pad(month)}-${pad(day)}`;
  const { weekYear, week } = isoWeek(year, month, day);
  return {
    hour: `${date} ${pad(hour)}:00`,
    day: date,
    week: `${weekYear}-W${pad(week)}`,
    month: `${year}-${pad(month)}`,
    year: String(year),
  };
}

/** ISO 8601 week of a calendar date: the week (Monday to Sunday) belongs to the year of its Thursday. */
export function isoWeek(year: number, month: number, day: number): { weekYear: number; week: number } {
  const date = Date.UTC(year, month - 1, day);
  const mondayBased = (new Date(date).getUTCDay() + 6) % 7;
  const thursday = new Date(date + (3 - mondayBased) * 86_400_000);
  const weekYear = thursday.getUTCFullYear();
  const dayOfYear = (thursday.getTime() - Date.UTC(weekYear, 0, 1)) / 86_400_000;
  return { weekYear, week: Math.floor(dayOfYear / 7) + 1 };
}

const pad = (n: number) => String(n).padStart(2, "0");
