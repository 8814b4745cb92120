/**
 * What the provider and coffer-agent say to each other: one JSON request on stdin per command,
 * one JSON reply on stdout (see cli.ts). Each command has a request schema, which the agent checks
 * before any work, and a result type. Every reply carries the agent's protocol version, so that a
 * provider and an agent of different Coffer versions (a remote host not upgraded) say so plainly.
 */
import { z } from "zod";
import { COMPRESSIONS, INTEGRITY_CHECKS } from "../backupPolicy/schema";
import { CofferError, CofferErrorCode } from "../common/errors";
import { agentSourceSchema } from "../sources/registry";
import type { ChainStatus } from "../sources/kind";
import { chainRequestSchema } from "./chainLink";
import type { Verification } from "./backupSet";
import type { DrillReport } from "./drill";
import type { MergedFile } from "./merge";
import type { Manifest, ManifestItem } from "./manifest";
import { SetIndex, setIndexSchema } from "./pointIndex";
import { setOwner } from "./setOwner";

/**
 * 2: requests checked, versioned replies. 3: points (`pointId`, verify-set's `keys`, delete-points,
 * read-index and write-index). 4: Ed25519-signed manifests (write-manifest's `signature`,
 * verify-set's `publicKey`): an older agent would drop the signature unseen. The agents before 2
 * (no `protocol` in replies) count as 1. Manifest schema 5 (points sealed for recipients) changes no
 * request: an older agent writes and verifies every other manifest as before, and refuses such a
 * one itself; version's `manifestSchema` (absent from an older agent) lets the provider refuse a
 * sealed point before any work instead. drill-point (restore drills) changes no other request either:
 * an older agent lacks it, and version's `drills` (absent from an older agent) says so first.
 * Manifest schema 7 (incremental backups) adds backup-item's `chain`, read-manifest and chain-status:
 * an agent whose `manifestSchema` is 7 has them, and the provider asks no other agent for a link.
 * merge-prepare, merge-commit and merge-abort (retention merging a pruned link into its kept point)
 * change no other request: version's `merges` (absent from an older agent) says an agent has them.
 */
export const AGENT_PROTOCOL_VERSION = 4;
/** What a reply without `protocol` comes from. */
export const UNVERSIONED_AGENT_PROTOCOL = 1;

const NO_TARGET =
  "the request names no backup target: install the same coffer version where Pulumi runs and on every host";

/** A Swift target's container, account and key (the key travels on stdin only); `path` is then the agent's spool. */
const swiftAccess = z.object({
  authUrl: z.string(),
  user: z.string(),
  key: z.string({ error: "target.swift.key must be a string" }).min(1, { message: "target.swift.key is empty" }),
  container: z.string(),
  prefix: z.string().optional(),
  segmentMiB: z.number().int().min(1),
  scratch: z.object({ path: z.string(), maxGiB: z.number().positive() }),
});

const target = z.object(
  {
    path: z.string({ error: NO_TARGET }),
    id: z.string().optional(),
    zone: z.string().optional(),
    swift: swiftAccess.optional(),
  },
  { error: NO_TARGET },
);
const folder = (what: string) => z.string({ error: `${what} must be the path of a folder` }).min(1);
/** A name that becomes part of a file or folder name in the set's folder. */
const fileName = (what: string) =>
  z
    .string({ error: `${what} must be a string` })
    .refine((f) => f !== "" && f !== "." && f !== ".." && !f.includes("/"), {
      message: `${what} must be a plain file name (no "/")`,
    });
const secret = (what: string) => z.string({ error: `${what} must be a string` });

/** A merge of point `from` into `into` (agent/merge.ts), as its two halves are asked for. */
const mergeRequest = z.object({
  target,
  setDir: folder("setDir"),
  from: fileName("from"),
  into: fileName("into"),
  manifestSecret: secret("manifestSecret").min(1),
  owner: setOwner,
});

