import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { cofferVersion } from "../agent/agentVersion";
import { CofferError } from "../common/errors";

/**
 * coffer-agent and its dependencies in one JavaScript file that runs with `node` alone: what
 * remote hosts get (remoteAgent.ts). `npm run build` makes it (tools/build-agent-bundle.js), at
 * this path in the package.
 */
export const AGENT_BUNDLE_PATH = "dist/agent-bundle/coffer-agent.js";

export interface AgentBundle {
  file: string;
  /** Hex sha256 of the file: its name in a host's cache, and how an intact copy is told. */
  sha256: string;
  sizeBytes: number;
  /** The Coffer version it is of. */
  version: string;
}

let bundle: Promise<AgentBundle> | undefined;

/** This package's agent bundle, read and hashed once per process. */
export function agentBundle(): Promise<AgentBundle> {
  bundle ??= readBundle().catch((error) => {
    bundle = undefined;
    throw error;
  });
  return bundle;
}

async function readBundle(): Promise<AgentBundle> {
  const file = path.join(path.dirname(require.resolve("coffer/package.json")), AGENT_BUNDLE_PATH);
  const bytes = await fs.readFile(file).catch((error: NodeJS.ErrnoException) => {
    throw new CofferError(
      "IO_FAILED",
      `the coffer-agent bundle for remote hosts, ${file}, can't be read (${error.code ?? error.message}): ` +
        "run `npm run build` in Coffer's folder, or set COFFER_REMOTE_AGENT to an agent installed on the hosts",
    );
  });
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  return { file, sha256, sizeBytes: bytes.length, version: cofferVersion() };
}
