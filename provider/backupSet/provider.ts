import type * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";
import type { Verification } from "../agent/backupSet";
import type { Manifest } from "../agent/manifest";
import { CofferError, isCofferError } from "../common/errors";
import { formatBytes } from "../common/sizes";
import { checkInputs, parseCheckedInputs, unknownPaths, userInputs, withoutUndefined } from "../common/check";
import { ensureReference, releaseReference } from "../escrow/references";
import { holdsAt } from "../history/holds";
import { newestFirst } from "../history/point";
import { overdue } from "../history/schedule";
import { SetChange, describeChange, newestPoints, planSetChange, pruneCandidates, usedKey } from "./change";
import { INDEX_KIND, INDEX_SCHEMA_VERSION, RewrittenPoint, SetIndex, indexVersionOf } from "../agent/pointIndex";
import { ChainFrom, chainFrom, previewChains } from "./chain";
import { agentSource, chainsThroughQemu, planPoint } from "./plan";
import { BackupSetInputs, backupSetInputs } from "./schema";
import {
  BackupSetOutputs,
  PointLocation,
  PointRecord,
  SET_SCHEMA_VERSION,
  itemsDigest,
  keysOfVersion,
  pointDir,
  referenceName,
  signerOf,
  stateSecrets,
  targetOfPolicy,
  targetRefOf,
  upgradeOutputs,
} from "./state";
import { volumeKeyRecordId } from "../escrow/record";
import { cinderBackups, projectMismatch, removePointsBackups } from "../sources/cinderBackups";
import { CloudBackupRef, pointsBuiltOn } from "../sources/kind";
import { CloudAccess, TakeDeps, TakenPoint, takePoint } from "./take";
import { SigningPublicKey, publicKeyOf } from "../common/signingKey";
import { thisProcess } from "../agent/setOwner";
import { mergePoint } from "./merge";
export { boundedAll } from "./take";
export { upgradeOutputs } from "./state";
export type { BackupSetOutputs } from "./state";

export interface SetHost extends TakeDeps {
  newSetId(trigger: string): string;
  newPointId(now: Date): string;
  /** A message kept in the output of `pulumi preview` and `up` (what a review reads). */
  note(message: string): void;
}

type Outputs = BackupSetOutputs & { __provider?: string };

const newestFirstOf = (points: readonly PointRecord[]) => [...points].sort(newestFirst);
const refSource = (point: PointRecord, id: string) => point.cloud?.find((ref) => ref.id === id)?.source ?? "?";

const local = (where: string) => (where === "local" ? undefined : where);

/** The location a point of `inputs` taken now goes to. */
function locationOf(inputs: BackupSetInputs, taken: TakenPoint): PointLocation {
  return {
    ...targetOfPolicy(inputs.policy),
    targetId: taken.targetId,
    zone: inputs.policy.zone,
    manifestHost: taken.manifestHost,
    hosts: [...new Set([...taken.items.map((i) => i.via), taken.manifestHost])],
    ...(inputs.escrow ? { escrow: { recordId: inputs.escrow.recordId, store: inputs.escrow.store } } : {}),
    ...(taken.project ? { cloud: taken.project } : {}),
  };
}

/** The points that hold the backups `refs` build on (incrementals' parents), oldest first. */
const basesOf = (points: readonly PointRecord[], refs: readonly CloudBackupRef[]) =>
  pointsBuiltOn(points, (p) => p.cloud ?? [], refs);

/** `point` as a merge by `coffer prune` rewrote its manifest (the index's record); its signer joins `signers`. */
function adoptRewritten(point: PointRecord, rewritten: RewrittenPoint, signers: SigningPublicKey[]): PointRecord {
  const { dependsOn: _bases, signedBy: _signer, ...rest } = point;
  const { signer } = rewritten;
  if (signer && !signers.some((s) => s.fingerprint === signer.fingerprint)) signers.push(signer);
  return {
    ...rest,
    itemsSha256: rewritten.itemsSha256,
    sizeBytes: rewritten.sizeBytes,
    ...(rewritten.dependsOn && rewritten.dependsOn.length > 0 ? { dependsOn: rewritten.dependsOn } : {}),
    ...(signer ? { signedBy: signer.fingerprint } : {}),
  };
}

/** The index of `location` in `locations`, added when new. */
function placeOf(locations: PointLocation[], location: PointLocation): number {
  const key = JSON.stringify(location);
  const found = locations.findIndex((l) => JSON.stringify(l) === key);
  if (found >= 0) return found;
  locations.push(location);
  return locations.length - 1;
}

