/**
 * Reading the resources @pulumi/policy hands a rule. What a rule sees of a Coffer resource:
 * - `props`: its inputs as the provider's `check` returned them, secrets in the clear (a rule never
 *   puts a prop that may be secret into a message);
 * - in a preview, a value that comes from another resource's output is unknown and throws
 *   UnknownValueError when read; resources are related through `propertyDependencies`, which are
 *   known, rather than through such values.
 */
import { type PolicyResource, type ReportViolation, UnknownValueError } from "@pulumi/policy";

/** `{ value }` of what `read` returns, or `undefined` when it can't be known in this preview. */
export function readKnown<T>(read: () => T): { value: T } | undefined {
  try {
    return { value: read() };
  } catch (error) {
    if (error instanceof UnknownValueError) return undefined;
    throw error;
  }
}

/** The value `read` returns, or `undefined` when it can't be known in this preview (or is absent). */
export const known = <T>(read: () => T): T | undefined => readKnown(read)?.value;

/** The resources of `type` that `resource`'s input `prop` was built from. */
export function relatedThrough(resource: PolicyResource, prop: string, type: string): PolicyResource[] {
  return (resource.propertyDependencies[prop] ?? []).filter((r) => r.type === type);
}

/** A plain copy of a prop, read in full: it throws UnknownValueError if any part is unknown. */
export const plainCopy = (value: unknown): unknown =>
  value === undefined ? undefined : JSON.parse(JSON.stringify(value));

/**
 * An advisory note, not a violation: the rule could not decide for `urn` because a value is unknown
 * in this preview. @pulumi/policy takes a violation object with its own enforcement level (what it
 * does for its own "can't run policy during preview" note), though its type declares only strings.
 */
export function noteUnknown(report: ReportViolation, urn: string, what: string): void {
  const reportObject = report as unknown as (violation: object) => void;
  reportObject({
    message: `${what} can't be known in this preview: checked when \`pulumi up\` has the value.`,
    urn,
    enforcementLevel: "advisory",
  });
}
