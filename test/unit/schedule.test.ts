import fc from "fast-check";
import { formatAge, parseDuration } from "../../provider/history/duration";
import { newestPoints } from "../../provider/history/point";
import {
  cronProblem,
  describeSchedule,
  nextDue,
  overdue,
  pointDue,
  schedule,
  type Schedule,
} from "../../provider/history/schedule";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const at = (iso: string) => new Date(iso);

describe("durations and ages", () => {
  test.each([
    ["5s", 5 * SECOND],
    ["90m", 90 * MINUTE],
    ["24h", DAY],
    ["7d", 7 * DAY],
    ["1h30m", 90 * MINUTE],
    ["1d12h", 36 * HOUR],
    ["2h0m5s", 2 * HOUR + 5 * SECOND],
  ])("%s is %i ms", (text, ms) => expect(parseDuration(text)).toBe(ms));

  test.each(["", "0s", "0h0m", "24", "h", "1.5h", "30m1h", "1 h", "-5s", "5ms", "1w", "1234567s"])(
    "%j is not a duration",
    (text) => expect(parseDuration(text)).toBeUndefined(),
  );

  test.each([
    [0, "0 s"],
    [5 * SECOND + 999, "5 s"],
    [119 * SECOND, "119 s"],
    [2 * MINUTE, "2 min"],
    [90 * MINUTE, "90 min"],
    [2 * HOUR, "2 h"],
    [26 * HOUR + 59 * MINUTE, "26 h"],
    [3 * DAY, "3 d"],
    [45 * DAY + HOUR, "45 d"],
    [-5 * SECOND, "0 s"],
  ])("an age of %i ms reads %j", (ms, text) => expect(formatAge(ms)).toBe(text));
});

describe("schedule schema", () => {
  test.each([
    [{ every: "24h" }],
    [{ every: "5s" }],
    [{ cron: "0 3 * * *" }],
    [{ cron: "0 3 * * *", timeZone: "Europe/Berlin" }],
    [{ cron: "*/5 * * * * *" }],
    [{ cron: "@daily", timeZone: "UTC" }],
    [{ cron: "0 3 * * MON-FRI" }],
  ])("accepts %j as written", (value) => expect(schedule.parse(value)).toEqual(value));

  test.each([
    [{ every: "1.5h" }, "every", /^schedule.every must be a duration such as "24h", "90m", "1h30m", "7d" or "5s"/],
    [{ every: 24 }, "every", /^schedule.every must be a duration such as "24h"/],
    [{ cron: "0 3 * *" }, "cron", /^schedule.cron must have 5 fields .* like "0 3 \* \* \*".*; "0 3 \* \*" has 4$/],
    [{ cron: "" }, "cron", /^schedule.cron must have 5 fields .*; "" has 0$/],
    [{ cron: "61 3 * * *" }, "cron", /^schedule.cron is not a valid cron expression \(.*61.*\): use 5 fields/],
    [{ cron: "0 3 31 2 *" }, "cron", /^schedule.cron is not a valid cron expression/],
    [{ cron: "H 3 * * *" }, "cron", /^schedule.cron must not use H \(a random value\)/],
    [{ cron: "0 3 * * *", timeZone: "Europe/Atlantis" }, "timeZone", /IANA time zone such as "Europe\/Berlin"/],
    [{ every: "24h", timeZone: "Europe/Berlin" }, "timeZone", /^schedule.timeZone applies to cron only/],
    [{ every: "24h", cron: "0 3 * * *" }, "cron", /^schedule takes every or cron, not both/],
    [{}, "", /^schedule must be \{ every: "24h" \} or \{ cron: "0 3 \* \* \*", timeZone: "Europe\/Berlin" \}$/],
    ["daily", "", /^schedule must be .*, or absent to take points only when trigger changes$/],
  ])("refuses %j, naming the field and an example", (value, field, message) => {
    const parsed = schedule.safeParse(value);
    expect(parsed.success).toBe(false);
    const issue = parsed.error!.issues.find((i) => i.path.join(".") === field)!;
    expect(issue.message).toMatch(message);
  });

  test("refuses an unknown field", () => {
    expect(schedule.safeParse({ cron: "0 3 * * *", tz: "UTC" }).error!.issues[0]).toMatchObject({
      code: "unrecognized_keys",
      keys: ["tz"],
    });
  });

  test("lets month and weekday names through the H check", () => {
    expect(cronProblem("0 3 * * THU")).toBeUndefined();
    expect(cronProblem("0 3 * MAR,JUN *")).toBeUndefined();
    expect(cronProblem("H/5 * * * *")).toMatch(/must not use H/);
  });

  test("describes schedules for messages", () => {
    expect(describeSchedule({ every: "24h" })).toBe("every 24h");
    expect(describeSchedule({ cron: "0 3 * * *", timeZone: "Europe/Berlin" })).toBe('cron "0 3 * * *" (Europe/Berlin)');
    expect(describeSchedule({ cron: "0 3 * * *" })).toBe('cron "0 3 * * *" (UTC)');
  });
});

