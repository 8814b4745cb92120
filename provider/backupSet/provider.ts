import type * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";
import {
  changedKeys,
  checkInputs,
  currentState,
  parseCheckedInputs,
  userInputs,
  withoutUndefined,
} from "../common/check";
import { CofferError, isCofferError } from "../common/errors";
import type { Verification } from "../agent/backupSet";
import { MANIFEST_FILE, MANIFEST_KIND, MANIFEST_SCHEMA_VERSION, Manifest, ManifestItem } from "../agent/manifest";
import { ensureReference, referenceCurrentVersion, releaseReference } from "../escrow/references";
import type { EscrowLink } from "../escrow/schema";
import { thisProcess } from "../agent/setOwner";
import type { TargetRef } from "../common/targetIdentity";
import type { AgentClient } from "./agentClient";
import { BackupSetInputs, SET_SCHEMA_VERSION, SourceInput, backupSetInputs } from "./schema";

export interface BackupSetOutputs extends Omit<BackupSetInputs, "escrow"> {
  /** The escrow link, with the version of the record the manifest names (its current one when the set was made). */
  escrow?: EscrowLink & { version: number };
  schemaVersion: number;
  setId: string;
  setDir: string;
  manifestPath: string;
  /** Where the manifest was written and is verified from: "local" or an ssh destination. */
  manifestHost: string;
  /** Per source: what the agent made, and `via`, where it ran ("local" or an ssh destination). */
  items: (ManifestItem & { via: string })[];
  verification: Verification;
  /** The target's identity when the set was taken; absent in state written before identities (schema 1). */
  targetId?: string;
}

export interface SetHost {
  agent(host: string | undefined): AgentClient;
  newSetId(trigger: string): string;
  now(): Date;
  /** Reports progress where the user sees it (the Pulumi engine's log). */
  progress(message: string): void;
  /** Aborted when the Pulumi engine is gone: no state would record a set made after that. */
  engineGone?: AbortSignal;
}

const ENGINE_GONE = "the Pulumi engine exited, so no state would record the set";

type Outputs = BackupSetOutputs & { __provider?: string };
/** What verify-set returns: the verification, and the id of the target it checked. */
type Verified = Verification & { targetId: string };

const local = (where: string) => (where === "local" ? undefined : where);
type SetOnTarget = { setDir: string; policy: BackupSetInputs["policy"]; targetId?: string };
/** The target as agent requests name it: its path, and its identity when known. */
const targetRef = (set: Omit<SetOnTarget, "setDir">): TargetRef => ({
  path: set.policy.target.path,
  id: set.targetId,
  zone: set.policy.zone,
});
const sourceHost = (inputs: BackupSetInputs, source: SourceInput) => source.host ?? inputs.host ?? inputs.policy.host;
const manifestSecret = (inputs: BackupSetInputs) =>
  inputs.policy.encrypted ? inputs.keys.passphrase! : inputs.keys.manifestKey!;
const secretsOf = (inputs: BackupSetInputs) =>
  [inputs.keys.passphrase, inputs.keys.manifestKey].filter((s): s is string => !!s);

/** What the agent reads of a source: the fields of its kind (provider/sources/), without name and host. */
function agentSource(source: SourceInput) {
  const { name: _name, host: _host, ...fields } = source;
  return fields;
}

