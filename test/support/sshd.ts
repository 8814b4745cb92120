import { ChildProcess, execFileSync, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";

export interface TestSshd {
  /** An ssh config file in which `alias` reaches this sshd as the current user. */
  configFile: string;
  alias: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Debian's sshd on 127.0.0.1 with a host key and a client key made for the test. `env` is set in
 * its sessions over sshd's defaults (PATH, HOME...): a host with other programs on its PATH.
 */
export async function startSshd(
  dir: string,
  alias = "kvm-07",
  options: { env?: Record<string, string> } = {},
): Promise<TestSshd> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const hostKey = path.join(dir, "host_ed25519");
  const clientKey = path.join(dir, "client_ed25519");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKey]);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", clientKey]);
  await fs.copyFile(`${clientKey}.pub`, path.join(dir, "authorized_keys"));
  const port = await freePort();
  const user = execFileSync("id", ["-un"]).toString().trim();
  await fs.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  const sshdConfig = path.join(dir, "sshd_config");
  await fs.writeFile(
    sshdConfig,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "UsePAM no",
      "StrictModes no",
      `PidFile ${path.join(dir, "sshd.pid")}`,
      // The agent needs the environment the tests run with (PATH to node and qemu).
      "PermitUserEnvironment no",
      // One line: sshd takes only the first SetEnv.
      ...(options.env
        ? [
            `SetEnv ${Object.entries(options.env)
              .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
              .join(" ")}`,
          ]
        : []),
      "",
    ].join("\n"),
  );
  const knownHosts = path.join(dir, "known_hosts");
  await fs.writeFile(knownHosts, `[127.0.0.1]:${port} ${(await fs.readFile(`${hostKey}.pub`, "utf8")).trim()}\n`);
  const configFile = path.join(dir, "ssh_config");
  await fs.writeFile(
    configFile,
    [
      `Host ${alias}`,
      "  HostName 127.0.0.1",
      `  Port ${port}`,
      `  User ${user}`,
      `  IdentityFile ${clientKey}`,
      "  IdentitiesOnly yes",
      `  UserKnownHostsFile ${knownHosts}`,
      "  StrictHostKeyChecking yes",
      "",
    ].join("\n"),
  );
  const sshd: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", sshdConfig], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  sshd.stderr!.on("data", (c) => (log += c));
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      execFileSync("ssh", ["-F", configFile, "-o", "BatchMode=yes", alias, "true"], { stdio: "pipe" });
      break;
    } catch (error) {
      if (sshd.exitCode !== null || Date.now() > until)
        throw new Error(`sshd did not accept the test key: ${log} ${(error as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    configFile,
    alias,
    stop: async () => {
      if (sshd.exitCode !== null) return;
      sshd.kill();
      await new Promise((r) => sshd.once("exit", r));
    },
  };
}
