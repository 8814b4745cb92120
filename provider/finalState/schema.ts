import { z } from "zod";
import { sshHost } from "../backupPolicy/schema";
import { appliedPolicy } from "../backupSet/schema";
import { signingKeyProblem } from "../common/signingKey";
import { checkRecipients, recipientList, recipientThreshold } from "../escrow/schema";
import { absolutePath } from "../sources/kind";

const DEVICE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const VM_MESSAGE =
  'vm must be { qmpSocket, devices: ["vda"] } (a running VM) or { disks: [{ disk }] } (a stopped VM\'s files), ' +
  "each with an optional host, or { novaServer } (a Nova server's id)";

/** A running VM: its QMP socket and the disks to take (qdev ids such as "vda"), on `host` or this machine. */
const runningVm = z
  .object({
    qmpSocket: absolutePath("vm.qmpSocket"),
    devices: z
      .array(
        z.string().regex(DEVICE, {
          message: 'each of vm.devices must be a disk\'s qdev id such as "vda" (letters, digits, . _ -)',
        }),
        { error: 'vm.devices must list the VM\'s disks, e.g. ["vda"]' },
      )
      .min(1, { message: 'vm.devices must name at least one disk, e.g. ["vda"]' }),
    host: sshHost("vm.host").optional(),
  })
  .strict();

/** A stopped VM's disk files (what an EncryptedBackupSet's disk source takes), on `host` or this machine. */
const stoppedVm = z
  .object({
    disks: z
      .array(
        z
          .object({
            disk: absolutePath("vm.disks[].disk"),
            format: z.enum(["raw", "qcow2"], { error: 'vm.disks[].format must be "raw" or "qcow2"' }).optional(),
            backingFiles: z.array(absolutePath("each of vm.disks[].backingFiles")).optional(),
          })
          .strict(),
        { error: "vm.disks must be a list of { disk, format? }" },
      )
      .min(1, { message: "vm.disks must name at least one disk file" }),
    host: sshHost("vm.host").optional(),
  })
  .strict();

/** A Nova server: its root disk and attached volumes, copied into the target through the cloud's API. */
const novaServer = z
  .object({ novaServer: z.string().min(1, { message: "vm.novaServer must be a Nova server's id" }) })
  .strict();

export const vmSchema = z.union([runningVm, stoppedVm, novaServer], { error: VM_MESSAGE });
export type FinalVm = z.output<typeof vmSchema>;

/** Where the stack is: the deletion context a final point records (the SDK passes it). */
const takenFor = z.object({ stack: z.string().min(1), project: z.string().min(1), urn: z.string().min(1) }).strict();

const HOLD_MESSAGE = "holdDays must be a whole number of days from 1 to 36500: how long the final point is kept";

export const finalStateInputs = z
  .object({
    vm: vmSchema,
    policy: appliedPolicy,
    /** Secret: the policy's signing key; the final point's manifest is signed with it. */
    keys: z.object({ signingKey: z.string().optional() }).strict(),
    recipients: recipientList,
    threshold: recipientThreshold,
    holdDays: z
      .number({ error: HOLD_MESSAGE })
      .int({ message: HOLD_MESSAGE })
      .min(1, HOLD_MESSAGE)
      .max(36500, HOLD_MESSAGE),
    reason: z
      .string({ error: 'reason is required: why final states are kept, e.g. "security" (the manifest records it)' })
      .trim()
      .min(1, { message: 'reason must not be empty: why final states are kept, e.g. "security"' }),
    allowDeleteWithoutBackup: z
      .boolean({ error: "allowDeleteWithoutBackup must be true or false (default false: a failed backup blocks)" })
      .optional(),
    scrub: z.boolean({ error: "scrub must be true or false (default false)" }).optional(),
    takenFor,
  })
  .strict()
  .superRefine((inputs, ctx) => {
    checkRecipients(inputs, ctx, "final point");
    if ("novaServer" in inputs.vm && inputs.policy.host !== undefined) {
      const message =
        "a Nova server's disks are staged on the machine that runs Pulumi, but the policy's target is reached " +
        `through ${inputs.policy.host}: use a policy whose target is mounted where Pulumi runs (no host)`;
      ctx.addIssue({ code: "custom", path: ["vm", "novaServer"], message });
    }
    if (inputs.policy.target.kind === "swift") {
      const message =
        "a FinalStateBackup on a Swift target is not supported yet (its hold relies on a folder the agent " +
        "writes in place): use a policy with a directory target";
      ctx.addIssue({ code: "custom", path: ["policy", "target"], message });
    }
    const { signingKey } = inputs.keys;
    if (signingKey === undefined) {
      const message =
        "the policy has no signing key: a final point's manifest must be signed so anyone can tell it is unchanged; " +
        "give the BackupPolicy signing: { privateKey }";
      ctx.addIssue({ code: "custom", path: ["policy", "signing"], message });
    } else {
      const problem = signingKeyProblem(signingKey, "the policy's signing.privateKey");
      if (problem) ctx.addIssue({ code: "custom", path: ["keys", "signingKey"], message: problem });
    }
  });

export type FinalStateInputs = z.output<typeof finalStateInputs>;

/** The VM's identity: a change of it is another VM, whose FinalStateBackup is a new one (replaced). */
export function vmIdentity(vm: FinalVm): string {
  if ("novaServer" in vm) return `nova ${vm.novaServer}`;
  const host = vm.host ?? "local";
  return "qmpSocket" in vm ? `qmp ${host}:${vm.qmpSocket}` : `disks ${host}:${vm.disks.map((d) => d.disk).join(",")}`;
}

/** How messages name the VM. */
export function describeVm(vm: FinalVm): string {
  if ("novaServer" in vm) return `Nova server ${vm.novaServer}`;
  const on = vm.host ? ` on ${vm.host}` : "";
  return "qmpSocket" in vm
    ? `the VM of ${vm.qmpSocket}${on} (${vm.devices.join(", ")})`
    : `the VM with ${vm.disks.map((d) => d.disk).join(", ")}${on}`;
}
