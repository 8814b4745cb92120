import { ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { MANIFEST_KIND } from "../../provider/agent/manifest";
import { makeRawDisk } from "../support/disks";
import { childrenOf, isRunning, killLeftovers, pollFor, processesMentioning } from "../support/processes";
import { filesContaining } from "../support/secretScan";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

/**
 * A killed agent (or one whose parent is killed) leaves no secret, server or process: the agent
 * runs the real data path with its own TMPDIR, is killed at each stage of its work, and what it
 * leaves is then looked for on disk and in /proc.
 */
jest.setTimeout(600_000);
// Unique per run: the temp folder is shared, and every file in it is scanned for this value.
const PASSPHRASE = `killed-agent-passphrase-${randomBytes(6).toString("hex")}`;
const tempDir = useTempDir();
const agentTmp = () => path.join(tempDir(), "agent-tmp");
const zoneDir = () => path.join(tempDir(), "target", "sets", "zone-k");
/** The test's backup target, with the identity a BackupPolicy gives it. */
const targetDir = async () => {
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  return target;
};
const agentBin = path.resolve(__dirname, "../../bin/coffer-agent.js");

beforeEach(() => fs.mkdir(agentTmp()));
// A tool left running (the defect these tests look for) must not outlive the test.
afterEach(() => killLeftovers(tempDir()));

const agentEnv = () => ({ ...process.env, TMPDIR: agentTmp() });

function startAgent(command: string, request: object): ChildProcess {
  const agent = spawn(process.execPath, [agentBin, command], { env: agentEnv(), stdio: ["pipe", "pipe", "pipe"] });
  agent.stdin!.end(JSON.stringify(request));
  return agent;
}

async function callAgent<T>(command: string, request: object): Promise<T> {
  const agent = startAgent(command, request);
  let out = "";
  agent.stdout!.on("data", (chunk) => (out += chunk));
  await new Promise((resolve) => agent.once("close", resolve));
  const reply = JSON.parse(out);
  if (!reply.ok) throw new Error(`${command}: ${reply.error.message}`);
  return reply.result as T;
}

/**
 * Waits until `parent` runs a tool whose command line `matches`. Undefined when the agent finished its work
 * first (a stage of a small backup can end between two looks: the caller tries again); fails if it failed.
 */
async function untilTool(parent: ChildProcess, matches: (command: string) => boolean, stage: string) {
  const tool = await pollFor(() => {
    if (parent.exitCode === 0) return null;
    const ended = parent.exitCode ?? parent.signalCode;
    if (ended !== null) throw new Error(`the agent ended (${ended}) before ${stage}`);
    return childrenOf(parent.pid!).find((child) => matches(child.command));
  }, 300_000);
  if (tool === undefined) throw new Error(`no ${stage} seen in 300 s`);
  return tool ?? undefined;
}

/** qemu-nbd serving the decrypted backup: started on the LUKS image, and listening (its pid file exists). */
async function untilServing(agent: ChildProcess): Promise<boolean> {
  const backupServer = (command: string) => command.includes("qemu-nbd") && command.includes("file.driver=luks");
  const server = await untilTool(agent, backupServer, "the read-back");
  if (!server) return false;
  const socket = / -k (\S+)/.exec(server.command)![1];
  const pidFile = path.join(path.dirname(socket), "qemu-nbd.pid");
  // Undefined (go on waiting) while the server starts; false once it has ended (served already, or failed).
  const serving = () =>
    fs.access(pidFile).then(
      () => true,
      () => (processesMentioning(socket).length ? undefined : false),
    );
  return (await pollFor(serving, 60_000)) === true;
}

/**
 * Starts the agent (`start(attempt)`) until `reached` sees it at the stage, at most 5 times: a small backup's
 * stage may end between two looks. Returns the agent, at the stage.
 */
async function agentAtStage(
  start: (attempt: number) => Promise<ChildProcess>,
  reached: (agent: ChildProcess) => Promise<unknown>,
): Promise<ChildProcess> {
  for (let attempt = 1; ; attempt++) {
    const agent = await start(attempt);
    if (await reached(agent)) return agent;
    if (agent.exitCode === null) await new Promise((resolve) => agent.once("exit", resolve));
    if (attempt === 5) throw new Error("the agent passed the stage before it was seen, 5 times");
  }
}

async function killAgent(agent: ChildProcess): Promise<void> {
  agent.kill("SIGKILL");
  if (agent.exitCode === null && agent.signalCode === null) await new Promise((resolve) => agent.once("exit", resolve));
}

/** Sockets under `dir`, at any depth. */
async function socketsUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isSocket()).map((e) => path.join(e.parentPath, e.name));
}