describe("nextDue", () => {
  test("every: the duration after the last point; with no point: now", () => {
    const now = at("2026-11-26T05:00:00Z");
    expect(nextDue({ schedule: { every: "24h" }, lastPointAt: at("2026-11-25T03:00:00Z"), now })).toEqual(
      at("2026-11-26T03:00:00Z"),
    );
    expect(nextDue({ schedule: { every: "24h" }, now })).toEqual(now);
  });

  test("cron in Europe/Berlin follows the wall clock across both DST changes", () => {
    const nightly: Schedule = { cron: "0 3 * * *", timeZone: "Europe/Berlin" };
    const now = at("2027-01-01T00:00:00Z");
    // Into summer time (2026-03-29, 02:00 CET -> 03:00 CEST): 03:00 comes 23 hours after the day before's.
    const beforeSpring = at("2026-03-28T02:00:00Z"); // 03:00 CET
    expect(nextDue({ schedule: nightly, lastPointAt: beforeSpring, now })).toEqual(at("2026-03-29T01:00:00Z"));
    // Out of it (2026-10-25, 03:00 CEST -> 02:00 CET): 25 hours.
    const beforeAutumn = at("2026-10-24T01:00:00Z"); // 03:00 CEST
    expect(nextDue({ schedule: nightly, lastPointAt: beforeAutumn, now })).toEqual(at("2026-10-25T02:00:00Z"));
    // A time the spring change skips runs once, an hour late; a time the autumn change repeats runs once.
    const skipped: Schedule = { cron: "30 2 * * *", timeZone: "Europe/Berlin" };
    expect(nextDue({ schedule: skipped, lastPointAt: at("2026-03-28T01:30:00Z"), now })).toEqual(
      at("2026-03-29T01:30:00Z"), // 03:30 CEST
    );
    const firstOf2h30 = at("2026-10-25T00:30:00Z"); // 02:30 CEST
    expect(nextDue({ schedule: skipped, lastPointAt: firstOf2h30, now })).toEqual(at("2026-10-26T01:30:00Z"));
    // The same cron in UTC: always 24 hours.
    expect(nextDue({ schedule: { cron: "0 3 * * *" }, lastPointAt: at("2026-03-28T03:00:00Z"), now })).toEqual(
      at("2026-03-29T03:00:00Z"),
    );
  });

  test("cron with a seconds field, and a point taken exactly at a cron time waits for the next one", () => {
    const now = at("2027-01-01T00:00:00Z");
    const lastPointAt = at("2026-11-26T12:00:10Z");
    expect(nextDue({ schedule: { cron: "*/10 * * * * *" }, lastPointAt, now })).toEqual(at("2026-11-26T12:00:20Z"));
  });
});

