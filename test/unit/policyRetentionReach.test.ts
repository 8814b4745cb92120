import { formatDays, retentionReach, shortestScheduleGapMs } from "../../policy/retentionReach";

const HOUR = 3600_000;

describe("how many days a retention keeps", () => {
  it("keeps everything without retention, or with no rules", () => {
    expect(retentionReach(undefined, undefined).days).toBe(Infinity);
    expect(retentionReach(null, HOUR).days).toBe(Infinity);
    expect(retentionReach({ timeZone: "UTC" }, HOUR).days).toBe(Infinity);
  });

  it("counts each calendar rule's periods, a schedule sparser than the period stretching them", () => {
    expect(retentionReach({ keepHourly: 48 }, undefined)).toEqual({ days: 2, reachedBy: "keepHourly 48" });
    expect(retentionReach({ keepDaily: 7 }, HOUR).days).toBe(7);
    expect(retentionReach({ keepDaily: 7 }, 48 * HOUR).days).toBe(14);
    expect(retentionReach({ keepWeekly: 2, keepMonthly: 1 }, undefined)).toEqual({
      days: 28,
      reachedBy: "keepMonthly 1",
    });
    expect(retentionReach({ keepYearly: 1, maxAgeDays: 30 }, undefined).days).toBe(365);
  });

  it("counts keepLast by the schedule's shortest gap, and as nothing without a schedule", () => {
    expect(retentionReach({ keepLast: 30 }, undefined)).toEqual({
      days: 0,
      reachedBy: "keepLast 30, without a schedule",
    });
    expect(retentionReach({ keepLast: 30 }, 24 * HOUR).days).toBe(30);
    expect(retentionReach({ keepLast: 30, maxAgeDays: 10 }, 6 * HOUR)).toEqual({
      days: 10,
      reachedBy: "maxAgeDays 10",
    });
  });

  it("finds a schedule's shortest gap, for every and for cron", () => {
    expect(shortestScheduleGapMs(undefined)).toBeUndefined();
    expect(shortestScheduleGapMs({ every: "1d12h" })).toBe(36 * HOUR);
    expect(shortestScheduleGapMs({ cron: "0 3 * * *" }, new Date("2026-01-01T00:00:00Z"))).toBe(24 * HOUR);
    expect(shortestScheduleGapMs({ cron: "0 3,5 * * 1-5" }, new Date("2026-01-01T00:00:00Z"))).toBe(2 * HOUR);
    // Berlin's spring change makes one night's gap 23 h.
    const berlin = { cron: "30 3 * * *", timeZone: "Europe/Berlin" };
    expect(shortestScheduleGapMs(berlin, new Date("2026-03-01T00:00:00Z"))).toBe(23 * HOUR);
    // Lord Howe's half-hour change, which cron-parser alone gives up on in April: 23.5 h in October.
    const lordHowe = { cron: "0 3 * * *", timeZone: "Australia/Lord_Howe" };
    expect(shortestScheduleGapMs(lordHowe, new Date("2026-03-01T00:00:00Z"))).toBe(23.5 * HOUR);
  });

  it("reads days in messages", () => {
    expect([formatDays(7), formatDays(0.5), formatDays(1.25), formatDays(0)]).toEqual(["7 d", "12 h", "1.25 d", "0 h"]);
  });
});
