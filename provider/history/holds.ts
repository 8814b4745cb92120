import { z } from "zod";

const UNTIL_EXAMPLE = '"2027-12-31T00:00:00Z"';

/**
 * `holds: [{ point, reason, until? }]` on a set (legal hold, forensics): a held point is never
 * pruned. A hold whose `until` has passed no longer holds; without `until` it holds until removed.
 */
export const holds = z.array(
  z
    .object(
      {
        point: z
          .string({ error: "holds[].point must be the id of a point of this set, e.g. from `coffer sets`" })
          .min(1, { message: "holds[].point must not be empty: give the id of the point to hold" }),
        reason: z
          .string({ error: 'holds[].reason is required: say why the point is held, e.g. "legal hold, case 4711"' })
          .trim()
          .min(1, {
            message: 'holds[].reason must not be empty: say why the point is held, e.g. "legal hold, case 4711"',
          }),
        until: z.iso
          .datetime({
            offset: true,
            error:
              `holds[].until must be an ISO date-time with a zone, e.g. ${UNTIL_EXAMPLE}, ` +
              "or absent to hold until the hold is removed",
          })
          .optional(),
      },
      { error: 'each hold must be an object like { point: "<point id>", reason: "legal hold, case 4711" }' },
    )
    .strict(),
  { error: 'holds must be a list like [{ point: "<point id>", reason: "legal hold, case 4711" }], or absent' },
);

export type Hold = z.output<typeof holds>[number];

/** Whether `hold` still holds at `now`. */
export function holdsAt(hold: Hold, now: Date): boolean {
  return hold.until === undefined || Date.parse(hold.until) > now.getTime();
}

/** How a kept point's reasons name a hold. */
export function holdReason(hold: Hold): string {
  return hold.until === undefined ? `held: ${hold.reason}` : `held until ${hold.until}: ${hold.reason}`;
}