export const agentRequests = {
  "check-target": z.object({ target }),
  "backup-item": z.object({
    target,
    /** `<target>/sets/<zone>`: the folder of every set of one zone. */
    zoneDir: folder("zoneDir"),
    setId: fileName("setId"),
    /** The point's folder in the set's; absent: the set's folder is the point's (sets before histories). */
    pointId: fileName("pointId").optional(),
    name: fileName("name"),
    source: agentSourceSchema,
    compression: z.enum(COMPRESSIONS),
    encrypted: z.boolean(),
    bandwidthLimitMiBps: z.number().int().min(0),
    integrityCheck: z.enum(INTEGRITY_CHECKS),
    passphrase: secret("passphrase").optional(),
    /** The passphrase is the point's own random key (older providers send none): no key stretching for it. */
    randomKey: z.boolean().optional(),
    /** The provider process taking the set (older providers send none). */
    owner: setOwner.optional(),
    /** An incremental source's chain (an agent before manifest schema 7 refuses the source's incremental field). */
    chain: chainRequestSchema.optional(),
  }),
  /** A point's manifest as stored, unchecked: the provider checks it with keys the agent never gets. */
  "read-manifest": z.object({ target, setDir: folder("setDir") }),
  /** An incremental source's disk as it is (format, bitmaps, dirty counts), read without changing it: preview. */
  "chain-status": z.object({ name: fileName("name"), source: agentSourceSchema }),
  "write-manifest": z.object({
    target,
    setDir: folder("setDir"),
    // Checked against the manifest schema after the target: what an unmounted target gets is that refusal.
    manifest: z.record(z.string(), z.unknown(), { error: "manifest must be an object" }),
    manifestSecret: secret("manifestSecret").min(1),
    /** The manifest's Ed25519 signature (base64), made in Pulumi's process: the private key never comes here. */
    signature: z
      .string({ error: "signature must be a base64 Ed25519 signature" })
      .regex(/^[A-Za-z0-9+/]{86}==$/, { message: "signature must be a base64 Ed25519 signature (64 bytes)" })
      .optional(),
  }),
  "verify-set": z
    .object({
      target,
      setDir: folder("setDir"),
      level: z.enum(INTEGRITY_CHECKS),
      /** The keys a point was made with: the agent takes the one its manifest names. */
      keys: z
        .object({
          passphrase: secret("keys.passphrase").optional(),
          manifestKey: secret("keys.manifestKey").optional(),
        })
        .optional(),
      manifestSecret: secret("manifestSecret").min(1).optional(),
      passphrase: secret("passphrase").optional(),
      /** The PEM of the Ed25519 public key the point was signed with (the set's state says): the manifest must be. */
      publicKey: z.string({ error: "publicKey must be the PEM of an Ed25519 public key" }).optional(),
    })
    .refine((r) => r.keys !== undefined || r.manifestSecret !== undefined, {
      message: "give keys (or manifestSecret): the key the manifest is signed with",
      path: ["keys"],
    }),
  "delete-set": z.object({
    target,
    setDir: folder("setDir"),
    /** The backup files the resource's state names, for when the manifest is gone. */
    knownFiles: z.array(z.string()).default([]),
  }),
  "delete-points": z.object({
    target,
    pointDirs: z.array(folder("each of pointDirs")).min(1, { message: "pointDirs must name at least one point" }),
  }),
  "read-index": z.object({ target, setDir: folder("setDir"), zone: fileName("zone") }),
  "write-index": z.object({
    target,
    setDir: folder("setDir"),
    /** null: no point of the set is left here; the index and the empty folders go. */
    index: setIndexSchema.nullable(),
  }),
  /** A restore drill of one point (drill.ts); an agent without it answers `version` without `drills`. */
  "drill-point": z.object({
    target,
    setDir: folder("setDir"),
    /** The keys the point was made with: the agent takes the one its manifest names. */
    keys: z.object({
      passphrase: secret("keys.passphrase").optional(),
      manifestKey: secret("keys.manifestKey").optional(),
    }),
    publicKey: z.string({ error: "publicKey must be the PEM of an Ed25519 public key" }).optional(),
    scratchDir: z
      .string({ error: "scratchDir must be an absolute path" })
      .refine((p) => p.startsWith("/"), { message: "scratchDir must be an absolute path" })
      .optional(),
    boot: z
      .object({
        marker: z.string().min(1, { message: "boot.marker must not be empty" }),
        timeoutSeconds: z.number().positive(),
        memoryMiB: z.number().int().min(16),
        item: z.string().optional(),
      })
      .optional(),
  }),
  /** The first half of merging point `from` into `into` (agent/merge.ts): the merged backups, verified. */
  "merge-prepare": mergeRequest,
  /** The second half: the rewritten manifests (whole files, HMAC'd and signed by the provider), swapped in. */
  "merge-commit": mergeRequest.extend({
    manifests: z
      .array(z.object({ pointId: fileName("each manifest's pointId"), text: z.string() }))
      .min(1, { message: "manifests must hold at least the merged-into point's" }),
  }),
  /** Undoes a prepared merge (the provider could not compose its manifests). */
  "merge-abort": z.object({ target, setDir: folder("setDir"), from: fileName("from"), into: fileName("into") }),
  version: z.object({}),
} as const;

