import type * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";
import type { FinalContext } from "../agent/manifest";
import { INDEX_KIND, SetIndex, finalHoldOf, finalOf, indexVersionOf } from "../agent/pointIndex";
import type { SetHost } from "../backupSet/provider";
import { planTarget } from "../backupSet/plan";
import { takePoint } from "../backupSet/take";
import { changedKeys, checkInputs, parseCheckedInputs, withoutUndefined } from "../common/check";
import { CofferError, isCofferError } from "../common/errors";
import { formatBytes } from "../common/sizes";
import { finalPointPlan } from "./plan";
import { FinalStateInputs, describeVm, finalStateInputs, vmIdentity, vmSchema } from "./schema";
import { FINAL_STATE_SCHEMA_VERSION, FinalStateOutputs, upgradeFinalState } from "./state";

type Outputs = FinalStateOutputs & { __provider?: string };

const INPUT_KEYS = [
  "vm",
  "policy",
  "keys",
  "recipients",
  "threshold",
  "holdDays",
  "reason",
  "allowDeleteWithoutBackup",
  "scrub",
  "takenFor",
] as const;

/** The resource's name, the last part of its URN, for the set's folder name. */
const nameOf = (urn: string) => urn.slice(urn.lastIndexOf("::") + 2) || "vm";

/**
 * FinalStateBackup: armed by `create`, it takes one final point of its VM in `delete`, which Pulumi
 * runs before the VM's own deletion (the resource depends on the VM). The point is sealed for the
 * recipients, signed, and held for `holdDays`; if it fails, the deletion fails and the VM stays,
 * unless `allowDeleteWithoutBackup`.
 */
