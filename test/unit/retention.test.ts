import fc from "fast-check";
import { isCofferError } from "../../provider/common/errors";
import { isoWeek, periodsIn } from "../../provider/history/calendar";
import type { Hold } from "../../provider/history/holds";
import { holds as holdsSchema } from "../../provider/history/holds";
import { basesOf, newestFirst, newestPoints, type HistoryPoint, type PointStatus } from "../../provider/history/point";
import {
  CALENDAR_RULES,
  describeRetention,
  planRetention,
  RETENTION_RULES,
  retentionRules,
  type RetentionPlan,
  type RetentionRules,
} from "../../provider/history/retention";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const point = (id: string, takenAt: string, status: PointStatus = "ok", extra: Partial<HistoryPoint> = {}) => ({
  id,
  takenAt,
  status,
  sizeBytes: 1024,
  ...extra,
});

const ids = (entries: { point: HistoryPoint }[]) => entries.map((entry) => entry.point.id);
const reasonsOf = (plan: RetentionPlan<HistoryPoint>) =>
  Object.fromEntries(plan.keep.map((kept) => [kept.point.id, kept.reasons]));

/** One point a day at 03:00 UTC, ids "nov-02" ... "nov-25", from the 2nd to the 25th of November 2026. */
function novemberDailies(failed: number[] = []): HistoryPoint[] {
  const points: HistoryPoint[] = [];
  for (let day = 2; day <= 25; day++) {
    const dd = String(day).padStart(2, "0");
    points.push(point(`nov-${dd}`, `2026-11-${dd}T03:00:00Z`, failed.includes(day) ? "failed" : "ok"));
  }
  return points;
}

