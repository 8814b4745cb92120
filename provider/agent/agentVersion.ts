/**
 * Which Coffer an agent is, and whether a host's agent or Node.js will do for this provider.
 * Pure apart from `cofferVersion`, which reads this package's package.json (the agent bundle holds a copy).
 */
import { AGENT_PROTOCOL_VERSION, UNVERSIONED_AGENT_PROTOCOL } from "./protocol";

/** The oldest Node.js the agent bundle runs on (execa's floor; the bundle is built for it). */
export const MIN_NODE_VERSION = "18.19.0";

/** This package's version ("0.4.0"). */
export function cofferVersion(): string {
  return (require("coffer/package.json") as { version: string }).version;
}

const SEMVER = /^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;

/**
 * Compares two versions ("0.4.0", "v18.19.1", "0.5.0-rc.1") as semver orders them: negative when
 * `a` is older, 0 when equal, positive when newer; undefined when either is not a version.
 */
export function compareVersions(a: string, b: string): number | undefined {
  const [x, y] = [SEMVER.exec(a.trim()), SEMVER.exec(b.trim())];
  if (!x || !y) return undefined;
  for (let i = 1; i <= 3; i++) {
    const delta = Number(x[i]) - Number(y[i]);
    if (delta !== 0) return Math.sign(delta);
  }
  return comparePrereleases(x[4], y[4]);
}

/** A release is newer than its pre-releases; identifiers compare numerically when both are numbers. */
function comparePrereleases(a: string | undefined, b: string | undefined): number {
  if (a === b) return 0;
  if (a === undefined) return 1;
  if (b === undefined) return -1;
  const [xs, ys] = [a.split("."), b.split(".")];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
    const [p, q] = [xs[i], ys[i]];
    if (p === q) continue;
    const [pn, qn] = [/^\d+$/.test(p), /^\d+$/.test(q)];
    if (pn && qn) return Math.sign(Number(p) - Number(q));
    if (pn !== qn) return pn ? -1 : 1;
    return p < q ? -1 : 1;
  }
  return Math.sign(xs.length - ys.length);
}

/** Whether `version` (`node --version`'s "v20.11.1") runs the agent bundle. */
export function nodeRunsBundle(version: string): boolean {
  return (compareVersions(version, MIN_NODE_VERSION) ?? -1) >= 0;
}

/** What an installed agent said to `coffer-agent version`, as far as choosing it goes. */
export interface InstalledAgent {
  protocol: number;
  /** Its Coffer version; undefined for older agents, which do not say. */
  coffer?: string;
}

/** Reads the last line of `coffer-agent version`'s output; undefined when it is no successful reply. */
export function installedAgentOf(output: string): InstalledAgent | undefined {
  const line = output.trim().split("\n").pop() ?? "";
  let reply: { ok?: unknown; protocol?: unknown; result?: { coffer?: unknown } };
  try {
    reply = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof reply !== "object" || reply === null || reply.ok !== true) return undefined;
  const protocol = typeof reply.protocol === "number" ? reply.protocol : UNVERSIONED_AGENT_PROTOCOL;
  const coffer = typeof reply.result?.coffer === "string" ? reply.result.coffer : undefined;
  return { protocol, coffer };
}

/**
 * Whether an agent installed on a host will do instead of this provider's bundle: it speaks this
 * provider's protocol (any other is refused on every call) and is of this Coffer version or newer.
 * One that does not say its version counts as older.
 */
export function installedAgentFits(agent: InstalledAgent, ours: string = cofferVersion()): boolean {
  if (agent.protocol !== AGENT_PROTOCOL_VERSION || agent.coffer === undefined) return false;
  return (compareVersions(agent.coffer, ours) ?? -1) >= 0;
}