export function createFinalStateProvider(host: SetHost) {
  /** URNs whose replacement diff announced in this process: their delete is a replacement's. */
  const replacing = new Set<string>();

  const targetPathOf = (inputs: Pick<FinalStateInputs, "policy">) => (inputs.policy.target as { path: string }).path;
  const parse = (news: Record<string, unknown>): FinalStateInputs => parseCheckedInputs(finalStateInputs, news);

  /** The target is a Coffer target, reachable from where the manifest is written; its identity. */
  async function checkTarget(inputs: FinalStateInputs): Promise<string> {
    // A directory target: check refuses a Swift one.
    const target = { path: targetPathOf(inputs), zone: inputs.policy.zone };
    const { targetId } = await host.agent(inputs.policy.host).call("check-target", { target });
    return targetId;
  }

  /** Takes the final point and records it in its set's index with its hold; the point's id and size. */
  async function takeFinalPoint(state: FinalStateOutputs, operation: FinalContext["operation"]) {
    const now = host.now();
    const pointId = host.newPointId(now);
    const plan = await finalPointPlan(state, { pointId, now, operation });
    host.progress(`final-state backup of ${describeVm(state.vm)}: taking point ${pointId} (${operation})`);
    const taken = await takePoint(plan, host);
    if (state.targetId && taken.targetId !== state.targetId) {
      host.note(`final point ${pointId}: the target's identity changed since the backup was armed (another disk?)`);
    }
    const final = plan.final!;
    const sizeBytes = taken.items.reduce((sum, item) => sum + item.sizeBytes, 0);
    const agent = host.agent(plan.manifestWhere);
    const target = planTarget(plan, taken.targetId);
    const setDir = path.dirname(plan.pointDir);
    // The hold is in the signed manifest too: a lost index is rebuilt with it.
    const earlier = await agent
      .call("read-index", { target, setDir, zone: plan.zone })
      .then((reply) => reply?.index)
      .catch(() => undefined);
    // An index the agent rebuilt from the manifests lists this point already.
    const points = [
      ...(earlier?.points ?? []).filter((p) => p.id !== pointId),
      {
        id: pointId,
        takenAt: taken.manifest.createdAt,
        sizeBytes,
        status: "ok" as const,
        checkedAt: now.toISOString(),
        keySource: "recipients" as const,
        final: finalOf(final),
      },
    ];
    const index: SetIndex = {
      kind: INDEX_KIND,
      schemaVersion: 1,
      setId: state.setId,
      zone: plan.zone,
      updatedAt: now.toISOString(),
      retention: null,
      holds: [...(earlier?.holds ?? []).filter((h) => h.point !== pointId), finalHoldOf(pointId, final)],
      points,
      pruned: earlier?.pruned ?? [],
    };
    await agent
      .call("write-index", { target, setDir, index: { ...index, schemaVersion: indexVersionOf(index) } })
      .catch((error: Error) => host.note(`final point ${pointId}: index not written (${error.message})`));
    return { pointId, pointDir: plan.pointDir, sizeBytes, holdUntil: final.holdUntil };
  }

  return {
    async check(_olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
      return checkInputs(finalStateInputs, news);
    },

    async diff(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
      const state = upgradeFinalState(olds);
      const changed = changedKeys(state, news, INPUT_KEYS);
      // Another VM is another final state (the old VM's is taken as it is replaced); other devices are not.
      const vm = vmSchema.safeParse(news.vm);
      const sameVm = vm.success && vmIdentity(vm.data) === vmIdentity(state.vm);
      const replaces = changed.includes("vm") && !sameVm ? ["vm"] : [];
      if (replaces.length > 0) replacing.add(state.takenFor.urn);
      const changes = changed.length > 0;
      return { changes, replaces, deleteBeforeReplace: false };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
      const inputs = parse(news);
      const targetId = await checkTarget(inputs);
      const setId = host.newSetId(`final-${nameOf(inputs.takenFor.urn)}`);
      const state: FinalStateOutputs = {
        ...inputs,
        schemaVersion: FINAL_STATE_SCHEMA_VERSION,
        setId,
        targetId,
        armedAt: host.now().toISOString(),
      };
      host.note(`final-state backup armed for ${describeVm(inputs.vm)}: set ${setId}`);
      return { id: setId, outs: withoutUndefined(state) };
    },

    async read(id: string, props: Outputs): Promise<pulumi.dynamic.ReadResult> {
      const state = upgradeFinalState(props);
      return { id, props: withoutUndefined(state) };
    },

    async update(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
      const previous = upgradeFinalState(olds);
      const inputs = parse(news);
      const movedTarget =
        targetPathOf(inputs) !== targetPathOf(previous) || inputs.policy.host !== previous.policy.host;
      const targetId = movedTarget ? await checkTarget(inputs) : previous.targetId;
      const state: FinalStateOutputs = {
        ...inputs,
        schemaVersion: FINAL_STATE_SCHEMA_VERSION,
        setId: previous.setId,
        targetId,
        armedAt: previous.armedAt,
      };
      return { outs: withoutUndefined(state) };
    },

    async delete(_id: string, props: Outputs): Promise<void> {
      const state = upgradeFinalState(props);
      const operation = replacing.has(state.takenFor.urn) ? "replace" : "delete";
      const vm = describeVm(state.vm);
      try {
        const taken = await takeFinalPoint(state, operation);
        host.note(
          `final-state backup of ${vm}: point ${taken.pointId} (${formatBytes(taken.sizeBytes)}) in ` +
            `${taken.pointDir}, held until ${taken.holdUntil}; it opens with the private key of ` +
            `${state.threshold} of: ${state.recipients.map((r) => r.name).join(", ")}`,
        );
      } catch (error) {
        const reason = (error as Error).message;
        if (state.allowDeleteWithoutBackup) {
          host.note(`WARNING: ${vm} goes WITHOUT a final-state backup (allowDeleteWithoutBackup is true): ${reason}`);
          return;
        }
        const code = isCofferError(error) ? error.code : "IO_FAILED";
        throw new CofferError(
          code,
          `the final-state backup of ${vm} failed, so its deletion is blocked and the VM keeps running: ${reason}. ` +
            "Fix the cause and run again; or set allowDeleteWithoutBackup: true on the FinalStateBackup " +
            "(pulumi up) to let the VM go without one",
        );
      }
    },
  };
}
