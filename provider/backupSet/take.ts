import * as os from "node:os";
import * as path from "node:path";
import {
  CHAIN_MANIFEST_SCHEMA_VERSION,
  CloudItem,
  MANIFEST_SCHEMA_VERSION,
  Manifest,
  ManifestItem,
  SEALED_MANIFEST_SCHEMA_VERSION,
  WRAPPED_MANIFEST_SCHEMA_VERSION,
  sealedKeyContext,
  signManifest,
} from "../agent/manifest";
import { SigningPublicKey, publicKeyOf } from "../common/signingKey";
import { directoryStore } from "../targets/directory";
import { MANIFEST_FILE, targetLayout } from "../targets/layout";
import { wrapPointKey } from "../agent/pointKey";
import { thisProcess } from "../agent/setOwner";
import { CofferError, isCofferError } from "../common/errors";
import type { TargetRef } from "../common/targetIdentity";
import { referenceCurrentVersion, releaseReference } from "../escrow/references";
import type { AgentClient } from "./agentClient";
import type { Cloud } from "../openstack";
import type { CloudBackupRef, CloudContext, CloudKind, CloudProject, CloudTaken } from "../sources/kind";
import { kindsChosenBy } from "../sources/registry";
import { continueChains } from "./chain";
import { PlannedItem, PointPlan, planHosts, planTarget, pointManifest } from "./plan";
import { referenceName } from "./state";

/** A cloud, signed in, and the project its backups go to. */
export interface CloudAccess {
  cloud: Cloud;
  project: CloudProject;
  waits: CloudContext["waits"];
}

/** The access `cloud` gives once signed in: the project its credentials name (the sign-in happens here). */
export async function cloudAccessOf(cloud: Cloud, waits: CloudAccess["waits"]): Promise<CloudAccess> {
  const { config } = cloud.session;
  const projectId = await cloud.session.projectId();
  return {
    cloud,
    project: { authUrl: config.authUrl, ...(config.region ? { region: config.region } : {}), projectId },
    waits,
  };
}

/** What taking a point needs from its surroundings (the provider process, or a test). */
export interface TakeDeps {
  agent(host: string | undefined): AgentClient;
  /** The cloud that cloud kinds (Cinder volumes, Glance images, Nova servers) work with; opened on first use. */
  cloud?(): Promise<CloudAccess>;
  now(): Date;
  /** Reports progress where the user sees it (the Pulumi engine's log). */
  progress(message: string): void;
  /** Aborted when the Pulumi engine is gone: no state would record a point made after that. */
  engineGone?: AbortSignal;
}

/** A point that was backed up, verified and signed. */
export interface TakenPoint {
  targetId: string;
  /** The escrow record version its manifest names. */
  escrowVersion?: number;
  /** Per source: what the agent made, and `via`, where it ran ("local" or an ssh destination). */
  items: (ManifestItem & { via: string })[];
  /** Per cloud source: what the cloud holds of it, and its backups there. */
  cloudItems: CloudItem[];
  refs: CloudBackupRef[];
  /** The project the cloud backups are in, when there are any. */
  project?: CloudProject;
  manifest: Manifest;
  manifestPath: string;
  /** Where the manifest was written: "local" or an ssh destination. */
  manifestHost: string;
  /** The public key of the manifest's Ed25519 signature; absent: not signed. */
  signedBy?: SigningPublicKey;
}

const ENGINE_GONE = "the Pulumi engine exited, so no state would record the point";

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

const local = (where: string) => (where === "local" ? undefined : where);

/** Which point to remove, and from where: enough to work from a resource's outputs alone. */
export interface PointOnTarget {
  pointDir: string;
  target: TargetRef;
  /** The backup files the state names, for when the manifest is gone. */
  knownFiles: string[];
  /** Every machine that may hold part of it ("local" or ssh destinations). */
  hosts: Iterable<string>;
}