/** The index of `points`, the set's points in `location`'s set folder, as state knows them. */
export function indexOf(
  state: BackupSetOutputs,
  points: readonly PointRecord[],
  location: PointLocation,
  now: Date,
): SetIndex {
  const index: SetIndex = {
    kind: INDEX_KIND,
    schemaVersion: INDEX_SCHEMA_VERSION,
    setId: state.setId,
    zone: location.zone,
    updatedAt: now.toISOString(),
    retention: (state.history?.retention ?? null) as SetIndex["retention"],
    holds: state.holds ?? [],
    points: points.map((p) => {
      const { escrow, cloud: project } = state.locations[p.loc];
      const cloud = project && p.cloud && p.cloud.length > 0 ? { project, backups: p.cloud } : undefined;
      return {
        id: p.id,
        takenAt: p.takenAt,
        sizeBytes: p.sizeBytes,
        status: p.status,
        checkedAt: p.checkedAt,
        ...(p.failures ? { failures: p.failures } : {}),
        keySource: keysOfVersion(state, p.key).passphrase ? ("passphrase" as const) : ("manifest-key" as const),
        ...(escrow && p.escrowVersion !== undefined ? { escrow: { ...escrow, version: p.escrowVersion } } : {}),
        ...(p.dependsOn && p.dependsOn.length > 0 ? { dependsOn: p.dependsOn } : {}),
        ...(cloud ? { cloud } : {}),
      };
    }),
    pruned: [],
  };
  return { ...index, schemaVersion: indexVersionOf(index) };
}

/** The set as a whole: ok when every point is; else which points are not, by id. */
export function setVerification(points: readonly PointRecord[], level: Verification["level"], now: Date): Verification {
  const failed = points.filter((p) => p.status === "failed");
  const missing = points.filter((p) => p.status === "missing");
  const failures = [...failed, ...missing].flatMap((p) =>
    (p.failures ?? [p.status]).map((failure) => `point ${p.id}: ${failure}`),
  );
  const status = failed.length > 0 ? "failed" : missing.length > 0 ? "missing" : "ok";
  return { status, checkedAt: now.toISOString(), level, failures };
}

/**
 * A verified point whose manifest is not the one Pulumi recorded (another set's or point's, other
 * files or hashes) failed: the target was changed by someone who holds the key, or state is not this set's.
 */
export function matchState(setId: string, point: PointRecord, manifest: Manifest): string[] {
  const failures: string[] = [];
  if (manifest.setId !== setId)
    failures.push(`manifest: it is set ${manifest.setId}'s, but Pulumi recorded set ${setId}`);
  const pointId = manifest.pointId ?? manifest.setId;
  if (pointId !== point.id) failures.push(`manifest: it is point ${pointId}'s, but Pulumi recorded point ${point.id}`);
  if (itemsDigest(manifest.items, manifest.cloudItems) !== point.itemsSha256) {
    failures.push("manifest: its items (files, sizes or hashes) differ from what Pulumi recorded");
  }
  return failures;
}

