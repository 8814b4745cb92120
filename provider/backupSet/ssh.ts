import { CofferError } from "../common/errors";

/**
 * The ssh command line that runs `remoteCommand` on `host`: BatchMode (keys and ~/.ssh/config,
 * never a password prompt). COFFER_SSH_CONFIG, read per call, names an ssh config file to use.
 * The remote command goes through the host's login shell: it must hold no secret (they go on stdin).
 */
export function sshCommand(host: string, remoteCommand: string): [file: string, args: string[]] {
  const config = process.env.COFFER_SSH_CONFIG;
  return [
    "ssh",
    ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", ...(config ? ["-F", config] : []), "--", host, remoteCommand],
  ];
}

/** ssh's exit status when ssh itself failed (no connection, refused keys), not the remote command. */
export const SSH_FAILED_EXIT = 255;

/** The error for an ssh that failed itself; `stderr` is ssh's message, already redacted. */
export function hostUnreachable(host: string, stderr: string, secrets: readonly string[] = []): CofferError {
  const fix = "check the host name, ssh keys and ~/.ssh/config";
  return new CofferError(
    "HOST_UNREACHABLE",
    `host ${host} can't be reached over ssh: ${stderr || "ssh failed"}: ${fix}`,
    {
      secrets,
    },
  );
}

/** `word` as one word for a POSIX shell, whatever it holds. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}