/** Runs `work` over `items`, at most `limit` at a time; the first failure stops new starts. */
export async function boundedAll<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      if (failed) {
        results[i] = { status: "rejected", reason: new CofferError("ABORTED", "not started: another source failed") };
        continue;
      }
      try {
        results[i] = { status: "fulfilled", value: await work(items[i]) };
      } catch (reason) {
        failed = true;
        results[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export function createBackupSetProvider(host: SetHost) {
  const parseChecked = (news: Record<string, unknown>) => parseCheckedInputs(backupSetInputs, news);

  /** Deletes the set on every host that has part of it; one unreachable host does not stop the others. */
  async function removeSet(state: SetOnTarget & { items: { file: string; via: string }[] }, wheres: Iterable<string>) {
    const knownFiles = state.items.map((i) => i.file);
    const target = targetRef(state);
    const failures: Error[] = [];
    for (const where of new Set(wheres)) {
      await host
        .agent(local(where))
        .call("delete-set", { setDir: state.setDir, target, knownFiles })
        .catch((error: Error) => failures.push(error));
    }
    if (failures.length > 0) {
      const targetOnly = failures.every((f) => isCofferError(f) && f.code === "TARGET_UNREACHABLE");
      const code = targetOnly ? "TARGET_UNREACHABLE" : "HOST_UNREACHABLE";
      const reasons = failures.map((f) => f.message).join("; ");
      throw new CofferError(code, `the set could not be deleted everywhere: ${reasons}`);
    }
  }

  return {
    async check(_olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
      return checkInputs(backupSetInputs, news);
    },

    async diff(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
      return planSetChange(upgradeOutputs(olds), userInputs(news));
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
      const inputs = parseChecked(news);
      const setId = host.newSetId(inputs.trigger);
      const zoneDir = path.join(inputs.policy.target.path, "sets", inputs.policy.zone);
      const setDir = path.join(zoneDir, setId);
      const manifestWhere = inputs.host ?? inputs.policy.host;
      const secrets = secretsOf(inputs);
      // Before any work: an unmounted NAS's empty mount point must not receive a set.
      const { targetId } = await host.agent(manifestWhere).call("check-target", { target: targetRef(inputs) });
      const target = targetRef({ ...inputs, targetId });
      const abort = new AbortController();
      const signal = host.engineGone ? AbortSignal.any([abort.signal, host.engineGone]) : abort.signal;
      // Every 10% per source: enough to see it move, without flooding CI logs.
      const shown = new Map<string, number>();
      const onProgress = (item: string, percent: number) => {
        const step = Math.floor(percent / 10) * 10;
        if (step <= (shown.get(item) ?? -1)) return;
        shown.set(item, step);
        host.progress(`${item}: ${step}%`);
      };
      // The escrow reference first, before any work: a record version that is not there fails
      // the set now, and a manifest that names the escrow always has its reference counted.
      const escrow = inputs.escrow && {
        ...inputs.escrow,
        version: await referenceCurrentVersion(inputs.escrow.store, inputs.escrow.recordId, {
          setId,
          manifestPath: path.join(setDir, MANIFEST_FILE),
          manifestHost: manifestWhere ?? "local",
          createdAt: host.now().toISOString(),
        }),
      };
      const owner = thisProcess();
      host.progress(`backing up ${inputs.sources.length} source(s) into ${setDir}`);
      const results = await boundedAll(inputs.sources, inputs.concurrency, async (source) => {
        const via = sourceHost(inputs, source);
        try {
          const item = await host.agent(via).call(
            "backup-item",
            {
              target,
              zoneDir,
              setId,
              name: source.name,
              source: agentSource(source),
              compression: inputs.policy.compression,
              encrypted: inputs.policy.encrypted,
              bandwidthLimitMiBps: inputs.policy.bandwidthLimitMiBps,
              integrityCheck: inputs.policy.integrityCheck,
              passphrase: inputs.policy.encrypted ? inputs.keys.passphrase : undefined,
              owner,
            },
            { secrets, signal, onProgress },
          );
          host.progress(`${source.name}: done (${item.sizeBytes} bytes, verified: ${item.verifiedAtBackup})`);
          return { ...item, via: via ?? "local" };
        } catch (error) {
          abort.abort();
          // Name the source, whatever failed: qemu, the agent process, ssh.
          const e = isCofferError(error) ? error : new CofferError("IO_FAILED", (error as Error).message);
          throw e.message.startsWith(`source ${source.name}`)
            ? e
            : new CofferError(e.code, `source ${source.name}: ${e.message}`, { secrets });
        }
      });
      const failures = results.flatMap((r) =>
        r.status === "rejected" && !(isCofferError(r.reason) && r.reason.code === "ABORTED") ? [r.reason as Error] : [],
      );
      const items = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      const wheres = [...inputs.sources.map((s) => sourceHost(inputs, s) ?? "local"), manifestWhere ?? "local"];
      // A set not taken leaves nothing: no file on any host, no escrow reference.
      const discard = async () => {
        await removeSet({ setDir, policy: inputs.policy, items, targetId }, wheres).catch(() => undefined);
        if (escrow) await releaseReference(escrow.store, escrow.recordId, setId).catch(() => undefined);
      };
      const engineGone = host.engineGone?.aborted ?? false;
      if (failures.length > 0 || items.length !== inputs.sources.length || engineGone) {
        await discard();
        const stopped = engineGone ? ENGINE_GONE : "stopped before every source was backed up";
        const reasons = failures.map((f) => f.message).join("; ") || stopped;
        const onlyCause = failures.length === 1 && isCofferError(failures[0]) ? failures[0].code : undefined;
        const code = onlyCause ?? (engineGone ? "ABORTED" : "IO_FAILED");
        throw new CofferError(code, `backup set not taken, nothing of it was kept: ${reasons}`, { secrets });
      }
      try {
        const agent = host.agent(manifestWhere);
        const { qemu } = await agent.call("version", {}, { signal });
        const manifest: Manifest = {
          kind: MANIFEST_KIND,
          schemaVersion: MANIFEST_SCHEMA_VERSION,
          setId,
          name: inputs.trigger,
          trigger: inputs.trigger,
          zone: inputs.policy.zone,
          policy: {
            compression: inputs.policy.compression,
            encrypted: inputs.policy.encrypted,
            bandwidthLimitMiBps: inputs.policy.bandwidthLimitMiBps,
            integrityCheck: inputs.policy.integrityCheck,
          },
          keySource: inputs.policy.encrypted ? "passphrase" : "manifest-key",
          ...(escrow ? { escrow: { recordId: escrow.recordId, store: escrow.store, version: escrow.version } } : {}),
          qemuVersion: qemu,
          createdAt: host.now().toISOString(),
          items: items.map(({ via: _via, ...item }) => item),
        };
        // The last moment to keep the set out of sight: a manifest makes it a set.
        if (host.engineGone?.aborted) {
          throw new CofferError("ABORTED", `backup set not taken, nothing of it was kept: ${ENGINE_GONE}`);
        }
        const manifestRequest = { target, setDir, manifest, manifestSecret: manifestSecret(inputs) };
        const manifestPath = await agent.call("write-manifest", manifestRequest, { secrets, signal });
        const outs: BackupSetOutputs = {
          ...inputs,
          escrow,
          schemaVersion: SET_SCHEMA_VERSION,
          setId,
          setDir,
          manifestPath,
          manifestHost: manifestWhere ?? "local",
          items,
          verification: {
            status: "ok",
            checkedAt: host.now().toISOString(),
            level: inputs.policy.integrityCheck,
            failures: [],
          },
          targetId,
        };
        return { id: setId, outs: withoutUndefined(outs) };
      } catch (error) {
        await discard();
        throw error;
      }
    },

    async read(id: string, props: Outputs): Promise<pulumi.dynamic.ReadResult> {
      const state = upgradeOutputs(props);
      // An unmounted target is an error here, not a "missing" set: that would plan a new set onto the local disk.
      const verification = await host.agent(local(state.manifestHost)).call(
        "verify-set",
        {
          target: targetRef(state),
          setDir: state.setDir,
          level: state.policy.integrityCheck,
          manifestSecret: manifestSecret(state),
          passphrase: state.keys.passphrase,
        },
        { secrets: secretsOf(state) },
      );
      const { manifest, targetId, ...verified } = verification as Verified & { manifest?: Manifest };
      const result = verified.status === "ok" && manifest ? matchState(verified, state, manifest) : verified;
      if (state.escrow && result.status !== "missing") {
        const { store, recordId, version } = state.escrow;
        await ensureReference(store, recordId, {
          setId: state.setId,
          version,
          manifestPath: state.manifestPath,
          manifestHost: state.manifestHost,
          createdAt: host.now().toISOString(),
        }).then(
          (healed) =>
            healed &&
            host.progress(
              `escrow ${recordId}: wrote back this set's reference to v${version}, which was missing from ${store}`,
            ),
          (error: Error) =>
            host.progress(`escrow ${recordId}: could not check this set's reference (${error.message})`),
        );
      }
      // State from before identities adopts the target's (the agent checked it exists).
      return { id, props: withoutUndefined({ ...state, targetId: state.targetId ?? targetId, verification: result }) };
    },

    async update(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
      // Only concurrency updates in place (planSetChange replaces on anything else).
      const inputs = parseChecked(news);
      return { outs: withoutUndefined({ ...upgradeOutputs(olds), concurrency: inputs.concurrency }) };
    },

    async delete(_id: string, props: Outputs): Promise<void> {
      const state = upgradeOutputs(props);
      await removeSet(state, [...state.items.map((i) => i.via), state.manifestHost]);
      if (state.escrow) {
        // A reference left behind is harmless (its manifest is gone), so this never fails the delete.
        await releaseReference(state.escrow.store, state.escrow.recordId, state.setId).then(
          (released) =>
            released.length > 0 &&
            host.progress(
              `escrow ${state.escrow!.recordId}: removed version(s) ${released.join(", ")}, which no backup set needs any more`,
            ),
          (error: Error) =>
            host.progress(
              `escrow ${state.escrow!.recordId}: could not remove this set's reference (${error.message}); it is ignored once the set is gone`,
            ),
        );
      }
    },
  };
}

/**
 * A verified set whose manifest is not the one Pulumi recorded (another set's id, other files or
 * hashes) failed: the target was changed by someone who holds the key, or the state is not this set's.
 */
export function matchState(verification: Verification, state: BackupSetOutputs, manifest: Manifest): Verification {
  const failures: string[] = [];
  if (manifest.setId !== state.setId) {
    failures.push(`manifest: it is set ${manifest.setId}'s, but Pulumi recorded set ${state.setId}`);
  }
  for (const recorded of state.items) {
    const found = manifest.items.find((i) => i.name === recorded.name);
    const compared = ["file", "sizeBytes", "fileSha256", "streamSha256"] as const;
    const differs = compared.filter((key) => found?.[key] !== recorded[key]);
    if (!found) failures.push(`item ${recorded.name}: the manifest does not name it, but Pulumi recorded it`);
    else if (differs.length > 0) {
      failures.push(`item ${recorded.name}: the manifest's ${differs.join(", ")} differ from what Pulumi recorded`);
    }
  }
  for (const extra of manifest.items.filter((i) => !state.items.some((r) => r.name === i.name))) {
    failures.push(`item ${extra.name}: the manifest names it, but Pulumi did not record it`);
  }
  return failures.length === 0 ? verification : { ...verification, status: "failed", failures };
}

export function upgradeOutputs(olds: Outputs): BackupSetOutputs {
  return currentState("EncryptedBackupSet", SET_SCHEMA_VERSION, olds);
}

const REPLACING = ["policy", "keys", "sources", "trigger", "host"] as const;

/** The key a set is made with: the passphrase, or for an unencrypted set the manifest key. Other keys in `keys` don't matter. */
function usedKey(inputs: object): unknown {
  const { policy, keys } = inputs as {
    policy?: { encrypted?: unknown };
    keys?: { passphrase?: unknown; manifestKey?: unknown };
  };
  return policy?.encrypted === false ? keys?.manifestKey : keys?.passphrase;
}

/**
 * A set is a point in time: any change but concurrency takes a new one, and so does a set that
 * failed verification. The new set is made before the old one is deleted.
 */
export function planSetChange(olds: BackupSetOutputs, news: Record<string, unknown>): pulumi.dynamic.DiffResult {
  const changed = changedKeys(olds, news, [...REPLACING, "concurrency"], { keys: (o, n) => usedKey(o) === usedKey(n) });
  const replaces: string[] = REPLACING.filter((key) => changed.includes(key));
  if (olds.verification.status !== "ok") replaces.push("verification");
  const changes = replaces.length > 0 || changed.includes("concurrency");
  return { changes, replaces, deleteBeforeReplace: false };
}
