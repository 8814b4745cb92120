import * as path from "node:path";
import { CofferError, redact } from "../common/errors";
import { AgentCommand, AgentReply, AgentRequest, AgentResult, protocolMismatch } from "../agent/protocol";
import { loadExeca } from "../agent/tools";
import { remoteAgent } from "./remoteAgent";
import { SSH_FAILED_EXIT, hostUnreachable, sshCommand } from "./ssh";

export interface CallOptions {
  /** Values no error may carry (they are replaced with "[secret]"). */
  secrets?: string[];
  signal?: AbortSignal;
  onProgress?: (item: string, percent: number) => void;
}

export interface AgentClient {
  /** Where it runs: "local", or the ssh destination. */
  readonly where: string;
  call<C extends AgentCommand>(command: C, request: AgentRequest<C>, options?: CallOptions): Promise<AgentResult<C>>;
}

/**
 * Runs coffer-agent on this machine, or on `host` over ssh (ssh.ts). The request, secrets included,
 * goes on stdin; the command line holds only the command's name. On a remote host the agent is
 * the one remoteAgent.ts finds or installs there (COFFER_REMOTE_AGENT, read per call, overrides it).
 */
export function agentClient(host: string | undefined): AgentClient {
  const where = host ?? "local";
  return {
    where,
    async call<C extends AgentCommand>(command: C, request: AgentRequest<C>, options: CallOptions = {}) {
      const { execa } = await loadExeca();
      const secrets = options.secrets ?? [];
      const [file, args] = host
        ? sshCommand(host, `${(await remoteAgent(host)).command} ${command}`)
        : [process.execPath, [localAgentPath(), command]];
      const child = execa(file, args, {
        input: JSON.stringify(request),
        reject: false,
        cancelSignal: options.signal,
        forceKillAfterDelay: 30_000,
      });
      let pending = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        pending += chunk.toString();
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) {
          try {
            const event = JSON.parse(line) as { progress?: { item: string; percent: number } };
            if (event.progress) options.onProgress?.(event.progress.item, event.progress.percent);
          } catch {
            // Not a progress line (ssh's own messages): kept in stderr for errors.
          }
        }
      });
      const result = await child;
      const stdout = String(result.stdout ?? "").trim();
      let reply: Partial<AgentReply<C>> | undefined;
      try {
        reply = stdout ? JSON.parse(stdout.split("\n").pop()!) : undefined;
      } catch {
        reply = undefined;
      }
      if (typeof reply?.ok === "boolean") {
        // Before the answer is believed: an agent of another Coffer may mean something else by it.
        const mismatch = protocolMismatch(reply, host ? `host ${host}` : "this machine");
        if (mismatch) throw mismatch;
      }
      if (reply?.ok === true) return reply.result as AgentResult<C>;
      if (reply?.ok === false && reply.error) {
        throw new CofferError(reply.error.code, redact(reply.error.message, secrets), { secrets });
      }
      const stderr = redact(
        String(result.stderr ?? "")
          .split("\n")
          .filter((l) => !l.startsWith('{"progress"'))
          .join("\n")
          .trim(),
        secrets,
      );
      if (host && result.exitCode === SSH_FAILED_EXIT) throw hostUnreachable(host, stderr, secrets);
      if (result.isCanceled) throw new CofferError("ABORTED", `coffer-agent ${command} on ${where} was stopped`);
      throw new CofferError(
        "IO_FAILED",
        `coffer-agent ${command} on ${where} failed (exit ${result.exitCode ?? result.signal}): ${stderr || "no output"}`,
        { secrets },
      );
    },
  };
}

/** The coffer-agent of this installed package (the same path from dist/ and from source). */
function localAgentPath(): string {
  return path.join(path.dirname(require.resolve("coffer/package.json")), "bin", "coffer-agent.js");
}
