/**
 * Every source kind Coffer knows, and what is built from them: the user's source object (each
 * kind's fields, chosen by which are present), the manifest's `item.source` (discriminated by
 * `kind`), and dispatch by kind. A new kind is one file and one entry in SOURCE_KINDS.
 */
import { z } from "zod";
import type { IntegrityCheck } from "../agent/backupSet";
import type { ManifestItem } from "../agent/manifest";
import { CofferError } from "../common/errors";
import { cinderVolumeSource } from "./cinderVolume";
import { diskSource } from "./disk";
import { glanceImageSource } from "./glanceImage";
import type { ItemProblem, RemoveContext, RestoreContext, RestoreTarget, SourceKind, VerifyContext } from "./kind";
import { novaServerSource } from "./novaServer";
import { runningVmSource } from "./runningVm";

/** Kinds whose backups an agent takes with qemu on a KVM host. */
export const AGENT_KINDS = [diskSource, runningVmSource] as const;
/** Kinds whose backups Pulumi's process takes through a cloud's API. */
export const CLOUD_KINDS = [cinderVolumeSource, glanceImageSource, novaServerSource] as const;
export const SOURCE_KINDS = [...AGENT_KINDS, ...CLOUD_KINDS] as const;
export type AgentKindName = (typeof AGENT_KINDS)[number]["kind"];

export type SourceItem = z.output<(typeof SOURCE_KINDS)[number]["item"]>;
export type SourceKindName = SourceItem["kind"];
/** The fields of a source's kind: the user's source object without name and host, as the agent gets it. */
export type SourceFields = z.output<(typeof SOURCE_KINDS)[number]["input"]>;
// Dispatch meets kinds whose input it does not know; their schemas check it.
type AnySourceKind = SourceKind<any, SourceItem>;

/** Each kind by its name; SourceKindName comes from SOURCE_KINDS, so no kind is missing here. */
const BY_KIND = Object.fromEntries(SOURCE_KINDS.map((kind) => [kind.kind, kind])) as unknown as {
  readonly [K in SourceKindName]: Extract<(typeof SOURCE_KINDS)[number], { kind: K }>;
};

export function sourceKindNamed<K extends SourceKindName>(kind: K): (typeof BY_KIND)[K] {
  return BY_KIND[kind];
}

/** The manifest's `item.source`: one of the kinds' items, told apart by `kind`. */
export const sourceItemSchema = z.discriminatedUnion(
  "kind",
  SOURCE_KINDS.map((kind) => kind.item) as unknown as Parameters<typeof z.discriminatedUnion>[1],
) as unknown as z.ZodType<SourceItem>;

type Intersection<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never;
type KindFields = Intersection<(typeof SOURCE_KINDS)[number]["fields"]>;

const describe = (kind: AnySourceKind) => `${kind.selectors.join(" and ")} (${kind.label})`;
const either = (kinds: readonly AnySourceKind[]) =>
  kinds.length === 1
    ? describe(kinds[0])
    : `${kinds.slice(0, -1).map(describe).join(", ")} or ${describe(kinds.at(-1)!)}`;

/** The kinds whose selector fields `source` has. */
export function kindsChosenBy(source: object): AnySourceKind[] {
  const fields = source as Record<string, unknown>;
  return SOURCE_KINDS.filter((kind) => kind.selectors.some((field) => fields[field] !== undefined));
}

/**
 * A source object: the `common` fields and every kind's, strictly. Exactly one kind must be
 * chosen; fields of a kind not chosen are refused, and the chosen kind's rules apply.
 */
