import type * as pulumi from "@pulumi/pulumi";
import type { DrillCheckStatus, DrillChecks, DrillReport } from "../agent/drill";
import type { AgentClient } from "../backupSet/agentClient";
import type { CloudAccess } from "../backupSet/take";
import { SwiftLocation, keysOfVersion, pointDir, signerOf, targetRefOf } from "../backupSet/state";
import { checkInputs, currentState, parseCheckedInputs, withoutUndefined } from "../common/check";
import { CofferError } from "../common/errors";
import { newestFirst } from "../history/point";
import { drillCinderBackup, scratchVolumeName } from "./cinderScratch";
import { DRILL_SCHEMA_VERSION, DrillPick, DrilledSet, RestoreDrillInputs, SetKeys, restoreDrillInputs } from "./schema";

/** One set's drill, as the outputs keep it. */
export interface DrillResult {
  /** The set resource's name and its id. */
  set: string;
  setId: string;
  /** The point drilled; absent when the set had no good point. */
  pointId?: string;
  takenAt?: string;
  /** How the point was chosen: the newest good one, or a random good one. */
  pick: DrillPick;
  /** Where the drill ran: "local" or the ssh destination that holds the point. */
  where?: string;
  ok: boolean;
  /** `cinderScratch`: with `cinderScratch: true`, each Cinder backup restored into a scratch volume, then deleted. */
  checks: DrillChecks & { cinderScratch?: DrillCheckStatus };
  /** The first check that failed, and why ("hash: item web-1-root: ..."). */
  failure?: string;
  /** The items restored, and those the drill can't restore (only the cloud holds them). */
  items: string[];
  notDrilled?: DrillReport["notDrilled"];
  durationMs: number;
}

export interface RestoreDrillOutputs extends Omit<RestoreDrillInputs, "status"> {
  schemaVersion: number;
  /** When the drills last ran (create, up, refresh). */
  lastRun: string;
  /** "ok" when every set's drill passed. */
  status: "ok" | "failed";
  /** Per set, in the order of `sets`. */
  results: DrillResult[];
  /** Each failed drill, named: "set nightly (nightly-1a2b) point 20261126T...: hash: ...". */
  failures: string[];
}

/** What drills need from their surroundings (the provider process, or a test). */
export interface DrillDeps {
  agent(host: string | undefined): AgentClient;
  now(): Date;
  /** A number in [0, 1), for `pick: "sampled"`. */
  random(): number;
  progress(message: string): void;
  /** The cloud that holds the points' Cinder backups (for `cinderScratch`), signed in on first use. */
  cloud?(): Promise<CloudAccess>;
  /** Aborted when the Pulumi engine is gone: the agent stops, and removes its scratch folder. */
  engineGone?: AbortSignal;
}

type Outputs = RestoreDrillOutputs & { __provider?: string };

const SKIPPED: DrillChecks = { manifest: "skipped", hash: "skipped", qemuImgCheck: "skipped" };

/** The point a drill of `set` restores: its newest good point, or a random good one; undefined when none is good. */
export function choosePoint(
  set: Pick<DrilledSet, "points">,
  pick: DrillPick,
  random: () => number,
): DrilledSet["points"][number] | undefined {
  const good = set.points.filter((p) => p.status === "ok").sort(newestFirst);
  if (good.length === 0) return undefined;
  return pick === "newest" ? good[0] : good[Math.min(good.length - 1, Math.floor(random() * good.length))];
}

/** A failed drill as a line that names the set, the point and the check. */
export function describeFailure(result: DrillResult): string {
  const point = result.pointId ? ` point ${result.pointId}` : "";
  return `set ${result.set} (${result.setId})${point}: ${result.failure ?? "failed"}`;
}

export function upgradeOutputs(olds: Outputs): RestoreDrillOutputs {
  return currentState("RestoreDrill", DRILL_SCHEMA_VERSION, olds);
}