describe("pointDue", () => {
  const now = at("2026-11-26T05:00:00Z");
  const daily: Schedule = { every: "24h" };

  test("the issue's example: last point 26 h ago; every 24h", () => {
    const due = pointDue({
      schedule: daily,
      lastPointAt: at("2026-11-25T03:00:00Z"),
      newestStatus: "ok",
      triggerChanged: false,
      now,
    });
    expect(due).toEqual({ due: true, reasons: ["last point 26 h ago; every 24h"] });
  });

  test("not due yet says when it will be", () => {
    const due = pointDue({
      schedule: daily,
      lastPointAt: at("2026-11-25T06:00:00Z"),
      newestStatus: "ok",
      triggerChanged: false,
      now,
    });
    expect(due).toEqual({ due: false, reasons: [], nextDueAt: at("2026-11-26T06:00:00Z") });
  });

  test("without a schedule only the trigger, a missing first point or a bad newest point take one", () => {
    const base = { lastPointAt: at("2026-01-01T00:00:00Z"), newestStatus: "ok" as const, now };
    expect(pointDue({ ...base, triggerChanged: false })).toEqual({ due: false, reasons: [] });
    expect(pointDue({ ...base, triggerChanged: true })).toEqual({ due: true, reasons: ["trigger changed"] });
    expect(pointDue({ triggerChanged: false, now })).toEqual({ due: true, reasons: ["no point yet"] });
    expect(pointDue({ ...base, newestStatus: "failed", triggerChanged: false })).toEqual({
      due: true,
      reasons: ["the newest point failed"],
    });
    expect(pointDue({ ...base, newestStatus: "missing", triggerChanged: false })).toEqual({
      due: true,
      reasons: ["the newest point is missing"],
    });
  });

  test("gives every reason that applies", () => {
    const due = pointDue({
      schedule: daily,
      lastPointAt: at("2026-11-25T03:00:00Z"),
      newestStatus: "failed",
      newestGoodAt: at("2026-11-24T23:00:00Z"),
      triggerChanged: true,
      rpoHours: 24,
      now,
    });
    expect(due.reasons).toEqual([
      "trigger changed",
      "the newest point failed",
      "last point 26 h ago; every 24h",
      "newest good point 30 h ago exceeds rpoHours 24",
    ]);
  });

  test("rpoHours alone makes a point due once the newest good point is older", () => {
    const lastPointAt = at("2026-11-25T05:00:00Z");
    const within = pointDue({ lastPointAt, newestStatus: "ok", triggerChanged: false, rpoHours: 25, now });
    expect(within).toEqual({ due: false, reasons: [], nextDueAt: new Date(lastPointAt.getTime() + 25 * HOUR + 1) });
    const beyond = pointDue({ lastPointAt, newestStatus: "ok", triggerChanged: false, rpoHours: 23, now });
    expect(beyond).toEqual({ due: true, reasons: ["newest good point 24 h ago exceeds rpoHours 23"] });
  });

  test("cron: says when the cron time came due", () => {
    const due = pointDue({
      schedule: { cron: "0 3 * * *", timeZone: "Europe/Berlin" },
      lastPointAt: at("2026-11-25T02:00:00Z"),
      newestStatus: "ok",
      triggerChanged: false,
      now: at("2026-11-26T05:00:00Z"),
    });
    expect(due).toEqual({
      due: true,
      reasons: ['last point 27 h ago; cron "0 3 * * *" (Europe/Berlin) was due 3 h ago'],
    });
  });

  test("in real time: every 1s is not due at once and due a second later", async () => {
    const lastPointAt = new Date();
    const first = pointDue({
      schedule: { every: "1s" },
      lastPointAt,
      newestStatus: "ok",
      triggerChanged: false,
      now: new Date(),
    });
    expect(first.due).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const later = pointDue({
      schedule: { every: "1s" },
      lastPointAt,
      newestStatus: "ok",
      triggerChanged: false,
      now: new Date(),
    });
    expect(later.due).toBe(true);
    expect(later.reasons).toEqual([expect.stringMatching(/^last point \d+ s ago; every 1s$/)]);
  });

  test("takes the newest and newest good points from a history", () => {
    const history = [
      { id: "a", takenAt: "2026-11-24T03:00:00Z", status: "ok" as const, sizeBytes: 1 },
      {
        id: "b",
        takenAt: "2026-11-25T03:00:00Z",
        status: "failed" as const,
        sizeBytes: 1,
        failures: ["vda: bad hash"],
      },
      { id: "c", takenAt: "not a time", status: "ok" as const, sizeBytes: 1 },
    ];
    const { newest, newestGood } = newestPoints(history);
    expect([newest?.id, newestGood?.id]).toEqual(["b", "a"]);
    expect(newestPoints([])).toEqual({ newest: undefined, newestGood: undefined });
  });
});

describe("overdue", () => {
  const now = at("2026-11-26T05:00:00Z");
  test("only with rpoHours; no good point at all is overdue", () => {
    expect(overdue({ newestGoodAt: at("2020-01-01T00:00:00Z"), now })).toEqual({ overdue: false });
    expect(overdue({ rpoHours: 24, now })).toEqual({ overdue: true, reason: "no good point yet (rpoHours 24)" });
  });

  test("older than rpoHours is overdue, and says by how much", () => {
    expect(overdue({ newestGoodAt: at("2026-11-24T23:00:00Z"), rpoHours: 24, now })).toEqual({
      overdue: true,
      reason: "newest good point 30 h ago exceeds rpoHours 24",
    });
    expect(overdue({ newestGoodAt: at("2026-11-25T05:00:00Z"), rpoHours: 24, now })).toEqual({
      overdue: false,
      reason: "newest good point 24 h ago, within rpoHours 24",
      dueBy: at("2026-11-26T05:00:00.001Z"),
    });
  });
});