/**
 * What a killed agent may leave: a partial backup file (removed by the next backup of its zone).
 * What it must not leave, once the next agent command has swept: the passphrase in any file,
 * a private folder, a socket, a process working on the test's files or named after the agent.
 */
async function expectNothingLeft(killedPid: number): Promise<void> {
  await callAgent("version", {});
  // The kernel sends pdeathsig as the agent dies; give the tools a moment to go.
  const named = () => processesMentioning(`-${killedPid}-`).filter((p) => p.command.includes("coffer-"));
  const running = () => {
    const all = [...processesMentioning(tempDir()), ...named()];
    return all.filter((p, i) => all.findIndex((q) => q.pid === p.pid) === i);
  };
  await pollFor(() => (running().length === 0 ? true : undefined), 2000);
  expect(running()).toEqual([]);
  expect(await filesContaining(os.tmpdir(), PASSPHRASE)).toEqual([]);
  expect(await fs.readdir(agentTmp())).toEqual([]);
  expect(await socketsUnder(tempDir())).toEqual([]);
}

async function backupRequest(setId: string, overrides: object) {
  const disk = path.join(tempDir(), `${setId}.raw`);
  await makeRawDisk(disk, 32);
  return {
    target: { path: await targetDir() },
    zoneDir: zoneDir(),
    setId,
    name: "web-1-root",
    source: { disk },
    compression: "zstd",
    encrypted: true,
    passphrase: PASSPHRASE,
    bandwidthLimitMiBps: 0,
    integrityCheck: "none",
    ...overrides,
  };
}

describe("an agent killed with SIGKILL leaves no key, server or process", () => {
  const runs = (text: string, stage: string) => (agent: ChildProcess) =>
    untilTool(agent, (command) => command.includes(text), stage);
  const stages: [string, object, (agent: ChildProcess) => Promise<unknown>][] = [
    ["while the LUKS container is created", {}, runs("-O luks", "the LUKS creation")],
    ["during the copy", { bandwidthLimitMiBps: 2 }, runs("qemu-img convert -p", "the copy")],
    ["during qemu-img check", { integrityCheck: "metadata" }, runs("qemu-img check", "the check")],
    ["while qemu-nbd serves the decrypted backup", {}, untilServing],
  ];

  test.each(stages)("backup-item, %s", async (_stage, overrides, untilStage) => {
    // Another set each time: a finished attempt's backup stays, and a set never overwrites one.
    const start = async (attempt: number) =>
      startAgent("backup-item", await backupRequest(`set-k${attempt}`, overrides));
    const agent = await agentAtStage(start, untilStage);
    await killAgent(agent);
    await expectNothingLeft(agent.pid!);
  });

  test("verify-set full, while qemu-nbd serves the decrypted backup", async () => {
    const item = await callAgent<object>("backup-item", await backupRequest("set-v", {}));
    const setDir = path.join(zoneDir(), "set-v");
    const manifest = {
      kind: MANIFEST_KIND,
      schemaVersion: 1,
      setId: "set-v",
      name: "nightly",
      trigger: "t",
      zone: "zone-k",
      policy: { compression: "zstd", encrypted: true, bandwidthLimitMiBps: 0, integrityCheck: "full" },
      keySource: "passphrase",
      qemuVersion: "test",
      createdAt: new Date().toISOString(),
      items: [item],
    };
    const target = { path: await targetDir() };
    await callAgent("write-manifest", { target, setDir, manifest, manifestSecret: PASSPHRASE });
    const request = { target, setDir, level: "full", manifestSecret: PASSPHRASE, passphrase: PASSPHRASE };
    const agent = await agentAtStage(async () => startAgent("verify-set", request), untilServing);
    await killAgent(agent);
    await expectNothingLeft(agent.pid!);
  });
});

test("an agent whose parent is killed stops its work, cleans up, and exits", async () => {
  const request = await backupRequest("set-p", { bandwidthLimitMiBps: 2, compression: "none" });
  // `; true`: the shell stays the agent's parent instead of exec'ing it. The request goes on
  // the shell's stdin, which the agent inherits, not into a file.
  const command = `"${process.execPath}" "${agentBin}" backup-item; true`;
  const shell = spawn("sh", ["-c", command], { env: agentEnv(), stdio: ["pipe", "ignore", "ignore"] });
  shell.stdin!.end(JSON.stringify(request));
  const agent = await pollFor(() => childrenOf(shell.pid!).find((c) => c.command.includes("coffer-agent.js")), 30_000);
  expect(agent).toBeDefined();
  const copy = () => childrenOf(agent!.pid).find((c) => c.command.includes("qemu-img convert -p"));
  const copying = await pollFor(copy, 300_000);
  expect(copying).toBeDefined();
  await killAgent(shell);
  const finished = () => !isRunning(agent!.pid) && processesMentioning(tempDir()).length === 0;
  await pollFor(() => (finished() ? true : undefined), 5000);
  const left = { agentRunning: isRunning(agent!.pid), tools: processesMentioning(tempDir()) };
  expect(left).toEqual({ agentRunning: false, tools: [] });
  // The agent's own clean-up ran: no partial file (a kill would have left one), no private folder.
  expect(await fs.readdir(path.join(zoneDir(), "set-p"))).toEqual([]);
  expect(await fs.readdir(agentTmp())).toEqual([]);
  expect(await filesContaining(os.tmpdir(), PASSPHRASE)).toEqual([]);
});