/** What refresh hands back as inputs: the declared ones, with the status found (drift against "ok"). */
export function inputsOf(outputs: RestoreDrillOutputs): Omit<RestoreDrillInputs, "status"> & { status: string } {
  const { sets, keys, pick, scratchDir, boot, cinderScratch, status } = outputs;
  return { sets, keys, pick, scratchDir, boot, cinderScratch, status };
}

export function createRestoreDrillProvider(deps: DrillDeps) {
  /** Whether the agent on `where` has drill-point, asked once per host and run. */
  async function checkDrills(agent: AgentClient): Promise<void> {
    const { drills } = await agent.call("version", {});
    if (drills) return;
    const fix = "install the same coffer version where Pulumi runs and on every host";
    const where = agent.where === "local" ? "this machine" : `host ${agent.where}`;
    throw new CofferError("AGENT_PROTOCOL_MISMATCH", `coffer-agent on ${where} has no restore drill: ${fix}`);
  }

  async function drillSet(
    inputs: RestoreDrillInputs,
    set: DrilledSet,
    keys: SetKeys,
    checked: Map<string, Promise<void>>,
  ): Promise<DrillResult> {
    const base = { set: set.name, setId: set.setId, pick: inputs.pick };
    const point = choosePoint(set, inputs.pick, deps.random);
    if (!point) {
      const failure = `point: the set has no good point to drill (${set.points.length} point(s), none verified ok)`;
      return { ...base, ok: false, checks: SKIPPED, failure, items: [], durationMs: 0 };
    }
    const location = set.locations[point.loc];
    const where = location.manifestHost;
    const about = { ...base, pointId: point.id, takenAt: point.takenAt, where };
    const signer = signerOf(set, point);
    if (point.signedBy !== undefined && signer === undefined) {
      const failure = `manifest: the set's state has no public key ${point.signedBy} to check its signature with`;
      return { ...about, ok: false, checks: { ...SKIPPED, manifest: "failed" }, failure, items: [], durationMs: 0 };
    }
    const agent = deps.agent(where === "local" ? undefined : where);
    if (!checked.has(where)) checked.set(where, checkDrills(agent));
    await checked.get(where);
    deps.progress(`drill: set ${set.name}, point ${point.id} (${inputs.pick}) on ${where}`);
    const pointKeys = keysOfVersion(keys, point.key);
    const { targetKey } = keys.keys;
    const secrets = [pointKeys.passphrase, pointKeys.manifestKey, targetKey].filter((s): s is string => !!s);
    const { targetId: _id, ...report } = await agent.call(
      "drill-point",
      {
        // A Swift location's point is fetched into the agent's spool for the drill.
        target: targetRefOf({ ...location, swift: location.swift as SwiftLocation | undefined }, targetKey),
        setDir: pointDir(set.setId, { ...location, hosts: [] }, point.id),
        keys: pointKeys,
        ...(signer ? { publicKey: signer.pem } : {}),
        ...(inputs.scratchDir ? { scratchDir: inputs.scratchDir } : {}),
        ...(inputs.boot ? { boot: inputs.boot } : {}),
      },
      { secrets, signal: deps.engineGone },
    );
    const { notDrilled, cinderSources = [], ...rest } = report;
    const result: DrillResult = { ...about, ...rest, ...(notDrilled.length > 0 ? { notDrilled } : {}) };
    if (result.checks.manifest !== "ok") return result;
    if (inputs.cinderScratch) await drillCinderBackups(result, point.id, cinderSources);
    const cinderDrilled = result.checks.cinderScratch === "ok" || result.checks.cinderScratch === "failed";
    if (result.items.length === 0 && !cinderDrilled) {
      // A drill that restores nothing proves nothing.
      const held = notDrilled.map((n) => n.item).join(", ");
      result.ok = false;
      const fix = "cinderScratch drills it";
      result.failure = `hash: nothing of the point is in the target (only Cinder holds ${held}): ${fix}`;
    }
    return result;
  }

  /** With `cinderScratch`: each Cinder source's backup into a scratch volume, deleted afterwards; into `result`. */
  async function drillCinderBackups(
    result: DrillResult,
    pointId: string,
    sources: NonNullable<DrillReport["cinderSources"]>,
  ): Promise<void> {
    if (sources.length === 0) {
      result.checks.cinderScratch = "skipped";
      return;
    }
    if (!deps.cloud) throw new CofferError("CLOUD_CONFIG_INVALID", "cinderScratch needs the cloud, and none is set up");
    const access = await deps.cloud();
    const problems: string[] = [];
    for (const { item, source } of sources) {
      deps.progress(`drill: set ${result.set}, point ${pointId}: cinder backup ${source.backupId} of ${item}`);
      const name = scratchVolumeName(result.setId, pointId, item);
      const problem = await drillCinderBackup(source, access, {
        name,
        progress: deps.progress,
        signal: deps.engineGone,
      });
      if (problem) problems.push(`item ${item}: ${problem}`);
    }
    result.checks.cinderScratch = problems.length > 0 ? "failed" : "ok";
    if (problems.length > 0) {
      result.ok = false;
      result.failure ??= `cinderScratch: ${problems.join("; ")}`;
    }
  }

  /** Drills every set, one after the other (each restores whole disks). */
  async function drill(inputs: RestoreDrillInputs): Promise<RestoreDrillOutputs> {
    const lastRun = deps.now().toISOString();
    const checked = new Map<string, Promise<void>>();
    const results: DrillResult[] = [];
    for (const set of inputs.sets) {
      const keys = inputs.keys.find((k) => k.setId === set.setId)!;
      results.push(await drillSet(inputs, set, keys, checked));
    }
    const failures = results.filter((r) => !r.ok).map(describeFailure);
    for (const failure of failures) deps.progress(`drill failed: ${failure}`);
    return {
      ...inputs,
      schemaVersion: DRILL_SCHEMA_VERSION,
      lastRun,
      status: failures.length > 0 ? "failed" : "ok",
      results,
      failures,
    };
  }

  /** A drill in `up` is the test: one that fails fails the up, naming what failed. */
  async function drillOrFail(news: Record<string, unknown>): Promise<RestoreDrillOutputs> {
    const outputs = await drill(parseCheckedInputs(restoreDrillInputs, news));
    if (outputs.failures.length > 0) {
      throw new CofferError("VERIFY_FAILED", `restore drill failed: ${outputs.failures.join("; ")}`);
    }
    return outputs;
  }

  return {
    async check(_olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
      return checkInputs(restoreDrillInputs, news);
    },

    /** Always a change: every `up` drills again (preview shows the drill as an update). */
    async diff(): Promise<pulumi.dynamic.DiffResult> {
      return { changes: true, replaces: [], deleteBeforeReplace: false };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
      const outputs = await drillOrFail(news);
      const id = `drill-${outputs.sets.map((s) => s.setId).join("-")}`.slice(0, 200);
      return { id, outs: withoutUndefined(outputs) };
    },

    async update(_id: string, _olds: Outputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
      return { outs: withoutUndefined(await drillOrFail(news)) };
    },

    /** Refresh drills too: a failed drill is drift, in `status`, `results` and `failures`. */
    async read(id: string, olds: Outputs): Promise<pulumi.dynamic.ReadResult> {
      const state = upgradeOutputs(olds);
      const outputs = await drill(parseCheckedInputs(restoreDrillInputs, { ...inputsOf(state), status: "ok" }));
      return { id, props: withoutUndefined(outputs), inputs: withoutUndefined(inputsOf(outputs)) };
    },

    /** A drill leaves nothing behind (its scratch folder goes when it ends); the backups are the sets'. */
    async delete(): Promise<void> {},
  };
}