describe("cron across Lord Howe's half-hour DST change (cron-parser gives up from some instants)", () => {
  // 2026-04-05 02:00 at +11:00 becomes 01:30 at +10:30.
  test.each([
    ["0 3 * * *", "2026-04-04T08:00:00Z", "2026-04-04T16:30:00.000Z"],
    ["30 2 * * *", "2026-04-04T08:00:00Z", "2026-04-04T16:00:00.000Z"],
    ["30 1 * * *", "2026-04-04T08:00:00Z", "2026-04-04T14:30:00.000Z"],
    ["*/15 * * * *", "2026-04-04T14:40:00Z", "2026-04-04T14:45:00.000Z"],
  ])("%s after %s: %s", (cron, last, expected) => {
    const lastPointAt = new Date(last);
    const schedule = { cron, timeZone: "Australia/Lord_Howe" };
    expect(nextDue({ schedule, lastPointAt, now: lastPointAt }).toISOString()).toBe(expected);
  });
});

describe("schedule: properties", () => {
  jest.setTimeout(60_000);
  const NOW = Date.parse("2026-11-26T12:00:00Z");
  const everyArb = fc
    .tuple(fc.nat({ max: 3 }), fc.nat({ max: 30 }), fc.nat({ max: 90 }), fc.nat({ max: 90 }))
    .filter(([d, h, m, s]) => d + h + m + s > 0)
    .map(([d, h, m, s]) => ({
      text: `${d ? `${d}d` : ""}${h ? `${h}h` : ""}${m ? `${m}m` : ""}${s ? `${s}s` : ""}`,
      ms: d * DAY + h * HOUR + m * MINUTE + s * SECOND,
    }));
  const cronArb = fc.record({
    cron: fc.constantFrom("0 3 * * *", "30 2 * * *", "*/15 * * * *", "0 0 * * 1", "0 */6 * * *", "*/20 * * * * *"),
    timeZone: fc.constantFrom("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"),
  });
  const instantArb = fc.integer({ min: NOW - 400 * DAY, max: NOW });

  test("every: due exactly when the last point is at least that old", () => {
    fc.assert(
      fc.property(everyArb, instantArb, fc.integer({ min: 0, max: 10 * DAY }), ({ text, ms }, last, elapsed) => {
        expect(parseDuration(text)).toBe(ms);
        const due = pointDue({
          schedule: { every: text },
          lastPointAt: new Date(last),
          newestStatus: "ok",
          triggerChanged: false,
          now: new Date(last + elapsed),
        });
        expect(due.due).toBe(elapsed >= ms);
        if (due.due) expect(due.reasons).toEqual([`last point ${formatAge(elapsed)} ago; every ${text}`]);
        else expect(due.nextDueAt).toEqual(new Date(last + ms));
      }),
      { numRuns: 300 },
    );
  });

  test("cron: not due means the next cron time after the last point is still ahead; once due, stays due", () => {
    fc.assert(
      fc.property(cronArb, instantArb, fc.integer({ min: 0, max: 3 * DAY }), (cron, last, elapsed) => {
        const input = {
          schedule: cron,
          lastPointAt: new Date(last),
          newestStatus: "ok" as const,
          triggerChanged: false,
        };
        const next = nextDue({ ...input, now: new Date(last + elapsed) });
        expect(next.getTime()).toBeGreaterThan(last);
        const due = pointDue({ ...input, now: new Date(last + elapsed) });
        expect(due.due).toBe(next.getTime() <= last + elapsed);
        if (!due.due) expect(due.nextDueAt).toEqual(next);
        if (due.due) expect(pointDue({ ...input, now: new Date(last + elapsed + HOUR) }).due).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  test("any schema-valid schedule gives an answer with a reason whenever it is due", () => {
    const scheduleArb = fc.oneof(
      everyArb.map(({ text }): Schedule => ({ every: text })),
      cronArb.map((c): Schedule => c),
    );
    fc.assert(
      fc.property(
        scheduleArb,
        fc.option(instantArb, { nil: undefined }),
        fc.constantFrom("ok" as const, "failed" as const, "missing" as const),
        fc.boolean(),
        fc.option(fc.integer({ min: 1, max: 200 }), { nil: undefined }),
        (value, last, newestStatus, triggerChanged, rpoHours) => {
          expect(schedule.safeParse(value).success).toBe(true);
          const due = pointDue({
            schedule: value,
            lastPointAt: last === undefined ? undefined : new Date(last),
            newestStatus,
            triggerChanged,
            rpoHours,
            now: new Date(NOW),
          });
          expect(due.due).toBe(due.reasons.length > 0);
          if (triggerChanged || last === undefined || newestStatus !== "ok") expect(due.due).toBe(true);
          if (!due.due) expect(due.nextDueAt!.getTime()).toBeGreaterThan(NOW);
        },
      ),
      { numRuns: 200 },
    );
  });
});