describe("retention rules schema", () => {
  test("accepts every rule as a whole number of at least 1, and none at all", () => {
    const all = {
      keepLast: 3,
      keepHourly: 24,
      keepDaily: 7,
      keepWeekly: 4,
      keepMonthly: 12,
      keepYearly: 5,
      maxAgeDays: 30,
    };
    expect(retentionRules.parse(all)).toEqual(all);
    expect(retentionRules.parse({})).toEqual({});
    expect(Object.keys(all)).toEqual([...RETENTION_RULES]);
    expect(Object.keys(retentionRules.shape)).toEqual([...RETENTION_RULES]);
  });

  test.each([
    [{ keepDaily: 0 }, "keepDaily", /^retention.keepDaily must be at least 1: leave it out to keep backups/],
    [{ keepWeekly: 2.5 }, "keepWeekly", /^retention.keepWeekly must be a whole number of at least 1$/],
    [{ keepMonthly: "6" }, "keepMonthly", /^retention.keepMonthly must be a whole number of at least 1$/],
    [{ maxAgeDays: -1 }, "maxAgeDays", /^retention.maxAgeDays must be at least 1/],
    [{ keepYearly: Infinity }, "keepYearly", /^retention.keepYearly must be a whole number/],
  ])("refuses %j, naming the field and the fix", (rules, field, message) => {
    const parsed = retentionRules.safeParse(rules);
    expect(parsed.success).toBe(false);
    expect(parsed.error!.issues[0].path).toEqual([field]);
    expect(parsed.error!.issues[0].message).toMatch(message);
  });

  test("refuses a misspelt rule and a non-object", () => {
    const misspelt = retentionRules.safeParse({ keepDayly: 7 });
    expect(misspelt.error!.issues[0]).toMatchObject({ code: "unrecognized_keys", keys: ["keepDayly"] });
    expect(retentionRules.safeParse(7).error!.issues[0].message).toMatch(
      /^retention must be an object like \{ keepLast: 3, keepDaily: 7.*or absent to keep every backup$/,
    );
  });

  test("describes rules in the order they apply", () => {
    expect(describeRetention({ maxAgeDays: 30, keepWeekly: 4, keepLast: 3 })).toBe(
      "keepLast 3, keepWeekly 4, maxAgeDays 30",
    );
    expect(describeRetention({})).toBe("no retention rules");
    expect(describeRetention(undefined)).toBe("no retention rules");
  });
});

describe("holds schema", () => {
  test("accepts holds with and without an end", () => {
    const holds = [
      { point: "nov-10", reason: "legal hold, case 4711" },
      { point: "nov-11", reason: "forensics", until: "2027-01-31T00:00:00Z" },
    ];
    expect(holdsSchema.parse(holds)).toEqual(holds);
  });

  test.each([
    [[{ point: "nov-10" }], /^holds\[\]\.reason is required: say why the point is held/],
    [[{ point: "nov-10", reason: "  " }], /^holds\[\]\.reason must not be empty/],
    [[{ point: "", reason: "x" }], /^holds\[\]\.point must not be empty/],
    [[{ point: "nov-10", reason: "x", until: "next year" }], /^holds\[\]\.until must be an ISO date-time with a zone/],
    [[{ point: "nov-10", reason: "x", until: "2027-01-31T00:00:00" }], /^holds\[\]\.until must be an ISO date-time/],
    [{ point: "nov-10", reason: "x" }, /^holds must be a list like \[\{ point:/],
  ])("refuses %j with a message that names the field", (holds, message) => {
    const parsed = holdsSchema.safeParse(holds);
    expect(parsed.success).toBe(false);
    expect(parsed.error!.issues[0].message).toMatch(message);
  });
});

describe("calendar periods", () => {
  test.each([
    [2026, 11, 25, "2026-W48"],
    [2026, 12, 31, "2026-W53"], // a Thursday: 2026 has 53 weeks
    [2027, 1, 3, "2026-W53"], // a Sunday still in 2026's last week
    [2027, 1, 4, "2027-W01"],
    [2024, 12, 30, "2025-W01"], // a Monday already in 2025's first week
    [2021, 1, 3, "2020-W53"],
  ])("%i-%i-%i is in ISO week %s", (year, month, day, label) => {
    const { weekYear, week } = isoWeek(year, month, day);
    expect(`${weekYear}-W${String(week).padStart(2, "0")}`).toBe(label);
  });

  test("counts local wall-clock periods in the given zone", () => {
    const at = Date.parse("2026-12-31T23:30:00Z");
    expect(periodsIn("UTC")(at)).toEqual({
      hour: "2026-12-31 23:00",
      day: "2026-12-31",
      week: "2026-W53",
      month: "2026-12",
      year: "2026",
    });
    expect(periodsIn("Europe/Berlin")(at)).toEqual({
      hour: "2027-01-01 00:00",
      day: "2027-01-01",
      week: "2026-W53",
      month: "2027-01",
      year: "2027",
    });
    // The hour repeated when Berlin leaves summer time (2026-10-25, 03:00 CEST -> 02:00 CET) is one period.
    const berlin = periodsIn("Europe/Berlin");
    expect(berlin(Date.parse("2026-10-25T00:30:00Z")).hour).toBe("2026-10-25 02:00");
    expect(berlin(Date.parse("2026-10-25T01:30:00Z")).hour).toBe("2026-10-25 02:00");
  });
});

describe("planRetention: worked examples", () => {
  const now = new Date("2026-11-25T12:00:00Z");

  test("the README example: rules count on from where the rules before them stop, as in PBS", () => {
    const plan = planRetention({
      points: novemberDailies([24]),
      rules: { keepLast: 2, keepDaily: 3, keepWeekly: 2 },
      holds: [{ point: "nov-10", reason: "legal hold, case 4711" }],
      now,
    });
    expect(reasonsOf(plan)).toEqual({
      "nov-25": ["keepLast (1 of 2)", "newest good point"],
      "nov-24": ["failed: never pruned automatically"],
      "nov-23": ["keepLast (2 of 2)"],
      "nov-22": ["keepDaily 2026-11-22"],
      "nov-21": ["keepDaily 2026-11-21"],
      "nov-20": ["keepDaily 2026-11-20"],
      "nov-15": ["keepWeekly 2026-W46"],
      "nov-10": ["held: legal hold, case 4711"],
      "nov-08": ["keepWeekly 2026-W45"],
    });
    expect(ids(plan.keep)).toEqual([
      "nov-25",
      "nov-24",
      "nov-23",
      "nov-22",
      "nov-21",
      "nov-20",
      "nov-15",
      "nov-10",
      "nov-08",
    ]);
    expect(ids(plan.prune)).toEqual(
      ["19", "18", "17", "16", "14", "13", "12", "11", "09", "07", "06", "05", "04", "03", "02"].map((d) => `nov-${d}`),
    );
    const pruneReasons = Object.fromEntries(plan.prune.map((p) => [p.point.id, p.reason]));
    expect(pruneReasons["nov-19"]).toBe("keepWeekly 2026-W47 keeps the newer point nov-22");
    expect(pruneReasons["nov-09"]).toBe("keepWeekly 2026-W46 keeps the newer point nov-15");
    expect(pruneReasons["nov-02"]).toBe("keepWeekly 2026-W45 keeps the newer point nov-08");
  });

  test("PBS simulator style: a point every 6 hours for 17 days", () => {
    const points: HistoryPoint[] = [];
    for (let t = Date.parse("2026-11-09T00:00:00Z"); t <= Date.parse("2026-11-25T18:00:00Z"); t += 6 * HOUR) {
      points.push(point(new Date(t).toISOString().slice(5, 13), new Date(t).toISOString()));
    }
    expect(points).toHaveLength(68);
    const rules = { keepLast: 3, keepHourly: 2, keepDaily: 3, keepWeekly: 2 };
    const plan = planRetention({ points, rules, now: new Date("2026-11-25T20:00:00Z") });
    expect(reasonsOf(plan)).toEqual({
      "11-25T18": ["keepLast (1 of 3)", "newest good point"],
      "11-25T12": ["keepLast (2 of 3)"],
      "11-25T06": ["keepLast (3 of 3)"],
      "11-25T00": ["keepHourly 2026-11-25 00:00"],
      "11-24T18": ["keepHourly 2026-11-24 18:00"],
      "11-23T18": ["keepDaily 2026-11-23"],
      "11-22T18": ["keepDaily 2026-11-22"],
      "11-21T18": ["keepDaily 2026-11-21"],
      // W48 and W47 are covered by points kept above; W46 is the only older week with points.
      "11-15T18": ["keepWeekly 2026-W46"],
    });
    expect(plan.prune).toHaveLength(59);
    expect(new Set(ids(plan.keep))).toEqual(pbsKeeps(points, rules, "UTC"));
  });

  test("no rules at all keeps everything: pruning needs retention to be declared", () => {
    for (const rules of [undefined, {}]) {
      const plan = planRetention({ points: novemberDailies(), rules, now });
      expect(plan.prune).toEqual([]);
      expect(plan.keep).toHaveLength(24);
      expect(plan.keep[5].reasons).toEqual(["no retention rules"]);
    }
  });

  test("periods are calendar periods in the given time zone", () => {
    const points = [
      point("late-evening", "2026-11-24T22:30:00Z"), // 23:30 on the 24th in Berlin
      point("after-midnight", "2026-11-24T23:30:00Z"), // 00:30 on the 25th in Berlin
      point("morning", "2026-11-25T10:00:00Z"),
    ];
    const rules = { keepDaily: 2 };
    expect(ids(planRetention({ points, rules, now }).prune)).toEqual(["late-evening"]);
    const berlin = planRetention({ points, rules, now, timeZone: "Europe/Berlin" });
    expect(ids(berlin.prune)).toEqual(["after-midnight"]);
    expect(reasonsOf(berlin)["late-evening"]).toEqual(["keepDaily 2026-11-24"]);
    expect(berlin.prune[0].reason).toBe("keepDaily 2026-11-25 keeps the newer point morning");
  });

  test("weekly periods are ISO weeks, across the end of a year", () => {
    const points = [
      point("mon-dec-28", "2026-12-28T03:00:00Z"),
      point("sun-jan-03", "2027-01-03T03:00:00Z"),
      point("mon-jan-04", "2027-01-04T03:00:00Z"),
    ];
    const plan = planRetention({ points, rules: { keepWeekly: 2 }, now: new Date("2027-01-05T00:00:00Z") });
    expect(reasonsOf(plan)).toEqual({
      "mon-jan-04": ["keepWeekly 2027-W01", "newest good point"],
      "sun-jan-03": ["keepWeekly 2026-W53"],
    });
    expect(plan.prune).toEqual([{ point: points[0], reason: "keepWeekly 2026-W53 keeps the newer point sun-jan-03" }]);
  });

  test("where a week straddles two months, the month still keeps its newest point (PBS keeps an older one)", () => {
    const points = [
      point("fri-nov-20", "2026-11-20T03:00:00Z"),
      point("mon-nov-30", "2026-11-30T03:00:00Z"), // in 2026-W49 with Dec 2
      point("wed-dec-02", "2026-12-02T03:00:00Z"),
    ];
    const rules = { keepWeekly: 1, keepMonthly: 2 };
    const plan = planRetention({ points, rules, now: new Date("2026-12-03T00:00:00Z") });
    expect(reasonsOf(plan)).toEqual({
      "wed-dec-02": ["keepWeekly 2026-W49", "newest good point"],
      "mon-nov-30": ["keepMonthly 2026-11"],
    });
    // PBS skips Nov 30 (removed by keep-weekly) and keeps Nov 20 for November; then adding
    // keep-weekly 1 to keep-monthly 2 would prune Nov 30, which monthly alone keeps.
    expect(pbsKeeps(points, rules, "UTC")).toEqual(new Set(["wed-dec-02", "fri-nov-20"]));
    expect(pbsKeeps(points, { keepMonthly: 2 }, "UTC")).toEqual(new Set(["wed-dec-02", "mon-nov-30"]));
    expect(ids(planRetention({ points, rules: { keepMonthly: 2 }, now }).keep)).toEqual(["wed-dec-02", "mon-nov-30"]);
  });

  test("periods without a good point do not count", () => {
    const points = [
      point("mon", "2026-11-23T03:00:00Z"),
      point("wed", "2026-11-25T03:00:00Z"),
      point("thu", "2026-11-26T03:00:00Z", "failed"),
      point("sat", "2026-11-21T03:00:00Z"),
    ];
    const plan = planRetention({ points, rules: { keepDaily: 3 }, now: new Date("2026-11-26T12:00:00Z") });
    expect(ids(plan.keep)).toEqual(["thu", "wed", "mon", "sat"]);
    expect(plan.prune).toEqual([]);
  });

  test("maxAgeDays keeps every good point younger than N days, without moving the other rules", () => {
    const plan = planRetention({ points: novemberDailies(), rules: { keepLast: 2, maxAgeDays: 3 }, now });
    expect(reasonsOf(plan)).toEqual({
      "nov-25": ["keepLast (1 of 2)", "maxAgeDays 3 (9 h old)", "newest good point"],
      "nov-24": ["keepLast (2 of 2)", "maxAgeDays 3 (33 h old)"],
      "nov-23": ["maxAgeDays 3 (57 h old)"],
    });
    expect(plan.prune[0].reason).toBe("beyond what keepLast 2, maxAgeDays 3 keeps (3 d old)");

    const old = planRetention({
      points: novemberDailies(),
      rules: { maxAgeDays: 3 },
      now: new Date("2027-02-01T00:00:00Z"),
    });
    expect(old.keep.map((k) => [k.point.id, k.reasons])).toEqual([["nov-25", ["newest good point"]]]);
  });

  test("failed and missing points are neither counted nor pruned; the newest good point is kept", () => {
    const points = [
      point("good-old", "2026-11-20T03:00:00Z"),
      point("good", "2026-11-22T03:00:00Z"),
      point("failed", "2026-11-24T03:00:00Z", "failed", { failures: ["disk-1: sha256 mismatch"] }),
      point("missing", "2026-11-25T03:00:00Z", "missing"),
      point("failed-old", "2025-01-01T03:00:00Z", "failed"),
    ];
    const plan = planRetention({ points, rules: { keepLast: 1 }, now });
    expect(reasonsOf(plan)).toEqual({
      missing: ["missing: never pruned automatically"],
      failed: ["failed: never pruned automatically"],
      good: ["keepLast (1 of 1)", "newest good point"],
      "failed-old": ["failed: never pruned automatically"],
    });
    expect(ids(plan.prune)).toEqual(["good-old"]);
  });

  test("a hold keeps a point until its end; an ended hold no longer holds", () => {
    const holds: Hold[] = [
      { point: "nov-05", reason: "legal hold", until: "2027-01-01T00:00:00Z" },
      { point: "nov-06", reason: "ended", until: "2026-11-25T11:59:59Z" },
      { point: "nov-07", reason: "forensics" },
      { point: "no-such-point", reason: "typo" },
    ];
    const plan = planRetention({ points: novemberDailies(), rules: { keepLast: 1 }, holds, now });
    expect(reasonsOf(plan)).toEqual({
      "nov-25": ["keepLast (1 of 1)", "newest good point"],
      "nov-07": ["held: forensics"],
      "nov-05": ["held until 2027-01-01T00:00:00Z: legal hold"],
    });
  });

  test("a point a kept point depends on is kept, transitively; dependents are deleted before their bases", () => {
    const points = [
      point("full-1", "2026-11-20T03:00:00Z"),
      point("inc-1a", "2026-11-21T03:00:00Z", "ok", { dependsOn: "full-1" }),
      point("inc-1b", "2026-11-22T03:00:00Z", "ok", { dependsOn: "inc-1a" }),
      point("full-0", "2026-11-10T03:00:00Z"),
      point("inc-0a", "2026-11-11T03:00:00Z", "ok", { dependsOn: "full-0" }),
      point("inc-0b", "2026-11-12T03:00:00Z", "ok", { dependsOn: "inc-0a" }),
      point("base-of-failed", "2026-11-01T03:00:00Z"),
      point("failed-inc", "2026-11-02T03:00:00Z", "failed", { dependsOn: "base-of-failed" }),
      point("orphan", "2026-11-03T03:00:00Z", "ok", { dependsOn: "deleted-long-ago" }),
    ];
    const plan = planRetention({ points, rules: { keepLast: 1 }, now });
    expect(reasonsOf(plan)).toEqual({
      "inc-1b": ["keepLast (1 of 1)", "newest good point"],
      "inc-1a": ["needed by inc-1b"],
      "full-1": ["needed by inc-1a"],
      "failed-inc": ["failed: never pruned automatically"],
      "base-of-failed": ["needed by failed-inc"],
    });
    expect(ids(plan.prune)).toEqual(["inc-0b", "inc-0a", "full-0", "orphan"]);
    // Listed the other way round, a base would come first by time: the order still deletes dependents first.
    const inverted = points.map((p) => (p.id === "full-0" ? { ...p, takenAt: "2026-11-13T03:00:00Z" } : p));
    expect(ids(planRetention({ points: inverted, rules: { keepLast: 1 }, now }).prune)).toEqual([
      "inc-0b",
      "inc-0a",
      "full-0",
      "orphan",
    ]);
  });

  test("a point with incrementals of several sources keeps every base they build on", () => {
    // Source a's chain starts at full-a, source b's at full-b; the newest point builds on both.
    const points = [
      point("full-a", "2026-11-20T03:00:00Z"),
      point("full-b", "2026-11-21T03:00:00Z", "ok", { dependsOn: ["full-a"] }),
      point("both", "2026-11-22T03:00:00Z", "ok", { dependsOn: ["full-b", "full-a"] }),
      point("older", "2026-11-19T03:00:00Z"),
    ];
    const plan = planRetention({ points, rules: { keepLast: 1 }, now });
    expect(reasonsOf(plan)).toEqual({
      both: ["keepLast (1 of 1)", "newest good point"],
      "full-b": ["needed by both"],
      "full-a": ["needed by both", "needed by full-b"],
    });
    expect(ids(plan.prune)).toEqual(["older"]);
  });

  describe("links of qcow2 chains (links): a pruned link a kept point builds on is merged into it", () => {
    /** A chain: `full`, then each link on the one before, a day apart from the 20th; all of them qcow2 links. */
    const chain = (names: string[], statuses: Record<string, PointStatus> = {}) =>
      names.map((id, i) => {
        const takenAt = `2026-11-${20 + i}T03:00:00Z`;
        const base = i === 0 ? {} : { dependsOn: [names[i - 1]], links: [names[i - 1]] };
        return point(id, takenAt, statuses[id] ?? "ok", base);
      });
    const merges = (plan: RetentionPlan<HistoryPoint>) => plan.merge.map((m) => `${m.point.id} into ${m.into.id}`);

    test("a chain whose only kept point is its newest merges into it, nearest link first, down to its full one", () => {
      const plan = planRetention({ points: chain(["full", "l1", "l2", "l3"]), rules: { keepLast: 1 }, now });
      expect(merges(plan)).toEqual(["l2 into l3", "l1 into l3", "full into l3"]);
      expect(ids(plan.keep)).toEqual(["l3"]);
      expect(plan.prune).toEqual([]);
      expect(plan.merge[0].reason).toMatch(/beyond what keepLast 1 keeps/);
    });

    test("a middle link merges into the kept link after it; a kept base stays as it is", () => {
      // l1 is held: it stays as it is, and l3 builds on it once l2 is merged into it.
      const points = chain(["full", "l1", "l2", "l3"]);
      const holds = [{ point: "l1", reason: "audit" }];
      const plan = planRetention({ points, rules: { keepLast: 1 }, holds, now });
      expect(merges(plan)).toEqual(["l2 into l3"]);
      expect(reasonsOf(plan)).toEqual({
        l3: ["keepLast (1 of 1)", "newest good point"],
        l1: ["held: audit", "needed by l3"],
        full: ["needed by l1"],
      });
    });

    test("each kept point takes the links between it and the next kept base", () => {
      const points = chain(["full", "l1", "l2", "l3", "l4"]);
      const plan = planRetention({
        points,
        rules: { keepLast: 1, maxAgeDays: 4 },
        now: new Date("2026-11-25T12:00:00Z"),
      });
      // maxAgeDays 4 keeps the 22nd and later (l2, l3, l4); l1 and full merge into l2.
      expect(ids(plan.keep)).toEqual(["l4", "l3", "l2"]);
      expect(merges(plan)).toEqual(["l1 into l2", "full into l2"]);
      expect(reasonsOf(plan).l2).toEqual(["maxAgeDays 4 (3 d old)", "needed by l3"]);
    });

    test("a held point holds its ancestors: what it builds on is never merged", () => {
      const points = chain(["full", "l1", "l2", "l3"]);
      const plan = planRetention({ points, rules: { keepLast: 1 }, holds: [{ point: "l3", reason: "case 7" }], now });
      expect(plan.merge).toEqual([]);
      expect(reasonsOf(plan)).toEqual({
        l3: ["keepLast (1 of 1)", "newest good point", "held: case 7"],
        l2: ["needed by l3"],
        l1: ["needed by l2"],
        full: ["needed by l1"],
      });
    });

    test("nothing merges into a point that is not ok, nor into one a failed point builds on", () => {
      const points = chain(["full", "l1", "l2", "l3"], { l3: "failed" });
      const plan = planRetention({ points, rules: { keepLast: 1 }, now });
      expect(plan.merge).toEqual([]);
      expect(reasonsOf(plan)).toEqual({
        l3: ["failed: never pruned automatically"],
        l2: ["keepLast (1 of 1)", "newest good point", "needed by l3"],
        l1: ["needed by l2"],
        full: ["needed by l1"],
      });
    });

    test("a base that is not a qcow2 link (Cinder's chains), or that two points build on, is kept", () => {
      const cinder = [
        point("full", "2026-11-20T03:00:00Z"),
        point("inc", "2026-11-21T03:00:00Z", "ok", { dependsOn: ["full"] }),
      ];
      expect(merges(planRetention({ points: cinder, rules: { keepLast: 1 }, now }))).toEqual([]);
      const branch = [
        point("base", "2026-11-20T03:00:00Z"),
        point("a", "2026-11-21T03:00:00Z", "ok", { dependsOn: ["base"], links: ["base"] }),
        point("b", "2026-11-22T03:00:00Z", "ok", { dependsOn: ["base"], links: ["base"] }),
      ];
      const plan = planRetention({ points: branch, rules: { keepLast: 2 }, now });
      expect(plan.merge).toEqual([]);
      expect(reasonsOf(plan).base).toEqual(["needed by b", "needed by a"]);
    });
  });

  test("a point whose time is unreadable is kept and does not count", () => {
    const points = [point("garbled", "yesterday"), ...novemberDailies().slice(-2)];
    const plan = planRetention({ points, rules: { keepLast: 1 }, now });
    expect(reasonsOf(plan).garbled).toEqual(["takenAt is not a valid time: never pruned automatically"]);
    expect(ids(plan.keep)).toEqual(["nov-25", "garbled"]);
    expect(ids(plan.prune)).toEqual(["nov-24"]);
  });

  test("refuses repeated point ids and an unknown time zone", () => {
    const twice = [point("a", "2026-11-24T03:00:00Z"), point("a", "2026-11-25T03:00:00Z")];
    expect(() => planRetention({ points: twice, rules: { keepLast: 1 }, now })).toThrow(
      /point ids must be unique within a set: "a" appears twice/,
    );
    let error: unknown;
    try {
      planRetention({ points: novemberDailies(), rules: { keepDaily: 1 }, now, timeZone: "Europe/Atlantis" });
    } catch (e) {
      error = e;
    }
    expect(isCofferError(error)).toBe(true);
    expect((error as Error).message).toBe(
      'timeZone: timeZone must be an IANA time zone such as "Europe/Berlin" or "UTC", not "Europe/Atlantis"',
    );
  });

  test("plans 1,000 points fast (900 pruned), and 10,000 with every rule in a DST zone", () => {
    const points = Array.from({ length: 1000 }, (_, i) =>
      point(`p${i}`, new Date(Date.parse("2026-11-25T00:00:00Z") - i * HOUR).toISOString()),
    );
    let started = performance.now();
    const plan = planRetention({ points, rules: { keepLast: 100 }, now });
    expect(performance.now() - started).toBeLessThan(250);
    expect(plan.prune).toHaveLength(900);
    expect(plan.keep).toHaveLength(100);

    const many = Array.from({ length: 10_000 }, (_, i) =>
      point(`q${i}`, new Date(Date.parse("2026-11-25T00:00:00Z") - i * 47 * MINUTE).toISOString()),
    );
    const every = { keepLast: 5, keepHourly: 24, keepDaily: 14, keepWeekly: 8, keepMonthly: 12, keepYearly: 3 };
    started = performance.now();
    const big = planRetention({ points: many, rules: every, now, timeZone: "Europe/Berlin" });
    expect(performance.now() - started).toBeLessThan(2000);
    expect(big.keep.length + big.prune.length).toBe(10_000);
  });
});

/**
 * Proxmox Backup Server's prune as its documentation and pbs-datastore's prune.rs describe it,
 * written from that description: each rule, in order, skips periods that hold a point an earlier
 * rule keeps, skips points an earlier rule already decided on, keeps the newest point of each new
 * period up to N and marks the others of those periods for removal.
 */
function pbsKeeps(points: HistoryPoint[], rules: RetentionRules, timeZone: string): Set<string> {
  const list = points.filter((p) => p.status === "ok").sort(newestFirst);
  const periodsAt = periodsIn(timeZone);
  const period = { keepHourly: "hour", keepDaily: "day", keepWeekly: "week", keepMonthly: "month", keepYearly: "year" };
  const marks = new Map<string, "keep" | "remove">();
  for (const rule of ["keepLast", ...CALENDAR_RULES] as const) {
    const limit = rules[rule];
    if (limit === undefined) continue;
    const select = (p: HistoryPoint) =>
      rule === "keepLast" ? p.id : periodsAt(Date.parse(p.takenAt))[period[rule] as "day"];
    const covered = new Set(list.filter((p) => marks.get(p.id) === "keep").map(select));
    const included = new Set<string>();
    for (const p of list) {
      if (marks.has(p.id) || covered.has(select(p))) continue;
      if (included.has(select(p))) {
        marks.set(p.id, "remove");
        continue;
      }
      if (included.size >= limit) break;
      included.add(select(p));
      marks.set(p.id, "keep");
    }
  }
  return new Set(list.filter((p) => marks.get(p.id) === "keep").map((p) => p.id));
}

describe("planRetention: properties", () => {
  jest.setTimeout(60_000); // a few hundred runs each, on a machine other work shares
  const NOW = Date.parse("2026-11-26T12:00:00Z");
  const MAX_POINTS = 40;
  const idOf = (i: number) => `p${String(i).padStart(2, "0")}`;

  /** Points over a span from hours to years, so that hours, days, ... hold several points or none. */
  const pointsArb = fc.constantFrom(12 * 60, 20 * 24 * 60, 200 * 24 * 60, 4 * 365 * 24 * 60).chain((spanMinutes) =>
    fc
      .uniqueArray(
        fc.record({
          minutesAgo: fc.integer({ min: -30, max: spanMinutes }),
          status: fc.constantFrom<PointStatus>("ok", "ok", "ok", "ok", "failed", "missing"),
          // One base (a string), or several (sources with their own chains).
          dependsOn: fc.option(fc.oneof(fc.nat({ max: MAX_POINTS - 1 }), fc.array(fc.nat({ max: MAX_POINTS - 1 }))), {
            nil: undefined,
          }),
        }),
        { selector: (r) => r.minutesAgo, maxLength: MAX_POINTS },
      )
      .map((records) =>
        records.map((r, i): HistoryPoint => {
          const p = point(idOf(i), new Date(NOW - r.minutesAgo * MINUTE).toISOString(), r.status);
          // A point builds on points taken before it (so no cycle), among those generated.
          const base = (d: number) => d < records.length && records[d].minutesAgo > r.minutesAgo;
          if (r.dependsOn === undefined) return p;
          if (typeof r.dependsOn === "number") return base(r.dependsOn) ? { ...p, dependsOn: idOf(r.dependsOn) } : p;
          return { ...p, dependsOn: r.dependsOn.filter(base).map(idOf) };
        }),
      ),
  );
  const withoutDependencies = pointsArb.map((points) => points.map(({ dependsOn: _none, ...p }) => p));
  const count = fc.option(fc.integer({ min: 1, max: 8 }), { nil: undefined });
  const rulesArb = fc
    .record(
      Object.fromEntries(RETENTION_RULES.map((rule) => [rule, count])) as Record<keyof RetentionRules, typeof count>,
    )
    .map((rules) => Object.fromEntries(Object.entries(rules).filter(([, n]) => n !== undefined)) as RetentionRules);
  const declaredRulesArb = rulesArb.filter((rules) => Object.keys(rules).length > 0);
  const holdsArb = fc.array(
    fc.record({
      point: fc.nat({ max: MAX_POINTS - 1 }).map(idOf),
      reason: fc.constantFrom("legal hold", "forensics"),
      until: fc.option(
        fc.integer({ min: -5, max: 5 }).map((d) => new Date(NOW + d * DAY).toISOString()),
        {
          nil: undefined,
        },
      ),
    }),
    { maxLength: 3 },
  );
  const timeZoneArb = fc.constantFrom(
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
  );
  const inputArb = fc.record({ points: pointsArb, rules: rulesArb, holds: holdsArb, timeZone: timeZoneArb });
  const plan = (input: { points: HistoryPoint[]; rules: RetentionRules; holds: Hold[]; timeZone: string }) =>
    planRetention({ ...input, now: new Date(NOW) });
  const prunedIds = (input: Parameters<typeof plan>[0]) => new Set(ids(plan(input).prune));

  test("the result partitions the input: every point once, kept or pruned, each kept one with a reason", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const result = plan(input);
        const all = [...ids(result.keep), ...ids(result.prune)];
        expect(all.sort()).toEqual(ids(input.points.map((p) => ({ point: p }))).sort());
        for (const kept of result.keep) expect(kept.reasons.length).toBeGreaterThan(0);
        for (const pruned of result.prune) expect(pruned.reason).not.toBe("");
      }),
      { numRuns: 300 },
    );
  });

  test("without rules nothing is pruned", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        expect(plan({ ...input, rules: {} }).prune).toEqual([]);
      }),
    );
  });

  test("the newest good point is always kept", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const { newestGood } = newestPoints(input.points);
        fc.pre(newestGood !== undefined);
        const kept = plan(input).keep.find((k) => k.point.id === newestGood!.id);
        expect(kept?.reasons).toContain("newest good point");
      }),
      { numRuns: 300 },
    );
  });

  test("a point under a hold still in force is always kept", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const pruned = prunedIds(input);
        for (const hold of input.holds) {
          if (hold.until === undefined || Date.parse(hold.until) > NOW) expect(pruned.has(hold.point)).toBe(false);
        }
      }),
      { numRuns: 300 },
    );
  });

  test("failed and missing points are never pruned", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        for (const pruned of plan(input).prune) expect(pruned.point.status).toBe("ok");
      }),
      { numRuns: 300 },
    );
  });

  test("adding a rule, or raising one, never prunes more", () => {
    const grownArb = fc.tuple(declaredRulesArb, fc.constantFrom(...RETENTION_RULES), fc.integer({ min: 1, max: 8 }));
    fc.assert(
      fc.property(inputArb, grownArb, (input, [rules, rule, extra]) => {
        const grown = { ...rules, [rule]: (rules[rule] ?? 0) + extra };
        const before = prunedIds({ ...input, rules });
        for (const id of prunedIds({ ...input, rules: grown })) expect(before.has(id)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  test("the result does not depend on the order the points are listed in", () => {
    const shuffledArb = inputArb.chain((input) =>
      fc
        .shuffledSubarray(input.points, { minLength: input.points.length, maxLength: input.points.length })
        .map((shuffled) => [input, { ...input, points: shuffled }] as const),
    );
    fc.assert(
      fc.property(shuffledArb, ([input, shuffled]) => {
        expect(plan(shuffled)).toEqual(plan(input));
      }),
      { numRuns: 300 },
    );
  });

  test("every point a kept point depends on is kept, and a pruned point is deleted before its pruned base", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const result = plan(input);
        const kept = new Set(ids(result.keep));
        const byId = new Map(input.points.map((p) => [p.id, p]));
        for (const k of result.keep) {
          for (const base of basesOf(k.point)) if (byId.has(base)) expect(kept.has(base)).toBe(true);
        }
        const position = new Map(ids(result.prune).map((id, i) => [id, i]));
        for (const p of result.prune) {
          for (const base of basesOf(p.point)) {
            if (base !== p.point.id && position.has(base)) {
              expect(position.get(p.point.id)!).toBeLessThan(position.get(base)!);
            }
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  test("with qcow2 links, every point is kept, pruned or merged once; every kept point stays restorable", () => {
    const linked = inputArb.map((input) => ({
      ...input,
      points: input.points.map((p) => ({ ...p, links: basesOf(p) })),
    }));
    fc.assert(
      fc.property(linked, (input) => {
        const result = plan(input);
        const merged = new Map(result.merge.map((m) => [m.point.id, m]));
        const all = [...ids(result.keep), ...ids(result.prune), ...merged.keys()];
        expect(all.sort()).toEqual(input.points.map((p) => p.id).sort());
        const kept = new Set(ids(result.keep));
        const byId = new Map(input.points.map((p) => [p.id, p]));
        const held = (id: string) => input.holds.some((h) => h.point === id && (!h.until || Date.parse(h.until) > NOW));
        for (const m of result.merge) {
          expect([m.point.status, m.into.status, kept.has(m.into.id), held(m.into.id)]).toEqual([
            "ok",
            "ok",
            true,
            false,
          ]);
        }
        // After the merges, a kept point builds on its merged links' bases: those are all kept.
        const basesAfter = (id: string, seen = new Set<string>()): string[] =>
          basesOf(byId.get(id)!).flatMap((base) => {
            if (!byId.has(base) || seen.has(base)) return [];
            seen.add(base);
            return merged.has(base) ? basesAfter(base, seen) : [base];
          });
        for (const k of result.keep) for (const base of basesAfter(k.point.id)) expect(kept.has(base)).toBe(true);
        // A point whose files never change (held, not ok) builds on nothing that merges.
        for (const k of result.keep.filter((k) => k.point.status !== "ok" || held(k.point.id))) {
          for (const base of basesOf(k.point)) expect(merged.has(base)).toBe(false);
        }
        // Nearest first: the one point that builds on a merged point is its kept point, or merged before it.
        result.merge.forEach((m, i) => {
          const dependents = input.points.filter((p) => basesOf(p).includes(m.point.id)).map((p) => p.id);
          expect(dependents).toHaveLength(1);
          const before = result.merge.slice(0, i).map((e) => e.point.id);
          expect([m.into.id, ...before]).toContain(dependents[0]);
        });
      }),
      { numRuns: 300 },
    );
  });

  test("keeps exactly what Proxmox Backup Server keeps where its periods nest", () => {
    // PBS differs only when weeks are combined with months or years, whose periods weeks straddle.
    const nestingRulesArb = declaredRulesArb
      .map(({ maxAgeDays: _notInPbs, ...rules }) => rules)
      .filter((rules) => Object.keys(rules).length > 0)
      .filter((rules) => !(rules.keepWeekly && (rules.keepMonthly || rules.keepYearly)));
    fc.assert(
      fc.property(withoutDependencies, nestingRulesArb, timeZoneArb, (points, rules, timeZone) => {
        const result = planRetention({ points, rules, now: new Date(NOW), timeZone });
        const keptGood = result.keep.filter((k) => k.point.status === "ok").map((k) => k.point.id);
        expect(new Set(keptGood)).toEqual(pbsKeeps(points, rules, timeZone));
      }),
      { numRuns: 500 },
    );
  });
});