/** Fields whose values are secrets: never in a message, whatever zod would say of them. */
const SECRET_FIELDS = ["passphrase", "manifestSecret"] as const;
const secretsIn = (given: Record<string, unknown>) => {
  const keys = (typeof given.keys === "object" && given.keys !== null ? given.keys : {}) as Record<string, unknown>;
  const target = (typeof given.target === "object" && given.target !== null ? given.target : {}) as {
    swift?: { key?: unknown };
  };
  return [...SECRET_FIELDS.map((field) => given[field]), keys.passphrase, keys.manifestKey, target.swift?.key];
};

export interface AgentResults {
  "check-target": { targetId: string };
  "backup-item": ManifestItem;
  /** The manifest file's text; absent when the point has none. */
  "read-manifest": { text?: string };
  "chain-status": ChainStatus;
  /** The manifest's path. */
  "write-manifest": string;
  "verify-set": Verification & { manifest?: Manifest; targetId: string };
  "delete-set": { deleted: string };
  /** Each point's folder deleted, or why not; one point failing does not stop the others. */
  "delete-points": { deleted: string[]; failed: { dir: string; message: string }[] };
  "read-index": { index: SetIndex; targetId: string };
  "write-index": { written: string };
  "drill-point": DrillReport & { targetId: string };
  "merge-prepare": { files: MergedFile[] };
  /** `unfinished`: committed, but a step of its clean-up failed (the next command on the set finishes it). */
  "merge-commit": { removed: string; unfinished?: string };
  "merge-abort": { aborted: true };
  /**
   * `manifestSchema`: the newest manifest schema it reads and writes; absent (an older agent): 4.
   * `drills`: it has drill-point; absent: an older agent.
   * `coffer`: its Coffer version (a host's installed agent older than the provider is not used); absent: an older agent.
   * `merges`: it has merge-prepare, merge-commit and merge-abort; absent: an older agent.
   */
  version: {
    qemu: string;
    node: string;
    manifestSchema?: number;
    drills?: boolean;
    /** It reaches Swift targets (`target.swift`); absent: an older agent, which would take the spool for a target. */
    swift?: boolean;
    coffer?: string;
    merges?: boolean;
  };
}

export type AgentCommand = keyof typeof agentRequests;
/** A request as the provider writes it. */
export type AgentRequest<C extends AgentCommand> = z.input<(typeof agentRequests)[C]>;
/** A request as the agent works with it, checked and with defaults filled in. */
export type CheckedAgentRequest<C extends AgentCommand> = z.output<(typeof agentRequests)[C]>;
export type AgentResult<C extends AgentCommand> = AgentResults[C];

export type AgentReply<C extends AgentCommand = AgentCommand> = { protocol: number } & (
  { ok: true; result: AgentResult<C> } | { ok: false; error: { code: CofferErrorCode; message: string } }
);

export function isAgentCommand(command: string): command is AgentCommand {
  return Object.hasOwn(agentRequests, command);
}

/** Checks `raw` as a `command` request; INVALID_INPUT naming the first wrong field, never a secret's value. */
export function checkAgentRequest<C extends AgentCommand>(command: C, raw: unknown): CheckedAgentRequest<C> {
  const parsed = agentRequests[command].safeParse(raw);
  if (parsed.success) return parsed.data as CheckedAgentRequest<C>;
  const given = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
  const secrets = secretsIn(given).filter((v): v is string => typeof v === "string");
  const issue = parsed.error.issues[0];
  const at = issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0]] : issue.path;
  const message = issue.code === "unrecognized_keys" ? "is not a known field" : issue.message;
  throw new CofferError("INVALID_INPUT", message, { field: at.join(".") || command, secrets });
}

/**
 * The error for a reply of another protocol than this provider's, or undefined when it speaks
 * this one. `where` names the agent's machine ("host kvm-07", "this machine").
 */
export function protocolMismatch(reply: { protocol?: unknown }, where: string): CofferError | undefined {
  const spoken = typeof reply.protocol === "number" ? reply.protocol : UNVERSIONED_AGENT_PROTOCOL;
  if (spoken === AGENT_PROTOCOL_VERSION) return undefined;
  const fix = "install the same coffer version where Pulumi runs and on every host";
  const age = spoken < AGENT_PROTOCOL_VERSION ? "an older Coffer" : "a newer Coffer";
  const needs = `this provider needs ${AGENT_PROTOCOL_VERSION}`;
  return new CofferError(
    "AGENT_PROTOCOL_MISMATCH",
    `coffer-agent on ${where} speaks protocol ${spoken} (${age}); ${needs}: ${fix}`,
  );
}
