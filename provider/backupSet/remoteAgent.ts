/**
 * Which coffer-agent runs on a remote host, installing this provider's bundle there when needed.
 * A host needs only Node.js and QEMU's tools: before the first agent command to a host, one ssh
 * command reports the host's Node.js, whether the bundle is in its cache intact, and the version
 * of any coffer-agent on its PATH. An agent on the PATH that speaks this provider's protocol and
 * is of this Coffer version or newer is used as it is (a user-installed agent); otherwise the
 * bundle goes to `${XDG_CACHE_HOME:-~/.cache}/coffer/agent/<sha256>/coffer-agent.js`, uploaded on
 * ssh's stdin to a temporary name, checked on the host and renamed into place (so two processes
 * installing at once each rename a whole, checked file). Bundles of other versions stay in the
 * cache: a provider of that version may still use them. COFFER_REMOTE_AGENT, read per call, is
 * the agent's command on every remote host instead (nothing is probed or installed then).
 */
import { installedAgentFits, installedAgentOf, MIN_NODE_VERSION, nodeRunsBundle } from "../agent/agentVersion";
import { loadExeca } from "../agent/tools";
import { engineLog } from "../common/engineLog";
import { CofferError } from "../common/errors";
import { formatBytes } from "../common/sizes";
import { AgentBundle, agentBundle } from "./agentBundle";
import { SSH_FAILED_EXIT, hostUnreachable, shellQuote, sshCommand } from "./ssh";

export interface RemoteAgent {
  /** The host's shell command that runs the agent: the agent's command name follows it. */
  command: string;
  /**
   * `override`: COFFER_REMOTE_AGENT; `installed`: a coffer-agent on the host's PATH, recent
   * enough; `bundle`: this provider's bundle in the host's cache.
   */
  kind: "override" | "installed" | "bundle";
  /** This process uploaded the bundle to the host. */
  uploaded: boolean;
}

/** What each host runs, per ssh config and host, found once per process. */
const resolved = new Map<string, Promise<RemoteAgent>>();

/** The agent to run on `host` (found, and installed when needed, at the first call for it). */
export function remoteAgent(host: string): Promise<RemoteAgent> {
  const override = process.env.COFFER_REMOTE_AGENT;
  if (override) return Promise.resolve({ command: override, kind: "override", uploaded: false });
  const key = `${process.env.COFFER_SSH_CONFIG ?? ""}\n${host}`;
  let agent = resolved.get(key);
  if (!agent) {
    agent = findOrInstall(host);
    resolved.set(key, agent);
    // A failure (an unreachable host) is not remembered: the next call tries again.
    agent.catch(() => resolved.delete(key));
  }
  return agent;
}

/** The bundle's folder on the host, for a POSIX shell whose $1 is the bundle's sha256. */
const CACHE_DIR = '"${XDG_CACHE_HOME:-$HOME/.cache}/coffer/agent/$1"';
/** Prints the sha256 of the file named by its argument: `node -e "$HASH_FILE" <file>`. */
const HASH_FILE =
  'const fs = require("fs"), crypto = require("crypto");' +
  'process.stdout.write(crypto.createHash("sha256").update(fs.readFileSync(process.argv[1])).digest("hex"))';

/** $1: the bundle's sha256, $2: HASH_FILE. Answers are `coffer-probe:` lines (a noisy login shell may add others). */
const PROBE = [
  `dir=${CACHE_DIR}`,
  `printf 'coffer-probe:dir=%s\\n' "$dir"`,
  `printf 'coffer-probe:node=%s\\n' "$(node --version 2>/dev/null)"`,
  `if [ -f "$dir/coffer-agent.js" ]; then`,
  `  printf 'coffer-probe:cached=%s\\n' "$(node -e "$2" "$dir/coffer-agent.js" 2>/dev/null)"`,
  `fi`,
  `if command -v coffer-agent >/dev/null 2>&1; then`,
  `  printf 'coffer-probe:installed=%s\\n' "$(coffer-agent version </dev/null 2>/dev/null | tail -n 1)"`,
  `fi`,
].join("\n");

/** $1: the bundle's sha256, $2: HASH_FILE; the bundle on stdin. Only a checked, whole file is renamed into place. */
const INSTALL = [
  "set -e",
  "umask 077",
  `dir=${CACHE_DIR}`,
  `mkdir -p "$dir"`,
  `tmp=$(mktemp "$dir/.coffer-agent.js.XXXXXX")`,
  `trap 'rm -f "$tmp"' EXIT`,
  `trap 'exit 1' HUP INT TERM`,
  `cat > "$tmp"`,
  `got=$(node -e "$2" "$tmp")`,
  `if [ "$got" != "$1" ]; then`,
  `  printf 'the copy that arrived has sha256 %s, not %s: check the free space in %s\\n' "$got" "$1" "$dir" >&2`,
  "  exit 3",
  "fi",
  `mv -f "$tmp" "$dir/coffer-agent.js"`,
].join("\n");