export function sourceSchema<Common extends z.ZodRawShape>(common: Common) {
  const shape: Record<string, z.core.$ZodType> = { ...common };
  for (const kind of SOURCE_KINDS) {
    for (const [field, schema] of Object.entries(kind.fields)) {
      // Kinds share a field only as one schema that chooses no kind (incrementalField): else which
      // kind is chosen, or which message shows, would depend on the order here.
      const shared = shape[field] === schema && SOURCE_KINDS.every((k) => !k.selectors.includes(field));
      if (field in shape && !shared) throw new Error(`source field ${field} of kind ${kind.kind} is defined twice`);
      shape[field] = schema;
    }
  }
  return z.strictObject(shape as unknown as Common & KindFields).superRefine((source, ctx) => {
    const fields = source as Record<string, unknown>;
    const chosen = kindsChosenBy(fields);
    const reportAt = [SOURCE_KINDS[0].selectors[0]];
    if (chosen.length > 1) {
      const message = `give either ${either(chosen)}, ${chosen.length === 2 ? "not both" : "only one"}`;
      ctx.addIssue({ code: "custom", path: reportAt, message });
    } else if (chosen.length === 0) {
      ctx.addIssue({ code: "custom", path: reportAt, message: `give ${either(SOURCE_KINDS)}` });
    }
    const misplaced = new Map<string, string[]>();
    for (const kind of SOURCE_KINDS.filter((k) => !chosen.includes(k))) {
      for (const field of Object.keys(kind.fields).filter((f) => !kind.selectors.includes(f))) {
        if (fields[field] === undefined || chosen.some((c) => field in c.fields)) continue;
        misplaced.set(field, [...(misplaced.get(field) ?? []), `${kind.label} (${kind.selectors.join(" and ")})`]);
      }
    }
    for (const [field, kinds] of misplaced) {
      ctx.addIssue({
        code: "custom",
        path: [field],
        message: `${field} only applies to ${kinds.join(" or ")}: remove ${field}`,
      });
    }
    if (chosen.length === 1) chosen[0].rules(fields, ctx);
  });
}

const anySource = sourceSchema({});
/** A source as the agent receives it: the fields of the one kind it chooses, whose rules make them enough. */
export const agentSourceSchema = anySource as unknown as z.ZodType<SourceFields, z.input<typeof anySource>>;

/** The one kind `source` chooses, its input checked; INVALID_INPUT naming the field otherwise. */
export function chooseSourceKind(
  source: object,
  subject: string,
): { kind: SourceKind<SourceFields, SourceItem>; input: SourceFields } {
  const parsed = anySource.safeParse(source);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue.code === "unrecognized_keys" ? issue.keys[0] : issue.path.join(".");
    throw new CofferError("INVALID_INPUT", `${subject}: source.${field}: ${issue.message}`);
  }
  const kind = kindsChosenBy(source)[0] as unknown as SourceKind<SourceFields, SourceItem>;
  return { kind, input: kind.input.parse(source) };
}

/** Items grouped by kind, in the order their kinds first appear. */
function byKind(items: readonly ManifestItem[]): [AnySourceKind, ManifestItem[]][] {
  const groups = new Map<SourceKindName, ManifestItem[]>();
  for (const item of items) groups.set(item.source.kind, [...(groups.get(item.source.kind) ?? []), item]);
  return [...groups].map(([name, ofKind]) => [BY_KIND[name] as AnySourceKind, ofKind]);
}

/** Verifies items, each kind's at once; problems come in the items' order. */
export async function verifyItems(
  items: readonly ManifestItem[],
  level: IntegrityCheck,
  ctx: VerifyContext,
): Promise<ItemProblem[]> {
  const problems: ItemProblem[] = [];
  for (const [kind, ofKind] of byKind(items)) problems.push(...(await kind.verify(ofKind, level, ctx)));
  const order = new Map(items.map((item, i) => [item.name, i]));
  return problems.sort((a, b) => (order.get(a.item) ?? 0) - (order.get(b.item) ?? 0));
}

export async function removeItems(items: readonly ManifestItem[], ctx: RemoveContext): Promise<void> {
  for (const [kind, ofKind] of byKind(items)) await kind.remove(ofKind, ctx);
}

/** How to restore `item` (to a new file, checked against what was backed up), or undefined when its kind can't. */
export function restorerOf(
  item: ManifestItem,
): ((to: RestoreTarget, ctx: RestoreContext) => Promise<void>) | undefined {
  const kind = BY_KIND[item.source.kind] as AnySourceKind;
  return kind.restore && ((to, ctx) => kind.restore!(item, to, ctx));
}