/** Deletes a point on every host that has part of it; one unreachable host does not stop the others. */
export async function removePoint(deps: Pick<TakeDeps, "agent">, point: PointOnTarget): Promise<void> {
  const failures: Error[] = [];
  for (const where of new Set(point.hosts)) {
    await deps
      .agent(local(where))
      .call("delete-set", { setDir: point.pointDir, target: point.target, knownFiles: point.knownFiles })
      .catch((error: Error) => failures.push(error));
  }
  if (failures.length > 0) {
    const targetOnly = failures.every((f) => isCofferError(f) && f.code === "TARGET_UNREACHABLE");
    const code = targetOnly ? "TARGET_UNREACHABLE" : "HOST_UNREACHABLE";
    const reasons = failures.map((f) => f.message).join("; ");
    throw new CofferError(code, `the set could not be deleted everywhere: ${reasons}`);
  }
}

/**
 * Refuses, before any work, an agent too old to write the point's manifest (a sealed point's needs
 * schema 5, an encrypted one's 6): it speaks the same protocol, and would only refuse the manifest
 * once every backup is made.
 */
function checkWritesManifests(manifestSchema: number, where: string, plan: PointPlan): void {
  const chained = plan.items.some((i) => i.incremental);
  if (plan.keySource !== "recipients" && !plan.wrapWith && !chained) return;
  const needed = chained
    ? CHAIN_MANIFEST_SCHEMA_VERSION
    : plan.wrapWith
      ? WRAPPED_MANIFEST_SCHEMA_VERSION
      : SEALED_MANIFEST_SCHEMA_VERSION;
  if (manifestSchema >= needed) return;
  const what = chained
    ? "a point with incremental sources"
    : plan.wrapWith
      ? "an encrypted point (its own key, wrapped by the passphrase)"
      : "a point sealed for recipients";
  const needs = `${what} needs schema ${needed}`;
  const fix = "install the same coffer version where Pulumi runs and on every host";
  const message = `coffer-agent on ${where} writes manifests up to schema ${manifestSchema} (an older Coffer); ${needs}: ${fix}`;
  throw new CofferError("AGENT_PROTOCOL_MISMATCH", message);
}

/**
 * Takes one point as `plan` says: checks the target, counts the escrow reference, backs up every
 * source (at most `plan.concurrency` at a time), then signs the manifest, which alone makes the
 * point a backup. Any failure removes everything of the point (files on every host, the escrow
 * reference) and throws; earlier points are never touched.
 */
