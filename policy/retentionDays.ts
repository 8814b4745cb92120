/** Rule: every BackupPolicy's retention keeps at least N days of points, for each of its sets' schedules. */
import type { PolicyResource, ReportViolation, StackValidationPolicy } from "@pulumi/policy";
import type { Schedule } from "../provider/history/schedule";
import { noteUnknown, plainCopy, readKnown, relatedThrough } from "./resources";
import {
  formatDays,
  type RetentionInput,
  type RetentionReach,
  retentionReach,
  shortestScheduleGapMs,
} from "./retentionReach";
import { COFFER_TYPES, RULE_NAMES } from "./types";

export interface RetentionDaysConfig {
  /** The fewest days of points a policy's retention may keep. Default 7. */
  minDays: number;
}

/** The sets of `policy` in the stack: their `policy` input is built from it. */
export function setsOf(policy: PolicyResource, resources: PolicyResource[]): PolicyResource[] {
  return resources.filter(
    (r) => r.type === COFFER_TYPES.backupSet && relatedThrough(r, "policy", COFFER_TYPES.backupPolicy).includes(policy),
  );
}

/** What `retention` keeps for a set, by its schedule; unknown in this preview counts as none (a lower bound). */
function reachForSet(retention: RetentionInput, set: PolicyResource, report: ReportViolation): RetentionReach {
  const gap = readKnown(() => shortestScheduleGapMs(set.props.schedule as Schedule | undefined));
  if (gap === undefined && retention?.keepLast !== undefined) {
    noteUnknown(report, set.urn, `EncryptedBackupSet "${set.name}"'s schedule (which keepLast counts on)`);
  }
  return retentionReach(retention, gap?.value);
}

export const retentionDays: StackValidationPolicy = {
  name: RULE_NAMES.retentionDays,
  description:
    "A BackupPolicy's retention keeps at least N days of recovery points: maxAgeDays M keeps M days, " +
    "keepDaily K K days (keepHourly K/24, keepWeekly 7K, keepMonthly 28K, keepYearly 365K), keepLast K " +
    "K times the shortest gap of each set's schedule (0 without one); no retention keeps every point.",
  enforcementLevel: "mandatory",
  configSchema: {
    properties: { minDays: { type: "number", minimum: 0, default: 7 } },
  },
  validateStack: (args, report) => {
    const { minDays } = args.getConfig<RetentionDaysConfig>();
    for (const policy of args.resources.filter((r) => r.type === COFFER_TYPES.backupPolicy)) {
      // Read whole: rules given as other resources' outputs are unknown in a preview.
      const retention = readKnown(() => plainCopy(policy.props.retention) as RetentionInput);
      if (retention === undefined) {
        noteUnknown(report, policy.urn, `BackupPolicy "${policy.name}"'s retention`);
        continue;
      }
      const sets = setsOf(policy, args.resources);
      const reaches: { reach: RetentionReach; set?: PolicyResource }[] =
        sets.length === 0
          ? [{ reach: retentionReach(retention.value, undefined) }]
          : sets.map((set) => ({ reach: reachForSet(retention.value, set, report), set }));
      const shortest = reaches.reduce((worst, r) => (r.reach.days < worst.reach.days ? r : worst));
      if (shortest.reach.days >= minDays) continue;
      const forSet = shortest.set ? ` for set "${shortest.set.name}"` : "";
      report(
        `BackupPolicy "${policy.name}" keeps ${formatDays(shortest.reach.days)} of points${forSet} ` +
          `(${shortest.reach.reachedBy}); this stack requires at least ${minDays} d. Fix: set ` +
          `\`keepDaily: ${Math.ceil(minDays)}\` or \`maxAgeDays: ${Math.ceil(minDays)}\` in its retention ` +
          `(or remove retention to keep every point).`,
        policy.urn,
      );
    }
  },
};