export function createBackupSetProvider(host: SetHost) {
  const parseChecked = (news: Record<string, unknown>) => parseCheckedInputs(backupSetInputs, news);

  /**
   * Takes a point of `inputs` into the set's folder, after `points`: its record, and the outputs
   * that name the newest point. Its location joins `locations`, and its signer `signers`, when new.
   */
  async function takeNewPoint(
    inputs: BackupSetInputs,
    setId: string,
    keyVersion: number,
    places: { locations: PointLocation[]; signers: SigningPublicKey[] },
    points: readonly PointRecord[] = [],
  ) {
    const { locations, signers } = places;
    const now = host.now();
    const earlier = points.flatMap((p) => p.cloud ?? []);
    const location = {
      targetPath: targetOfPolicy(inputs.policy).targetPath,
      zone: inputs.policy.zone,
      manifestHost: inputs.host ?? inputs.policy.host ?? "local",
    };
    const from = chainFrom(points, locations, { keyVersion, location }, (p) => pointDir(setId, locations[p.loc], p.id));
    const plan = planPoint(inputs, { setId, pointId: host.newPointId(now) }, earlier, from);
    const taken = await takePoint(plan, host);
    // A link's base point stays while the link does (retention keeps what a kept point depends on).
    const linkedTo = taken.items.flatMap((i) => (i.chain?.base ? [i.chain.base.pointId] : []));
    const bases = [...new Set([...basesOf(points, taken.refs), ...linkedTo])];
    const { signedBy } = taken;
    if (signedBy && !signers.some((s) => s.fingerprint === signedBy.fingerprint)) signers.push(signedBy);
    const point: PointRecord = {
      id: plan.pointId,
      takenAt: taken.manifest.createdAt,
      loc: placeOf(locations, locationOf(inputs, taken)),
      sizeBytes: taken.items.reduce((sum, i) => sum + i.sizeBytes, 0),
      itemsSha256: itemsDigest(taken.items, taken.cloudItems),
      key: keyVersion,
      ...(taken.escrowVersion !== undefined ? { escrowVersion: taken.escrowVersion } : {}),
      ...(signedBy ? { signedBy: signedBy.fingerprint } : {}),
      status: "ok",
      checkedAt: host.now().toISOString(),
      ...(taken.refs.length > 0 ? { cloud: taken.refs } : {}),
      ...(bases.length > 0 ? { dependsOn: bases } : {}),
    };
    host.progress(`point ${point.id}: ${taken.items.length} source(s), ${formatBytes(point.sizeBytes)}, verified`);
    const newest = {
      // A Swift point's place is in its container (swift:<container>/…/manifest.json); its pointDir is a spool's.
      setDir: plan.swift ? path.posix.dirname(path.posix.dirname(taken.manifestPath)) : path.dirname(plan.pointDir),
      manifestPath: taken.manifestPath,
      manifestHost: taken.manifestHost,
      items: taken.items,
    };
    return { point, newest };
  }

  /**
   * Deletes `points` on every host of their locations, one agent call per host and location, and
   * releases their escrow references. Returns the error of each point that could not be deleted
   * everywhere (also noted: it stays, and the next up tries again).
   */
  async function deletePoints(state: BackupSetOutputs, points: readonly PointRecord[]): Promise<Map<string, Error>> {
    // Their cloud backups first: a point whose cloud backups are not all deleted keeps its manifest.
    const failed = await deleteCloudBackups(state, points);
    for (const [loc, location] of state.locations.entries()) {
      const here = points.filter((p) => p.loc === loc && !failed.has(p.id));
      if (here.length === 0) continue;
      const target = targetRefOf(location, state.keys.targetKey);
      const dirOf = new Map(here.map((p) => [pointDir(state.setId, location, p.id), p]));
      for (const where of location.hosts) {
        const reply = await host
          .agent(local(where))
          .call("delete-points", { target, pointDirs: [...dirOf.keys()] }, { secrets: stateSecrets(state) })
          .catch((error: Error) => ({ deleted: [], failed: [...dirOf.keys()].map((dir) => ({ dir, error })) }));
        for (const { dir, ...problem } of reply.failed) {
          const error = "error" in problem ? problem.error : new CofferError("IO_FAILED", problem.message);
          failed.set(dirOf.get(dir)!.id, error);
        }
      }
    }
    for (const point of points) {
      const error = failed.get(point.id);
      if (error) {
        host.note(`point ${point.id}: not deleted (${error.message}); it stays, and the next up tries again`);
        continue;
      }
      await releaseEscrowOf(state, point);
    }
    return failed;
  }

  /** Releases a deleted point's escrow reference; a reference left behind is harmless (its manifest is gone). */
  async function releaseEscrowOf(state: BackupSetOutputs, point: PointRecord): Promise<void> {
    const { escrow } = state.locations[point.loc];
    if (!escrow) return;
    await releaseReference(escrow.store, escrow.recordId, referenceName(state.setId, point.id)).then(
      (released) =>
        released.length > 0 &&
        host.progress(`escrow ${escrow.recordId}: removed version(s) ${released.join(", ")}, which no point needs`),
      (error: Error) =>
        host.progress(`escrow ${escrow.recordId}: could not remove point ${point.id}'s reference (${error.message})`),
    );
  }

  /**
   * Merges `point` (pruned by retention) into `into`, which builds on it (backupSet/merge.ts): the
   * state after it, with `point` gone and the rewritten points' records (files, hashes, bases, signer)
   * as their new manifests say. Throws with nothing changed when the merge fails.
   */
  async function mergeInto(state: BackupSetOutputs, point: PointRecord, into: PointRecord): Promise<BackupSetOutputs> {
    const folder = setFolders(state)[into.loc];
    const dependsOnInto = (p: PointRecord, seen = new Set<string>()): boolean =>
      (p.dependsOn ?? []).some((id) => {
        if (id === into.id) return true;
        const base = state.points.find((b) => b.id === id);
        if (!base || seen.has(id)) return false;
        seen.add(id);
        return dependsOnInto(base, seen);
      });
    // By folder, not by location index: a point whose location record differs may still link in the same folder.
    const inFolder = (p: PointRecord) => setFolders(state)[p.loc]?.setDir === folder.setDir;
    const later = newestFirstOf(state.points.filter((p) => inFolder(p) && dependsOnInto(p))).reverse();
    const { signingKey } = state.keys;
    const result = await mergePoint(
      {
        agent: folder.agent,
        target: folder.target,
        setDir: folder.setDir,
        keys: keysOfVersion(state, into.key),
        ...(signingKey ? { signingKey } : {}),
        // A signed manifest is never rewritten unsigned (the policy may have stopped signing since).
        keepSigned: true,
        owner: thisProcess(),
        secrets: stateSecrets(state),
      },
      { from: point.id, into: into.id, later: later.map((p) => p.id) },
    );
    if (result.unfinished) host.progress(`merge of ${point.id}: the next run finishes it (${result.unfinished})`);
    const signedBy = signingKey ? publicKeyOf(signingKey) : undefined;
    const signers = [...(state.signers ?? [])];
    if (signedBy && !signers.some((s) => s.fingerprint === signedBy.fingerprint)) signers.push(signedBy);
    const points = state.points
      .filter((p) => p.id !== point.id)
      .map((p): PointRecord => {
        const manifest = result.rewritten.find((r) => r.pointId === p.id)?.manifest;
        if (!manifest) return p;
        const linkedTo = manifest.items.flatMap((i) => (i.chain?.base ? [i.chain.base.pointId] : []));
        const bases = [...new Set([...basesOf(state.points, p.cloud ?? []), ...linkedTo])];
        const { dependsOn: _bases, signedBy: _signer, ...rest } = p;
        return {
          ...rest,
          sizeBytes: manifest.items.reduce((sum, i) => sum + i.sizeBytes, 0),
          itemsSha256: itemsDigest(manifest.items, manifest.cloudItems),
          ...(signedBy ? { signedBy: signedBy.fingerprint } : {}),
          ...(bases.length > 0 ? { dependsOn: bases } : {}),
        };
      });
    await releaseEscrowOf(state, point);
    // The outputs name the newest point's items: rewritten too when it is one of the merged chain's.
    const newest = result.rewritten.find((r) => r.pointId === path.basename(path.dirname(state.manifestPath)));
    const via = (name: string) => state.items.find((i) => i.name === name)?.via ?? "local";
    const items = newest ? newest.manifest.items.map((i) => ({ ...i, via: via(i.name) })) : state.items;
    return { ...state, points, items, ...(signers.length > 0 ? { signers } : {}) };
  }

  /** The cloud the provider's credentials sign in to. */
  async function signedIn(): Promise<CloudAccess> {
    if (!host.cloud) throw new CofferError("INVALID_INPUT", "this provider has no cloud to reach cloud backups");
    return host.cloud();
  }

  /** The cloud, project and waits to reach `location`'s cloud backups with. */
  async function cloudOf(location: PointLocation): Promise<CloudAccess> {
    const access = await signedIn();
    const mismatch = projectMismatch(location.cloud, access);
    if (mismatch) throw mismatch;
    return access;
  }

  /**
   * Deletes the cloud backups of `points`, incrementals before what they build on. Returns the
   * error of each point whose backups could not all be deleted (it stays, and is noted).
   */
  async function deleteCloudBackups(state: BackupSetOutputs, points: readonly PointRecord[]) {
    const withBackups = newestFirstOf(points).map((p) => ({
      id: p.id,
      project: state.locations[p.loc].cloud,
      refs: p.cloud ?? [],
      dependsOn: p.dependsOn,
    }));
    return removePointsBackups(withBackups, { access: signedIn, progress: host.progress });
  }

  /**
   * Checks every point's cloud backups, with one listing per project: a backup gone or in error
   * marks its point. Points without cloud backups come back as they were.
   */
  async function checkCloud(state: BackupSetOutputs, points: PointRecord[], now: Date): Promise<PointRecord[]> {
    const withRefs = points.filter((p) => (p.cloud ?? []).length > 0);
    if (withRefs.length === 0) return points;
    const problems = new Map<string, string[]>();
    const gone = new Set<string>();
    for (const [loc, location] of state.locations.entries()) {
      const here = withRefs.filter((p) => p.loc === loc);
      if (here.length === 0) continue;
      const access = await cloudOf(location);
      const refs = here.flatMap((p) => p.cloud ?? []);
      const ctx = { ...access, subject: `set ${state.setId}`, progress: host.progress };
      const found = await cinderBackups.check(refs, ctx);
      for (const ref of await cinderBackups.keysGone(refs, ctx)) {
        host.note(
          `set ${state.setId}: the key ${ref.key} of cinder backup ${ref.id} (source ${ref.source}) is gone from ` +
            `Barbican, so Cinder can't restore that backup any more; the key is escrowed: record ` +
            `${volumeKeyRecordId(ref.key!)} (coffer escrow recover --format hex)`,
        );
      }
      const byId = new Map(found.map((problem) => [problem.id, problem]));
      for (const point of here) {
        const mine = (point.cloud ?? []).flatMap((ref) => byId.get(ref.id) ?? []);
        if (mine.length === 0) continue;
        problems.set(
          point.id,
          mine.map((problem) => `${problem.message} (source ${refSource(point, problem.id)})`),
        );
        if (mine.every((problem) => problem.status === "missing")) gone.add(point.id);
      }
    }
    return points.map((point) => {
      const found = problems.get(point.id);
      if (!found) return point;
      const failures = [...(point.status === "ok" ? [] : (point.failures ?? [])), ...found];
      // Missing only when nothing of it is left: no cloud backup, and nothing in the target.
      const status = gone.has(point.id) && point.sizeBytes === 0 && point.status !== "failed" ? "missing" : "failed";
      return { ...point, status, checkedAt: now.toISOString(), failures };
    });
  }

  /**
   * The Glance images the newest point copied, as Glance has them now: one gone, no longer active,
   * or with another hash than the point's copy is noted (the point keeps the bytes it copied).
   */
  async function checkImageSources(state: BackupSetOutputs): Promise<void> {
    const images = (state.items ?? []).flatMap((i) => (i.source.kind === "glanceImage" ? [i.source] : []));
    if (images.length === 0 || !host.cloud) return;
    const { cloud } = await host.cloud();
    const newest = newestPoints(state.points).newest?.id ?? "";
    for (const source of images) {
      const keeps = `point ${newest} keeps the bytes it copied (coffer restore --to-glance)`;
      const image = await cloud.glance.getImage(source.imageId).catch((error: unknown) => {
        if (isCofferError(error) && error.code === "CLOUD_NOT_FOUND") return undefined;
        throw error;
      });
      const what = `set ${state.setId}: glance image ${source.imageId}`;
      if (!image) host.note(`${what} is gone from Glance; ${keeps}`);
      else if (image.status !== "active") host.note(`${what} is ${image.status}, no longer active; ${keeps}`);
      else if (image.os_hash_value && image.os_hash_value !== source.hashValue)
        host.note(
          `${what} now has ${image.os_hash_algo} ${image.os_hash_value}, not the copied ${source.hashValue}; ${keeps}`,
        );
    }
  }

  /** Verifies one point at `level` with the keys it was made with; its record as the check left it. */
  async function checkPoint(state: BackupSetOutputs, point: PointRecord): Promise<PointRecord> {
    const location = state.locations[point.loc];
    const keys = keysOfVersion(state, point.key);
    const dir = pointDir(state.setId, location, point.id);
    // The key state recorded for the point, not the one its manifest names nor the policy's now.
    const signer = signerOf(state, point);
    if (point.signedBy !== undefined && signer === undefined) {
      const failures = [`state has no public key ${point.signedBy} to check its signature with`];
      return { ...point, status: "failed", checkedAt: host.now().toISOString(), failures };
    }
    // An unmounted target is an error here, not a "missing" point: it would look like lost backups.
    const verified = await host.agent(local(location.manifestHost)).call(
      "verify-set",
      {
        target: targetRefOf(location, state.keys.targetKey),
        setDir: dir,
        level: state.policy.integrityCheck,
        keys,
        ...(signer ? { publicKey: signer.pem } : {}),
      },
      { secrets: stateSecrets(state) },
    );
    const failures =
      verified.status === "ok" && verified.manifest
        ? matchState(state.setId, point, verified.manifest)
        : verified.failures;
    const status = verified.status === "ok" && failures.length > 0 ? "failed" : verified.status;
    if (location.escrow && point.escrowVersion !== undefined && status !== "missing") {
      const { store, recordId } = location.escrow;
      const name = referenceName(state.setId, point.id);
      const reference = {
        setId: name,
        version: point.escrowVersion,
        manifestPath: `${dir}/manifest.json`,
        manifestHost: location.manifestHost,
        createdAt: host.now().toISOString(),
      };
      await ensureReference(store, recordId, reference).then(
        (healed) =>
          healed &&
          host.progress(`escrow ${recordId}: wrote back point ${point.id}'s reference, missing from ${store}`),
        (error: Error) =>
          host.progress(`escrow ${recordId}: could not check point ${point.id}'s reference (${error.message})`),
      );
    }
    const { failures: _old, ...rest } = point;
    return { ...rest, status, checkedAt: verified.checkedAt, ...(failures.length > 0 ? { failures } : {}) };
  }

  /**
   * Prunes what retention no longer keeps, when the newest point is good: merges each pruned link a
   * kept point builds on into it, then deletes the rest. The state after it.
   */
  async function prune(state: BackupSetOutputs, inputs: BackupSetInputs, now: Date): Promise<BackupSetOutputs> {
    const { newest } = newestPoints(state.points);
    if (newest?.status !== "ok") return state;
    const { prune: pruned, merge } = pruneCandidates(state.points, inputs, now);
    let current = state;
    const merged: string[] = [];
    for (const { point, into } of merge) {
      // A merge that fails leaves both points as they were: the link stays, and the next up tries again.
      await mergeInto(current, point, into).then(
        (after) => {
          current = after;
          merged.push(`${point.id} into ${into.id}`);
        },
        (error: Error) =>
          host.note(
            `point ${point.id}: not merged into ${into.id} (${error.message}); it stays, and the next up tries again`,
          ),
      );
    }
    if (merged.length > 0) host.progress(`merged ${merged.length} point(s) by retention: ${merged.join(", ")}`);
    const failed = await deletePoints(current, pruned);
    const deleted = new Set(pruned.filter((p) => !failed.has(p.id)).map((p) => p.id));
    if (deleted.size > 0) host.progress(`pruned ${deleted.size} point(s) by retention: ${[...deleted].join(", ")}`);
    return { ...current, points: current.points.filter((p) => !deleted.has(p.id)) };
  }

  /** The set's folder at each location, with the agent that reaches it. */
  function setFolders(state: BackupSetOutputs) {
    return state.locations.map((location, loc) => ({
      loc,
      location,
      setDir: path.dirname(pointDir(state.setId, location, "-")),
      target: targetRefOf(location, state.keys.targetKey),
      agent: host.agent(local(location.manifestHost)),
    }));
  }

  /**
   * Writes each location's index of the points there, so that `coffer list` and `coffer prune`
   * work from the target alone. A failure is reported, not thrown: the backups are safe without it.
   */
  async function writeIndexes(state: BackupSetOutputs, now: Date): Promise<void> {
    const folders = new Map<string, { folder: ReturnType<typeof setFolders>[number]; points: PointRecord[] }>();
    const keyOf = (folder: ReturnType<typeof setFolders>[number]) => `${folder.location.manifestHost}:${folder.setDir}`;
    const all = setFolders(state);
    for (const folder of all) if (!folders.has(keyOf(folder))) folders.set(keyOf(folder), { folder, points: [] });
    for (const point of state.points) folders.get(keyOf(all[point.loc]))?.points.push(point);
    for (const { folder, points } of folders.values()) {
      const index = indexOf(state, points, folder.location, now);
      await folder.agent
        .call("write-index", { target: folder.target, setDir: folder.setDir, index })
        .catch((error: Error) =>
          host.progress(`index of ${folder.setDir} not written (${error.message}); coffer list rebuilds it`),
        );
    }
  }

  /** Outputs with keys no remaining point needs dropped, and the set's verification summed up. */
  function settle(state: BackupSetOutputs, now: Date): BackupSetOutputs {
    const used = new Set(state.points.map((p) => p.key));
    const keyring = state.keyring.filter((k) => used.has(k.version));
    const signing = new Set(state.points.map((p) => p.signedBy));
    const { signers: allSigners, ...rest } = state;
    const signers = (allSigners ?? []).filter((s) => signing.has(s.fingerprint));
    const verification = setVerification(state.points, state.policy.integrityCheck, now);
    const { newestGood } = newestPoints(state.points);
    const rpoHours = state.history?.rpoHours ?? undefined;
    const newestGoodAt = newestGood ? new Date(newestGood.takenAt) : undefined;
    const late = rpoHours !== undefined && overdue({ newestGoodAt, rpoHours, now }).overdue;
    return { ...rest, ...(signers.length > 0 ? { signers } : {}), keyring, verification, overdue: late };
  }

  /** Preview's forecast of a new point's incremental sources (previewChains); nothing while a value is unknown. */
  async function chainsPreview(state: BackupSetOutputs, news: BackupSetInputs, change: SetChange) {
    const sources = Array.isArray(news.sources) ? news.sources : [];
    const incremental = sources.filter(chainsThroughQemu);
    if (incremental.length === 0) return [];
    if (unknownPaths({ sources, policy: news.policy, host: news.host ?? null }).length > 0) {
      return ["incremental sources: a link or a full backup each, decided when the point is taken (values unknown)"];
    }
    const location = {
      targetPath: targetOfPolicy(news.policy).targetPath,
      zone: news.policy.zone,
      manifestHost: news.host ?? news.policy.host ?? "local",
    };
    const from: ChainFrom = change.fromNextPoint.includes("keys")
      ? { fullBecause: "the keys change with this update" }
      : chainFrom(state.points, state.locations, { keyVersion: state.keyVersion, location }, (p) =>
          pointDir(state.setId, state.locations[p.loc], p.id),
        );
    const previewed = incremental.map((s) => ({
      name: s.name,
      source: agentSource(s),
      via: s.host ?? news.host ?? news.policy.host,
      fullEvery: (s as { fullEvery?: number }).fullEvery,
    }));
    const target = { path: location.targetPath, zone: location.zone };
    return previewChains(state.setId, from, previewed, (h) => host.agent(h), {
      host: local(location.manifestHost),
      target,
    });
  }

  return {
    async check(_olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
      return checkInputs(backupSetInputs, news);
    },

    async diff(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
      const state = upgradeOutputs(olds);
      const now = host.now();
      const inputs = userInputs(news) as BackupSetInputs;
      const change = planSetChange(state, inputs, now);
      for (const line of describeChange(state.setId, change, now)) host.note(line);
      if (change.take) for (const line of await chainsPreview(state, inputs, change)) host.note(line);
      // A set is never replaced: every change applies to its next point, and points accumulate.
      return { changes: change.changes, replaces: [], deleteBeforeReplace: false };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
      const inputs = parseChecked(news);
      const setId = host.newSetId(inputs.trigger);
      const locations: PointLocation[] = [];
      const signers: SigningPublicKey[] = [];
      const { point, newest } = await takeNewPoint(inputs, setId, 1, { locations, signers });
      const state: BackupSetOutputs = {
        ...inputs,
        ...newest,
        schemaVersion: SET_SCHEMA_VERSION,
        setId,
        keyVersion: 1,
        keyring: [],
        locations,
        signers,
        points: [point],
        verification: setVerification([point], inputs.policy.integrityCheck, host.now()),
      };
      const created = settle(state, host.now());
      await writeIndexes(created, host.now());
      return { id: setId, outs: withoutUndefined(created) };
    },

    async read(id: string, props: Outputs): Promise<pulumi.dynamic.ReadResult> {
      const state = upgradeOutputs(props);
      const now = host.now();
      const { newest } = newestPoints(state.points);
      const staleAfterMs = (state.history?.reverifyAfterDays ?? 30) * 86_400_000;
      // A point a cloud check failed is checked again: its backup may be back (a cloud's outage ended).
      const cloudFailed = (p: PointRecord) => p.status !== "ok" && (p.cloud ?? []).length > 0;
      const due = (p: PointRecord) =>
        p === newest || cloudFailed(p) || now.getTime() - Date.parse(p.checkedAt) >= staleAfterMs;
      // What each location holds now (one listing, no verification): points pruned without Pulumi
      // leave state, named; a point whose manifest is gone shows as missing.
      const listed = new Map<number, SetIndex>();
      const locations = [...state.locations];
      for (const { loc, location, setDir, target, agent } of setFolders(state)) {
        const reply = await agent.call(
          "read-index",
          { target, setDir, zone: location.zone },
          { secrets: stateSecrets(state) },
        );
        listed.set(loc, reply?.index);
        // State from before identities adopts the target's (the agent checked it is a Coffer target).
        if (reply && locations[loc].targetId === undefined)
          locations[loc] = { ...locations[loc], targetId: reply.targetId };
      }
      const points: PointRecord[] = [];
      const signers = [...(state.signers ?? [])];
      for (const stated of state.points) {
        const index = listed.get(stated.loc);
        const pruned = index?.pruned.find((p) => p.id === stated.id);
        if (pruned) {
          const how = pruned.mergedInto ? `merged into ${pruned.mergedInto}` : "pruned";
          host.note(`point ${stated.id}: ${how} on ${pruned.prunedAt} by ${pruned.by}: dropped from state`);
          continue;
        }
        // A merge by `coffer prune` rewrote this point's manifest: state takes its record as the merge left it.
        const rewritten = index?.pruned
          .flatMap((p) => p.rewritten ?? [])
          .filter((r) => r.id === stated.id)
          .at(-1);
        const point = rewritten ? adoptRewritten(stated, rewritten, signers) : stated;
        const listedPoint = index?.points.find((p) => p.id === point.id);
        // No index answer (an agent that can't list): nothing is concluded from it.
        const gone = index !== undefined && (listedPoint === undefined || listedPoint.status === "missing");
        if (due(point)) points.push(await checkPoint({ ...state, locations }, point));
        else if (gone)
          points.push({
            ...point,
            status: "missing",
            checkedAt: now.toISOString(),
            failures: ["its manifest is gone from the target"],
          });
        else points.push(point);
      }
      const checked = await checkCloud({ ...state, locations }, points, now);
      await checkImageSources(state);
      const withSigners = signers.length > 0 ? { signers } : {};
      const refreshed = settle({ ...state, ...withSigners, locations, points: checked }, now);
      await writeIndexes(refreshed, now);
      return { id, props: withoutUndefined(refreshed) };
    },

    async update(_id: string, olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
      const previous = upgradeOutputs(olds);
      const inputs = parseChecked(news);
      const now = host.now();
      const change = planSetChange(previous, inputs, now);
      let { keyVersion, keyring } = previous;
      // A new key: the points made with the old one keep it (secret) until the last of them is pruned.
      // Not a signing key: its points are checked with its public key, which `signers` keeps.
      if (usedKey(previous) !== usedKey(inputs)) {
        keyring = [...keyring, { version: keyVersion, ...keysOfVersion(previous, keyVersion) }];
        keyVersion += 1;
      }
      const locations = [...previous.locations];
      const signers = [...(previous.signers ?? [])];
      const points = [...previous.points];
      const { setId, verification, setDir, manifestPath, manifestHost, items } = previous;
      let newest = { setDir, manifestPath, manifestHost, items };
      if (change.take) {
        host.progress(`taking a point: ${change.take.join("; ")}`);
        const taken = await takeNewPoint(inputs, setId, keyVersion, { locations, signers }, points);
        points.push(taken.point);
        newest = taken.newest;
      }
      const state: BackupSetOutputs = {
        ...inputs,
        ...newest,
        schemaVersion: SET_SCHEMA_VERSION,
        setId,
        keyVersion,
        keyring,
        locations,
        signers,
        points,
        verification,
      };
      const pruned = await prune(state, inputs, now);
      const updated = settle(pruned, host.now());
      await writeIndexes(updated, host.now());
      return { outs: withoutUndefined(updated) };
    },

    async delete(_id: string, props: Outputs): Promise<void> {
      const state = upgradeOutputs(props);
      const now = host.now();
      const total = formatBytes(state.points.reduce((sum, p) => sum + p.sizeBytes, 0));
      const folderOf = (l: PointLocation) =>
        l.swift
          ? `swift:${l.swift.container}/${l.swift.prefix ? `${l.swift.prefix}/` : ""}sets/${l.zone}/${state.setId}`
          : pointDir(state.setId, l, "").replace(/\/$/, "");
      const where = [...new Set(state.locations.map(folderOf))];
      if (!state.deleteBackupsOnDestroy) {
        const list = state.locations
          .filter((l) => !l.swift)
          .map((l) => `coffer list --target ${l.targetPath} --set ${state.setId}`);
        host.note(
          `set ${state.setId}: keeps its ${state.points.length} point(s) (${total}) in ${where.join(", ")}; ` +
            (list.length > 0 ? `see them with ${[...new Set(list)].join(" or ")}` : "delete them there when unneeded"),
        );
        return;
      }
      const held = state.points.filter((p) => (state.holds ?? []).some((h) => h.point === p.id && holdsAt(h, now)));
      const errorOf = await deletePoints(
        state,
        state.points.filter((p) => !held.includes(p)),
      );
      const failed = [...errorOf.keys()];
      const errors = [...errorOf.values()];
      if (held.length > 0) {
        host.note(`set ${state.setId}: keeps ${held.length} held point(s): ${held.map((p) => p.id).join(", ")}`);
      }
      const remaining = state.points.filter((p) => held.includes(p) || failed.includes(p.id));
      if (remaining.length > 0) await writeIndexes({ ...state, points: remaining }, now);
      else {
        for (const folder of setFolders(state)) {
          const request = { target: folder.target, setDir: folder.setDir, index: null };
          await folder.agent.call("write-index", request).catch(() => undefined);
        }
      }
      if (errors.length > 0) {
        const code = isCofferError(errors[0]) ? errors[0].code : "IO_FAILED";
        const reasons = errors.map((e) => e.message).join("; ");
        const points = `point(s) ${failed.join(", ")}`;
        const message = `set ${state.setId}: ${points} could not be deleted (${reasons}); run destroy again`;
        throw new CofferError(code, message, { secrets: stateSecrets(state) });
      }
    },
  };
}
