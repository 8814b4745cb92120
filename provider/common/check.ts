import type * as pulumi from "@pulumi/pulumi";
import { canonicalJson } from "./canonicalJson";
import { CofferError } from "./errors";
import type { z } from "zod";

/**
 * The string Pulumi puts in place of a value that is not known yet during preview, whatever the
 * declared type (`@pulumi/pulumi/runtime/rpc` `unknownValue`).
 */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** Dotted paths of every unknown value in `value` ("" for the value itself). */
export function unknownPaths(value: unknown, at: string[] = []): string[] {
  if (value === UNKNOWN) return [at.join(".")];
  if (Array.isArray(value)) return value.flatMap((item, i) => unknownPaths(item, [...at, String(i)]));
  if (typeof value === "object" && value !== null) {
    return Object.entries(value).flatMap(([key, item]) => unknownPaths(item, [...at, key]));
  }
  return [];
}

/**
 * Which of `keys` a change of inputs touches: a value unknown during preview (or holding one)
 * counts as changed; otherwise canonical JSON of state and declared inputs is compared, or
 * `same[key]` decides where only part of a value matters.
 */
export function changedKeys<K extends string>(
  olds: object,
  news: Record<string, unknown>,
  keys: readonly K[],
  same: Partial<Record<K, (olds: object, news: Record<string, unknown>) => boolean>> = {},
): K[] {
  const unknown = unknownPaths(news);
  const old = olds as Record<string, unknown>;
  return keys.filter(
    (key) =>
      unknown.some((p) => isUnder(p, key)) ||
      !(same[key] ? same[key]!(olds, news) : canonicalJson(old[key] ?? null) === canonicalJson(news[key] ?? null)),
  );
}

function isUnder(path: string, prefix: string): boolean {
  return prefix === "" || path === prefix || path.startsWith(prefix + ".");
}

/** Drops Pulumi's own bookkeeping (`__provider`) so schemas can stay strict about user fields. */
export function userInputs(news: Record<string, unknown>): Record<string, unknown> {
  const { __provider: _ignored, ...rest } = news;
  return rest;
}

/**
 * Validates `news` with `schema` the way a dynamic provider's `check` must:
 * issues become `{property, reason}` failures, and issues about a value that is unknown during
 * preview (or lies under one) are not failures. With unknowns present the inputs pass through
 * unnormalized, since normalizing needs the whole value.
 */
export function checkInputs<Schema extends z.ZodType>(
  schema: Schema,
  news: Record<string, unknown>,
): pulumi.dynamic.CheckResult<z.output<Schema>> {
  const raw = userInputs(news);
  const unknowns = unknownPaths(raw);
  const parsed = schema.safeParse(raw);
  if (parsed.success) return { inputs: parsed.data };
  const failures = parsed.error.issues
    .flatMap(issueToFailures)
    .filter(
      (failure) =>
        !unknowns.some((unknown) => isUnder(failure.property, unknown) || isUnder(unknown, failure.property)),
    );
  if (failures.length > 0) return { failures };
  return { inputs: raw as z.output<Schema> };
}

function issueToFailures(issue: z.core.$ZodIssue): pulumi.dynamic.CheckFailure[] {
  const at = issue.path.map(String);
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => ({
      property: [...at, key].join("."),
      reason: `${[...at, key].join(".")} is not a known field: check its spelling, or remove it`,
    }));
  }
  return [{ property: at.join("."), reason: issue.message }];
}

/**
 * `value` without object keys whose value is undefined, at any depth: Pulumi's provider host
 * converts results with protobuf's Struct.fromJavaScript, which rejects undefined.
 */
export function withoutUndefined<T>(value: T): T {
  if (Array.isArray(value)) return value.map(withoutUndefined) as T;
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => [k, withoutUndefined(v)]),
    ) as T;
  }
  return value;
}

/**
 * The inputs of create and update, which `check` has already accepted; anything else is a bug
 * or tampered state, reported with the first problem's field.
 */
export function parseCheckedInputs<Schema extends z.ZodType>(
  schema: Schema,
  news: Record<string, unknown>,
): z.output<Schema> {
  const parsed = schema.safeParse(userInputs(news));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CofferError("INVALID_INPUT", issue.message, { field: issue.path.join(".") });
  }
  return parsed.data;
}

/**
 * State as the current code reads it: without `__provider`, and refused (with the fix) when a
 * newer Coffer wrote it. Every older version is accepted; a resource upgrades fields itself.
 */
export function currentState<T extends { schemaVersion?: number }>(
  resource: string,
  current: number,
  olds: T & { __provider?: unknown },
): T & { schemaVersion: number } {
  const version = olds.schemaVersion ?? 1;
  if (version > current) {
    throw new CofferError(
      "STATE_FROM_NEWER_VERSION",
      `this state was written by a newer Coffer (${resource} schema ${version}, this one knows ${current}): upgrade the coffer package`,
    );
  }
  const { __provider: _ignored, ...rest } = olds;
  return { ...(rest as unknown as T), schemaVersion: current };
}