export async function takePoint(given: PointPlan, deps: TakeDeps): Promise<TakenPoint> {
  const manifestHost = given.manifestWhere ?? "local";
  // Before any work: an unmounted NAS's empty mount point must not receive a set.
  const { targetId } = await deps.agent(given.manifestWhere).call("check-target", { target: planTarget(given) });
  const target = planTarget(given, targetId);
  // Asked once (each agent call starts a process): what the manifest records, and what it can write.
  const version = await deps.agent(given.manifestWhere).call("version", {});
  const where = given.manifestWhere ? `host ${given.manifestWhere}` : "this machine";
  checkWritesManifests(version.manifestSchema ?? MANIFEST_SCHEMA_VERSION, where, given);
  if (given.swift && !version.swift) {
    const fix = "install the same coffer version where Pulumi runs and on every host";
    throw new CofferError("AGENT_PROTOCOL_MISMATCH", `coffer-agent on ${where} can't reach a Swift target: ${fix}`);
  }
  // Incremental sources: what the previous point holds of them decides links or full backups, and the key.
  const plan = await continueChains(given, deps.agent(given.manifestWhere), target);
  const { secrets } = plan;
  for (const { name, chain } of plan.items) {
    if (chain?.fullBecause) deps.progress(`${name}: a full backup (incremental): ${chain.fullBecause}`);
  }
  // The one strong KDF of the point runs beside the copies (in libuv's pool), not before them.
  const wrapping = plan.wrapWith
    ? wrapPointKey(plan.keys.passphrase!, plan.wrapWith, sealedKeyContext(plan))
    : undefined;
  wrapping?.catch(() => undefined);
  const abort = new AbortController();
  const signal = deps.engineGone ? AbortSignal.any([abort.signal, deps.engineGone]) : abort.signal;
  // Every 10% per source: enough to see it move, without flooding CI logs.
  const shown = new Map<string, number>();
  const onProgress = (item: string, percent: number) => {
    const step = Math.floor(percent / 10) * 10;
    if (step <= (shown.get(item) ?? -1)) return;
    shown.set(item, step);
    deps.progress(`${item}: ${step}%`);
  };
  // The escrow reference first, before any work: a record version that is not there fails
  // the set now, and a manifest that names the escrow always has its reference counted.
  const { escrow } = plan;
  const escrowVersion =
    escrow &&
    (await referenceCurrentVersion(escrow.store, escrow.recordId, {
      setId: referenceName(plan.setId, plan.pointId),
      manifestPath: path.join(plan.pointDir, MANIFEST_FILE),
      manifestHost,
      createdAt: deps.now().toISOString(),
    }));
  const owner = thisProcess();
  // An encrypted point's key is its own random one (a sealed or wrapped point's): no LUKS key stretching.
  const pointKey = { passphrase: plan.keys.passphrase, ...(plan.keys.passphrase ? { randomKey: true } : {}) };
  const into = plan.swift ? `swift:${plan.swift.container} (through ${plan.pointDir})` : plan.pointDir;
  deps.progress(`backing up ${plan.items.length} source(s) into ${into}`);
  const takenInCloud: CloudTaken<unknown>[] = [];
  let access: CloudAccess | undefined;
  // Item names are file names in the point: a copy named by its kind (a server's "web.vdb") may not take another's.
  const copyNames = new Set<string>();
  /** Backs up `planned` through the cloud's API: a cloud item, or (with a copy in the target) a stored one. */
  const inCloud = async (planned: PlannedItem, kind: CloudKind<unknown, unknown>) => {
    if (!deps.cloud) throw new CofferError("INVALID_INPUT", "this provider has no cloud to back up a cloud source");
    access ??= await deps.cloud();
    const startedAt = deps.now().toISOString();
    // A copy is staged on this machine, next to the points, for the agent here to store.
    const storeCopy = async (file: string, copy: { name?: string; format?: "raw" | "qcow2" } = {}) => {
      if (plan.manifestWhere !== undefined) {
        const why = "its copy is staged on the machine that runs Pulumi, and the set's target is reached over ssh";
        throw new CofferError("INVALID_INPUT", `source ${planned.name}: ${why}: remove copyToTarget or host`);
      }
      const name = copy.name ?? planned.name;
      if (copyNames.has(name) || (name !== planned.name && plan.items.some((i) => i.name === name))) {
        const fix = "rename that source, or this one";
        throw new CofferError(
          "INVALID_INPUT",
          `source ${planned.name}: its copy ${name} is another item's name: ${fix}`,
        );
      }
      copyNames.add(name);
      const request = {
        target,
        zoneDir: plan.zoneDir,
        setId: plan.setId,
        pointId: plan.pointId,
        name,
        source: { disk: file, format: copy.format ?? ("raw" as const) },
        ...plan.policy,
        ...pointKey,
        owner,
      };
      const onCopyProgress = (_item: string, percent: number) => onProgress(name, percent);
      return deps.agent(undefined).call("backup-item", request, { secrets, signal, onProgress: onCopyProgress });
    };
    const stagingDir = directoryStore(plan.targetPath).localPath(targetLayout.staging());
    const taken = await kind.take(planned.source, {
      ...access,
      subject: `source ${planned.name}`,
      signal,
      progress: deps.progress,
      label: { setId: plan.setId, pointId: plan.pointId, source: planned.name },
      earlier: plan.earlier.filter((ref) => ref.source === planned.name),
      keyEscrow: plan.keyEscrow,
      stagingDir,
      ...(plan.scrubStaging ? { scrubStaging: true } : {}),
      storeCopy,
    });
    takenInCloud.push(taken);
    const source = taken.source as CloudItem["source"];
    const copies = taken.copies ?? (taken.stored ? [{ source: taken.source, stored: taken.stored }] : []);
    if (copies.length > 0) {
      const items = copies.map((c) => ({ ...c.stored, source: c.source as CloudItem["source"], via: "local" }));
      return { in: "target" as const, items };
    }
    const finishedAt = deps.now().toISOString();
    return { in: "cloud" as const, item: { name: planned.name, host: os.hostname(), source, startedAt, finishedAt } };
  };
  const results = await boundedAll(plan.items, plan.concurrency, async (planned) => {
    try {
      const cloudKind = kindsChosenBy(planned.source)[0]?.cloud as CloudKind<unknown, unknown> | undefined;
      if (cloudKind) {
        const taken = await inCloud(planned, cloudKind);
        deps.progress(
          `${planned.name}: done (in the cloud${taken.in === "target" ? ", and a copy in the target" : ""})`,
        );
        return taken;
      }
      const item = await deps.agent(planned.via).call(
        "backup-item",
        {
          target,
          zoneDir: plan.zoneDir,
          setId: plan.setId,
          pointId: plan.pointId,
          name: planned.name,
          source: planned.source,
          ...plan.policy,
          ...pointKey,
          owner,
          ...(planned.chain ? { chain: planned.chain } : {}),
        },
        { secrets, signal, onProgress },
      );
      deps.progress(`${planned.name}: done (${item.sizeBytes} bytes, verified: ${item.verifiedAtBackup})`);
      return { in: "target" as const, items: [{ ...item, via: planned.via ?? "local" }] };
    } catch (error) {
      abort.abort();
      // Name the source, whatever failed: qemu, the agent process, ssh.
      const e = isCofferError(error) ? error : new CofferError("IO_FAILED", (error as Error).message);
      throw e.message.startsWith(`source ${planned.name}`)
        ? e
        : new CofferError(e.code, `source ${planned.name}: ${e.message}`, { secrets });
    }
  });
  const failures = results.flatMap((r) =>
    r.status === "rejected" && !(isCofferError(r.reason) && r.reason.code === "ABORTED") ? [r.reason as Error] : [],
  );
  const done = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const items = done.flatMap((r) => (r.in === "target" ? r.items : []));
  const cloudItems = done.flatMap((r) => (r.in === "cloud" ? [r.item] : []));
  // A point not taken leaves nothing: no file on any host, no cloud backup, no escrow reference.
  const discard = async () => {
    for (const taken of takenInCloud) await taken.discard().catch(() => undefined);
    const knownFiles = items.map((i) => i.file);
    await removePoint(deps, { pointDir: plan.pointDir, target, knownFiles, hosts: planHosts(plan) }).catch(
      () => undefined,
    );
    if (escrow) {
      await releaseReference(escrow.store, escrow.recordId, referenceName(plan.setId, plan.pointId)).catch(
        () => undefined,
      );
    }
  };
  const engineGone = deps.engineGone?.aborted ?? false;
  if (failures.length > 0 || done.length !== plan.items.length || engineGone) {
    await discard();
    const stopped = engineGone ? ENGINE_GONE : "stopped before every source was backed up";
    const reasons = failures.map((f) => f.message).join("; ") || stopped;
    const onlyCause = failures.length === 1 && isCofferError(failures[0]) ? failures[0].code : undefined;
    const code = onlyCause ?? (engineGone ? "ABORTED" : "IO_FAILED");
    throw new CofferError(code, `point not taken, nothing of it was kept: ${reasons}`, { secrets });
  }
  try {
    const agent = deps.agent(plan.manifestWhere);
    const { qemu } = version;
    const composed = pointManifest(plan, {
      items: items.map(({ via: _via, ...item }) => item),
      cloudItems,
      qemuVersion: qemu,
      createdAt: deps.now().toISOString(),
      escrowVersion,
      wrappedKey: (await wrapping) ?? plan.wrappedKey,
    });
    // Signed here, in Pulumi's process: the private key never goes to an agent or a host.
    const { signingKey } = plan.keys;
    const { manifest, signature } = signingKey ? signManifest(composed, signingKey) : { manifest: composed };
    const signedBy = signingKey ? publicKeyOf(signingKey) : undefined;
    // The last moment to keep the set out of sight: a manifest makes it a set.
    if (deps.engineGone?.aborted) {
      throw new CofferError("ABORTED", `point not taken, nothing of it was kept: ${ENGINE_GONE}`);
    }
    const { manifestSecret } = plan.keys;
    const manifestRequest = { target, setDir: plan.pointDir, manifest, manifestSecret, signature };
    const manifestPath = await agent.call("write-manifest", manifestRequest, { secrets, signal });
    const refs = takenInCloud.flatMap((t) => t.refs);
    const project = access?.project;
    return {
      targetId,
      escrowVersion,
      items,
      cloudItems,
      refs,
      project,
      manifest,
      manifestPath,
      manifestHost,
      signedBy,
    };
  } catch (error) {
    await discard();
    throw error;
  }
}
