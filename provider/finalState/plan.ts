import { randomBytes } from "node:crypto";
import * as path from "node:path";
import type { FinalContext } from "../agent/manifest";
import { PointPlan, planPoint, recipientKeys, sealedForRecipients } from "../backupSet/plan";
import type { BackupSetInputs } from "../backupSet/schema";
import { CofferError } from "../common/errors";
import type { FinalVm } from "./schema";
import type { FinalStateOutputs } from "./state";

const DAY_MS = 86_400_000;

/** The VM's disks as sources of a point: one per QMP device, or per disk file (named by the file). */
export function vmSources(vm: FinalVm): BackupSetInputs["sources"] {
  // Its root disk is item "server", each attached volume "server.<device>".
  if ("novaServer" in vm) return [{ name: "server", novaServer: vm.novaServer }];
  const host = vm.host ? { host: vm.host } : {};
  if ("qmpSocket" in vm) {
    return vm.devices.map((device) => ({ name: device, qmpSocket: vm.qmpSocket, device, ...host }));
  }
  const names = new Set<string>();
  return vm.disks.map(({ disk, format, backingFiles }) => {
    const base =
      path
        .basename(disk)
        .replace(/\.[^.]*$/, "")
        .replace(/[^A-Za-z0-9._-]+/g, "-")
        .slice(0, 56) || "disk";
    let name = /^[A-Za-z0-9]/.test(base) ? base : `disk-${base}`;
    for (let n = 2; names.has(name); n++) name = `${base}-${n}`;
    names.add(name);
    return { name, disk, ...(format ? { format } : {}), ...(backingFiles ? { backingFiles } : {}), ...host };
  });
}

/** What the manifest records of the VM: the input, which names its socket or files and host. */
const vmRecord = (vm: FinalVm): Record<string, unknown> => ({ ...vm });

/**
 * The plan of the final point: the VM's disks under the policy's settings, into the backup's set,
 * sealed for its recipients (a fresh random key: the policy's passphrase opens nothing of it),
 * signed with the policy's key, with the deletion's context and hold in the manifest.
 */
export async function finalPointPlan(
  state: FinalStateOutputs,
  point: { pointId: string; now: Date; operation: FinalContext["operation"] },
): Promise<PointPlan> {
  const { signingKey } = state.keys;
  if (!signingKey) throw new CofferError("INVALID_INPUT", "the policy has no signing key", { field: "policy.signing" });
  const inputs: BackupSetInputs = {
    policy: { ...state.policy, encrypted: false },
    // Only so planPoint has a manifest key: sealedForRecipients replaces it with the point's own.
    keys: { manifestKey: randomBytes(32).toString("hex"), signingKey },
    sources: vmSources(state.vm),
    trigger: "final-state",
    concurrency: 2,
  };
  const plain = planPoint(inputs, { setId: state.setId, pointId: point.pointId });
  const recipients = recipientKeys(state.recipients, "recipients");
  const sealed = await sealedForRecipients(plain, { recipients, threshold: state.threshold });
  const final: FinalContext = {
    reason: state.reason,
    operation: point.operation,
    takenFor: state.takenFor,
    vm: vmRecord(state.vm),
    holdUntil: new Date(point.now.getTime() + state.holdDays * DAY_MS).toISOString(),
  };
  return { ...sealed, final, ...(state.scrub ? { scrubStaging: true } : {}) };
}