interface ProbeAnswer {
  dir: string;
  /** `node --version` ("v20.11.1"); "" without node. */
  node: string;
  /** The sha256 of the cached bundle, when there is one. */
  cached?: string;
  /** The last line of `coffer-agent version`, when one is on the PATH. */
  installed?: string;
}

async function findOrInstall(host: string): Promise<RemoteAgent> {
  const bundle = await agentBundle();
  const answer = await probe(host, bundle);
  const installed = answer.installed === undefined ? undefined : installedAgentOf(answer.installed);
  if (installed && installedAgentFits(installed)) {
    return { command: "coffer-agent", kind: "installed", uploaded: false };
  }
  const unavailable = (why: string) =>
    new CofferError(
      "AGENT_UNAVAILABLE",
      `${why}: install the nodejs package there (Node.js ${MIN_NODE_VERSION} or newer, on the PATH of ssh sessions), ` +
        "or set COFFER_REMOTE_AGENT to the command of a coffer-agent installed there",
    );
  if (answer.node === "") throw unavailable(`Node.js is missing on host ${host} (no node on its PATH)`);
  if (!nodeRunsBundle(answer.node)) {
    throw unavailable(`host ${host} has Node.js ${answer.node}; coffer-agent needs ${MIN_NODE_VERSION} or newer`);
  }
  const command = `node ${shellQuote(`${answer.dir}/coffer-agent.js`)}`;
  if (answer.cached === bundle.sha256) return { command, kind: "bundle", uploaded: false };
  const onPath = installed
    ? `; its coffer-agent on PATH is ${installed.coffer ?? "older"}, protocol ${installed.protocol}`
    : "";
  const why = (answer.cached === undefined ? "not in its cache" : "its cached copy is damaged") + onPath;
  engineLog(`installing coffer-agent ${bundle.version} (${formatBytes(bundle.sizeBytes)}) on host ${host} (${why})`, {
    ephemeral: false,
  });
  await install(host, bundle, answer.dir);
  return { command, kind: "bundle", uploaded: true };
}

async function probe(host: string, bundle: AgentBundle): Promise<ProbeAnswer> {
  const unanswered = (detail: string) =>
    new CofferError(
      "AGENT_UNAVAILABLE",
      `host ${host} did not answer Coffer's agent check as a POSIX shell would (${detail.slice(0, 300)}): ` +
        "make sh and a HOME folder available to the ssh user, or set COFFER_REMOTE_AGENT to an agent installed there",
    );
  const remote = `sh -c ${shellQuote(PROBE)} coffer-probe ${bundle.sha256} ${shellQuote(HASH_FILE)}`;
  const { stdout } = await runOnHost(host, remote).catch((error: CofferError) => {
    throw error.code === "HOST_UNREACHABLE" ? error : unanswered(error.shortMessage);
  });
  const answers = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const match = /^coffer-probe:(\w+)=(.*)$/.exec(line);
    if (match) answers.set(match[1], match[2]);
  }
  const dir = answers.get("dir");
  if (!dir?.startsWith("/")) throw unanswered(stdout.trim() || "no output");
  return { dir, node: answers.get("node") ?? "", cached: answers.get("cached"), installed: answers.get("installed") };
}

async function install(host: string, bundle: AgentBundle, dir: string): Promise<void> {
  const remote = `sh -c ${shellQuote(INSTALL)} coffer-install ${bundle.sha256} ${shellQuote(HASH_FILE)}`;
  await runOnHost(host, remote, bundle.file).catch((error: CofferError) => {
    if (error.code === "HOST_UNREACHABLE") throw error;
    throw new CofferError(
      "AGENT_UNAVAILABLE",
      `coffer-agent ${bundle.version} could not be installed in ${dir} on host ${host}: ${error.shortMessage}: ` +
        "make that folder writable for the ssh user (or free space there), " +
        "or set COFFER_REMOTE_AGENT to an agent installed there",
    );
  });
}

/** Runs a shell command on `host`, `inputFile` on its stdin; its stdout, or a CofferError with its stderr. */
async function runOnHost(host: string, remoteCommand: string, inputFile?: string): Promise<{ stdout: string }> {
  const { execa } = await loadExeca();
  const [file, args] = sshCommand(host, remoteCommand);
  const result = await execa(file, args, { reject: false, ...(inputFile ? { inputFile } : { stdin: "ignore" }) });
  const stderr = String(result.stderr ?? "").trim();
  if (result.exitCode === SSH_FAILED_EXIT) throw hostUnreachable(host, stderr);
  if (result.exitCode !== 0) throw new CofferError("IO_FAILED", stderr || `exit ${result.exitCode ?? result.signal}`);
  return { stdout: String(result.stdout ?? "") };
}