describe("every agent command first sweeps what dead agents of this host left in its temp folder", () => {
  const host = os
    .hostname()
    .replace(/[^A-Za-z0-9]/g, "")
    .slice(0, 32);
  /** A pid that no process has: one that just exited. */
  const deadPid = async () => {
    const child = spawn("true");
    await new Promise((resolve) => child.once("exit", resolve));
    return child.pid!;
  };

  test("an orphaned qemu-nbd is stopped and its folder removed; live, foreign and recent folders stay", async () => {
    const dead = await deadPid();
    const orphanDir = path.join(agentTmp(), `coffer-nbd-${host}-${dead}-0123abcd`);
    await fs.mkdir(orphanDir, { mode: 0o700 });
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    // As an earlier version left it: a server with no pdeathsig, serving from the folder.
    const socket = path.join(orphanDir, "nbd.sock");
    const pidFile = `--pid-file=${path.join(orphanDir, "qemu-nbd.pid")}`;
    const server = spawn("qemu-nbd", ["-r", "-k", socket, pidFile, "-f", "raw", disk], { stdio: "ignore" });
    await pollFor(
      () =>
        fs.access(path.join(orphanDir, "qemu-nbd.pid")).then(
          () => true,
          () => undefined,
        ),
      30_000,
    );
    // A pid file that names a process which is not that server is not acted on.
    const bystander = spawn("sleep", ["60"]);
    const misnamedDir = path.join(agentTmp(), `coffer-nbd-${host}-${await deadPid()}-4567cdef`);
    await fs.mkdir(misnamedDir, { mode: 0o700 });
    await fs.writeFile(path.join(misnamedDir, "qemu-nbd.pid"), String(bystander.pid));
    const live = `coffer-nbd-${host}-${process.pid}-89abcdef`;
    const keep = [live, `coffer-key-otherhost-${dead}-0123abcd`, "coffer-key-Recent"];
    for (const name of keep) await fs.mkdir(path.join(agentTmp(), name));
    const oldKeyDir = path.join(agentTmp(), "coffer-key-Old123");
    const deadKeyDir = path.join(agentTmp(), `coffer-key-${host}-${dead}-0123abcd`);
    for (const dir of [oldKeyDir, deadKeyDir]) {
      await fs.mkdir(dir, { mode: 0o700 });
      await fs.writeFile(path.join(dir, "key"), PASSPHRASE, { mode: 0o600 });
    }
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    await fs.utimes(oldKeyDir, twoDaysAgo, twoDaysAgo);
    try {
      await callAgent("version", {});
      const ended = () => (server.exitCode !== null || server.signalCode !== null ? server.signalCode : undefined);
      const exited = await pollFor(ended, 2000);
      expect(exited).toBe("SIGKILL");
      expect(isRunning(bystander.pid!)).toBe(true);
      expect((await fs.readdir(agentTmp())).sort()).toEqual(keep.sort());
      expect(await filesContaining(agentTmp(), PASSPHRASE)).toEqual([]);
    } finally {
      server.kill("SIGKILL");
      bystander.kill("SIGKILL");
    }
  });

  test("the coffer CLI sweeps too, whatever its command", async () => {
    const leftover = path.join(agentTmp(), `coffer-key-${host}-${await deadPid()}-0123abcd`);
    await fs.mkdir(leftover, { mode: 0o700 });
    await fs.writeFile(path.join(leftover, "key"), PASSPHRASE, { mode: 0o600 });
    const cofferBin = path.resolve(__dirname, "../../bin/coffer.js");
    const cli = spawn(process.execPath, [cofferBin, "verify"], { env: agentEnv(), stdio: "ignore" });
    const code = await new Promise((resolve) => cli.once("exit", resolve));
    expect(code).toBe(2); // usage: no --manifest
    expect(await fs.readdir(agentTmp())).toEqual([]);
  });
});
