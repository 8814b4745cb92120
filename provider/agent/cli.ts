/**
 * coffer-agent: the host side of Coffer. The provider runs it locally or over ssh.
 *   coffer-agent <command>      request: one JSON document on stdin (secrets travel only here)
 *                               result:  {"ok":true,"protocol":N,"result":...}
 *                                        or {"ok":false,"protocol":N,"error":{code,message}} on stdout
 *                               (protocol.ts: each command's request schema, checked first, and result type)
 *                               progress: JSON lines {"progress":{"item","percent"}} on stderr
 * Commands: check-target, backup-item, write-manifest, verify-set, delete-set, delete-points,
 * read-index, write-index, drill-point, merge-prepare, merge-commit, merge-abort, version.
 * Every command on a set first finishes (or undoes) a merge a stopped run left in it (merge.ts).
 * Every command that touches a backup target first checks the target's identity (request field
 * `target: { path, id? }`): an unmounted NAS's empty mount point is refused before anything is written.
 * SIGTERM or SIGINT stops the work, removes partial files and QEMU jobs, and exits non-zero; so
 * does the exit of the process that started the agent (the provider, ssh).
 * Every command first removes what killed agents of this host left in the temp folder.
 */
import * as path from "node:path";
import { CofferError, isCofferError } from "../common/errors";
import { watchParent } from "../common/parentWatch";
import { parsePublicKey } from "../common/signingKey";
import { TargetRef, checkTargetIdentity, claimTargetIdentity } from "../common/targetIdentity";
import { readFileIfExists } from "../common/atomicFile";
import { MANIFEST_FILE, targetLayout } from "../targets/layout";
import {
  backupThroughSpool,
  deleteStoredPoint,
  readStoredManifest,
  targetStoreOf,
  withFetchedPoint,
  writeManifestThroughSpool,
} from "./swiftSpool";
import { cofferVersion } from "./agentVersion";
import { backupItem, deleteSet, qemuVersion, verifySet, writeManifest } from "./backupSet";
import { drillPoint } from "./drill";
import { abortMerge, commitMerge, prepareMerge, settleMerge } from "./merge";
import { chooseSourceKind } from "../sources/registry";
import { Manifest, CHAIN_MANIFEST_SCHEMA_VERSION, manifestSchema } from "./manifest";
import type { SwiftTargetAccess } from "../targets/swiftTarget";
import {
  AGENT_PROTOCOL_VERSION,
  AgentCommand,
  AgentReply,
  AgentResult,
  CheckedAgentRequest,
  checkAgentRequest,
  isAgentCommand,
} from "./protocol";
import { currentSetIndex, removeSetIndex, setAt, writeSetIndex } from "./pointIndex";
import { sweepTempLeftovers } from "./tempFiles";

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** The request on stdin; an empty one is `{}`. JSON's own message would quote it, secrets and all. */
function parseRequest(input: string): unknown {
  try {
    return input.trim() ? JSON.parse(input) : {};
  } catch {
    throw new CofferError("INVALID_INPUT", "the request on stdin is not valid JSON");
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

interface Events {
  signal: AbortSignal;
  progress: (item: string, percent: number) => void;
}

/** The request's target when it is a Swift container (its `path` is then the agent's spool of it). */
const onSwift = (target: TargetRef) =>
  target.swift ? (target as TargetRef & { swift: SwiftTargetAccess }) : undefined;

type Handlers = {
  [C in AgentCommand]: (request: CheckedAgentRequest<C>, events: Events) => Promise<AgentResult<C>>;
};

/**
 * The id of the request's target, which must be a Coffer target (the one `target.id` names, when
 * given) and hold the folder the request works in.
 */
async function checkedTarget(req: {
  target?: TargetRef;
  setDir?: string;
  zoneDir?: string;
  setId?: string;
}): Promise<string> {
  const targetId = await checkedTargetId(req);
  // A merge a stopped run left in the set is finished (or undone) before anything reads or writes it.
  const setDir = req.setDir ?? (req.zoneDir && req.setId ? path.join(req.zoneDir, req.setId) : undefined);
  // What can't be settled now stays as it is: readers still find every point whole (chainBases).
  if (setDir) await settleMerge(setDir).catch(() => undefined);
  return targetId;
}

async function checkedTargetId(req: { target?: TargetRef; setDir?: string; zoneDir?: string }): Promise<string> {
  if (typeof req.target?.path !== "string") {
    throw new CofferError(
      "INVALID_INPUT",
      "the request names no backup target: install the same coffer version where Pulumi runs and on every host",
    );
  }
  const workDir = req.setDir ?? req.zoneDir;
  if (workDir !== undefined && !path.resolve(workDir).startsWith(path.resolve(req.target.path) + path.sep)) {
    throw new CofferError("INVALID_INPUT", `${workDir} is not inside the backup target ${req.target.path}`);
  }
  const { target } = req;
  const store = targetStoreOf(target);
  if (target.id === undefined && typeof target.zone === "string") {
    const document = await store.readText(targetLayout.policyDocument(target.zone)).catch(() => undefined);
    if (document !== undefined) return claimTargetIdentity(store, new Date());
  }
  return checkTargetIdentity(store, target.id);
}

const handlers: Handlers = {
  "check-target": async (req) => ({ targetId: await checkedTarget(req) }),
  "backup-item": async (req, events) => {
    await checkedTarget(req);
    const swift = onSwift(req.target);
    if (!swift) return backupItem(req, events);
    // No owner marker in a spool: nothing of a point stays there once the command ends.
    const setDir = path.join(req.zoneDir, req.setId, req.pointId ?? "");
    return backupThroughSpool(swift, setDir, events.signal, (signal) =>
      backupItem({ ...req, owner: undefined }, { ...events, signal }),
    );
  },
  "read-manifest": async (req) => {
    await checkedTarget(req);
    const swift = onSwift(req.target);
    const text = swift
      ? await readStoredManifest(swift, req.setDir)
      : await readFileIfExists(path.join(req.setDir, MANIFEST_FILE));
    return text === undefined ? {} : { text };
  },
  "chain-status": async (req) => {
    const subject = `source ${req.name}`;
    const { kind, input } = chooseSourceKind(req.source, subject);
    if (!kind.chainStatus) throw new CofferError("INVALID_INPUT", `${kind.label} keeps no chain of backups`);
    return kind.chainStatus(input, subject);
  },
  "write-manifest": async (req) => {
    await checkedTarget(req);
    const manifest = manifestSchema.safeParse(req.manifest);
    if (!manifest.success) {
      const issue = manifest.error.issues[0];
      throw new CofferError("INVALID_INPUT", `the manifest is not one Coffer reads: ${issue.message}`, {
        field: ["manifest", ...issue.path].join("."),
      });
    }
    // Signed as given: the provider composed it (and signed it, with a signing key).
    const write = () => writeManifest(req.setDir, req.manifest as Manifest, req.manifestSecret, req.signature);
    const swift = onSwift(req.target);
    return swift ? writeManifestThroughSpool(swift, req.setDir, write) : write();
  },
  "verify-set": async (req, events) => {
    const targetId = await checkedTarget(req);
    const parsed = req.publicKey === undefined ? undefined : parsePublicKey(req.publicKey, "publicKey");
    if (parsed && !parsed.ok) throw new CofferError("INVALID_INPUT", parsed.problem, { field: "publicKey" });
    const secrets = req.keys ?? { manifestSecret: req.manifestSecret, passphrase: req.passphrase };
    const publicKey = parsed?.key;
    const verify = (setDir = req.setDir) => verifySet(setDir, req.level, { ...secrets, publicKey }, events);
    const swift = onSwift(req.target);
    return { ...(await (swift ? withFetchedPoint(swift, req.setDir, verify, events.signal) : verify())), targetId };
  },
  "delete-set": async (req) => {
    await checkedTarget(req);
    const swift = onSwift(req.target);
    if (swift) await deleteStoredPoint(swift, req.setDir, req.knownFiles);
    else await deleteSet(req.setDir, req.target.path, req.knownFiles);
    return { deleted: req.setDir };
  },
  "delete-points": async (req) => {
    for (const dir of req.pointDirs) await checkedTarget({ target: req.target, setDir: dir });
    const deleted: string[] = [];
    const failed: { dir: string; message: string }[] = [];
    const swift = onSwift(req.target);
    for (const dir of req.pointDirs) {
      await (swift ? deleteStoredPoint(swift, dir) : deleteSet(dir, req.target.path)).then(
        () => deleted.push(dir),
        (error: Error) => failed.push({ dir, message: error.message }),
      );
    }
    return { deleted, failed };
  },
  "read-index": async (req) => {
    const targetId = await checkedTarget(req);
    return { index: (await currentSetIndex(setOn(req.target, req.setDir))).index, targetId };
  },
  "write-index": async (req) => {
    await checkedTarget(req);
    // null: the set has no point left here; its folder goes too once empty.
    if (req.index === null) {
      await removeSetIndex(setOn(req.target, req.setDir));
      return { written: req.setDir };
    }
    await writeSetIndex(setOn(req.target, req.setDir), req.index);
    return { written: req.setDir };
  },
  "drill-point": async (req, events) => {
    const targetId = await checkedTarget(req);
    const parsed = req.publicKey === undefined ? undefined : parsePublicKey(req.publicKey, "publicKey");
    if (parsed && !parsed.ok) throw new CofferError("INVALID_INPUT", parsed.problem, { field: "publicKey" });
    const { setDir: pointDir, keys, scratchDir, boot } = req;
    const drill = (dir = pointDir) =>
      drillPoint({ pointDir: dir, keys, publicKey: parsed?.key, scratchDir, boot }, events);
    const swift = onSwift(req.target);
    return { ...(await (swift ? withFetchedPoint(swift, pointDir, drill, events.signal) : drill())), targetId };
  },
  "merge-prepare": async (req, events) => {
    await checkedTarget(req);
    return prepareMerge(req, events);
  },
  "merge-commit": async (req) => {
    await checkedTarget(req);
    return commitMerge(req);
  },
  "merge-abort": async (req) => {
    await checkedTarget(req);
    await abortMerge(req);
    return { aborted: true as const };
  },
  version: async () => ({
    qemu: await qemuVersion(),
    node: process.version,
    manifestSchema: CHAIN_MANIFEST_SCHEMA_VERSION,
    drills: true,
    swift: true,
    coffer: cofferVersion(),
    merges: true,
  }),
};

/** The set whose folder (or spool folder) is `setDir`, in the request's target's store. */
function setOn(target: TargetRef, setDir: string) {
  return { ...setAt(target.path, setDir), store: targetStoreOf(target) };
}

/** Checks the request, then runs its command. */
async function handle<C extends AgentCommand>(command: C, raw: unknown, events: Events): Promise<AgentResult<C>> {
  const handler: Handlers[C] = handlers[command];
  return handler(checkAgentRequest(command, raw), events);
}

export async function main(argv: string[]): Promise<void> {
  const command = argv[0];
  // Backups, and everything the tools make, are the owner's alone: they hold VMs' data.
  process.umask(0o077);
  const reply = (body: DistributiveOmit<AgentReply, "protocol">) =>
    process.stdout.write(JSON.stringify({ ...body, protocol: AGENT_PROTOCOL_VERSION }) + "\n");
  if (command === undefined || !isAgentCommand(command)) {
    reply({
      ok: false,
      error: {
        code: "INVALID_INPUT",
        message: `unknown command "${command ?? ""}": use one of ${Object.keys(handlers).join(", ")}`,
      },
    });
    process.exitCode = 2;
    return;
  }
  const abort = new AbortController();
  const stop = () => abort.abort();
  // `on`, not `once`: with no listener of ours left, execa's exit handler re-raises the signal
  // and the process dies before its cleanup has run.
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // A parent that is gone can't stop the agent or read its answer: stop as on SIGTERM, then exit.
  let orphaned = false;
  watchParent(() => {
    orphaned = true;
    stop();
  });
  // Nobody may be left to read the answer; that is no failure of the work.
  process.stdout.on("error", () => undefined);
  let lastReported = -1;
  const progress = (item: string, percent: number) => {
    // Whole percents are enough to show movement without flooding the channel.
    if (Math.floor(percent) === lastReported) return;
    lastReported = Math.floor(percent);
    process.stderr.write(JSON.stringify({ progress: { item, percent: Math.floor(percent) } }) + "\n");
  };
  try {
    await sweepTempLeftovers();
    const request = parseRequest(await readStdin());
    const result = await handle(command, request, { signal: abort.signal, progress });
    reply({ ok: true, result });
  } catch (error) {
    const e = isCofferError(error) ? error : new CofferError("IO_FAILED", (error as Error).message);
    reply({ ok: false, error: { code: e.code, message: e.message } });
    process.exitCode = 1;
  }
  if (orphaned) process.exit(1);
}
