/**
 * Rule: every VM in the stack has a FinalStateBackup, so deleting it keeps its last state: each
 * OpenStack compute instance, and each running VM a set backs up (a `qmpSocket` source; with
 * `includeDiskSources`, stopped VMs' disk files too).
 */
import type { PolicyResource, ReportViolation, StackValidationPolicy } from "@pulumi/policy";
import { known, noteUnknown, plainCopy } from "./resources";
import { COFFER_TYPES, FOREIGN_TYPES, RULE_NAMES } from "./types";

export interface FinalStateCoverageConfig {
  /** Also require one for each stopped VM's disk file a set backs up (`disk` sources). Default false. */
  includeDiskSources: boolean;
  /** Names of instances, or of set sources, that need none (e.g. stateless workers). */
  exempt: string[];
}

interface VmRef {
  host: string;
  /** The QMP socket, or a disk file. */
  path: string;
}

const sameVm = (a: VmRef, b: VmRef) => a.host === b.host && a.path === b.path;
const hostOf = (...hosts: unknown[]) => (hosts.find((h) => typeof h === "string") as string | undefined) ?? "local";
const on = (host: string) => (host === "local" ? "" : ` on ${host}`);

/** What each FinalStateBackup covers: its VM's socket or disk files, and the resources its `vm` came from. */
function coverage(backups: PolicyResource[]) {
  const refs: VmRef[] = [];
  const from = new Set<string>();
  for (const backup of backups) {
    for (const dependency of backup.propertyDependencies.vm ?? []) from.add(dependency.urn);
    const vm = known(() => plainCopy(backup.props.vm)) as Record<string, any> | undefined;
    if (!vm) continue;
    const host = hostOf(
      vm.host,
      known(() => backup.props.policy?.host),
    );
    if (typeof vm.qmpSocket === "string") refs.push({ host, path: vm.qmpSocket });
    for (const disk of Array.isArray(vm.disks) ? vm.disks : []) refs.push({ host, path: disk.disk });
  }
  return { refs, from };
}

function checkInstances(resources: PolicyResource[], from: Set<string>, exempt: string[], report: ReportViolation) {
  for (const instance of resources.filter((r) => r.type === FOREIGN_TYPES.openstackInstance)) {
    if (exempt.includes(instance.name) || from.has(instance.urn)) continue;
    report(
      `Compute instance "${instance.name}" has no FinalStateBackup: deleting or replacing it would keep nothing ` +
        `of its last state. Fix: add new coffer.FinalStateBackup("${instance.name}-final", { vm: { novaServer: ` +
        `${instance.name}.id }, policy, recipients, holdDays, reason }), or list "${instance.name}" in this ` +
        "rule's exempt.",
      instance.urn,
    );
  }
}

function checkSetSources(
  resources: PolicyResource[],
  covered: ReturnType<typeof coverage>,
  config: FinalStateCoverageConfig,
  report: ReportViolation,
) {
  for (const set of resources.filter((r) => r.type === COFFER_TYPES.backupSet)) {
    // A VM both a set's sources and a FinalStateBackup's vm were built from is covered, known or not.
    const sharedOrigin = (set.propertyDependencies.sources ?? []).some((r) => covered.from.has(r.urn));
    const sources = known(() => plainCopy(set.props.sources)) as Record<string, any>[] | undefined;
    if (sources === undefined) {
      if (!sharedOrigin) noteUnknown(report, set.urn, `Which VMs EncryptedBackupSet "${set.name}" backs up`);
      continue;
    }
    for (const source of sources) {
      const vmPath = source.qmpSocket ?? (config.includeDiskSources ? source.disk : undefined);
      if (typeof vmPath !== "string" || config.exempt.includes(source.name) || sharedOrigin) continue;
      const host = hostOf(
        source.host,
        known(() => set.props.host),
        known(() => set.props.policy?.host),
      );
      if (covered.refs.some((ref) => sameVm(ref, { host, path: vmPath }))) continue;
      const vm = source.qmpSocket
        ? `{ qmpSocket: "${vmPath}", devices: ["${source.device}"]${host === "local" ? "" : `, host: "${host}"`} }`
        : `{ disks: [{ disk: "${vmPath}" }]${host === "local" ? "" : `, host: "${host}"`} }`;
      const what = source.qmpSocket ? `the running VM of ${vmPath}` : `the VM disk ${vmPath}`;
      report(
        `EncryptedBackupSet "${set.name}" backs up ${what}${on(host)} (source "${source.name}"), which has no ` +
          "FinalStateBackup: deleting that VM would keep nothing of its last state. Fix: add " +
          `new coffer.FinalStateBackup("${source.name}-final", { vm: ${vm}, policy, recipients, holdDays, reason }), ` +
          `or list "${source.name}" in this rule's exempt.`,
        set.urn,
      );
    }
  }
}

export const finalStateCoverage: StackValidationPolicy = {
  name: RULE_NAMES.finalStateCoverage,
  description:
    "Every OpenStack compute instance and every running VM a set backs up has a FinalStateBackup, so that " +
    "deleting the VM keeps its last state.",
  enforcementLevel: "mandatory",
  configSchema: {
    properties: {
      includeDiskSources: { type: "boolean", default: false },
      exempt: { type: "array", items: { type: "string" }, default: [] },
    },
  },
  validateStack: (args, report) => {
    const config = args.getConfig<FinalStateCoverageConfig>();
    const covered = coverage(args.resources.filter((r) => r.type === COFFER_TYPES.finalStateBackup));
    checkInstances(args.resources, covered.from, config.exempt, report);
    checkSetSources(args.resources, covered, config, report);
  },
};
