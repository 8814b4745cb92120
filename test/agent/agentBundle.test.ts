import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, promises as fs, rmSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { cofferVersion } from "../../provider/agent/agentVersion";
import { AGENT_PROTOCOL_VERSION, AgentResult } from "../../provider/agent/protocol";
import { provider } from "../../provider/backupSet";
import { AGENT_BUNDLE_PATH } from "../../provider/backupSet/agentBundle";
import type { RemoteAgent } from "../../provider/backupSet/remoteAgent";
import { makeRawDisk } from "../support/disks";
import { TestSshd, startSshd } from "../support/sshd";
import { watchCommandLines } from "../support/stackProject";
import { makeTarget } from "../support/targets";

jest.setTimeout(180_000);
const execFileAsync = promisify(execFile);
const PASSPHRASE = "bundle-test-passphrase-5812";
const repoRoot = path.resolve(__dirname, "../..");
const bundleFile = path.join(repoRoot, AGENT_BUNDLE_PATH);
const nodeDir = path.dirname(process.execPath);
const work = mkdtempSync(path.join(os.tmpdir(), "coffer-bundle-"));
const saved = { ...process.env };
const started: TestSshd[] = [];
let bundleHash: string;

const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex");

interface Host {
  sshd: TestSshd;
  alias: string;
  /** The folder its PATH starts with (empty: no coffer-agent on the PATH). */
  bin: string;
  /** XDG_CACHE_HOME of its ssh sessions. */
  cache: string;
  /** Where the bundle goes on it. */
  cached: string;
}

/** A "host": an sshd whose sessions have their own cache folder, and `path` (default: `bin`, node's, the system's). */
async function startHost(alias: string, pathOf = (bin: string) => `${bin}:${nodeDir}:/usr/bin:/bin`): Promise<Host> {
  const dir = path.join(work, alias);
  const bin = path.join(dir, "bin");
  const cache = path.join(dir, "cache");
  await fs.mkdir(bin, { recursive: true });
  const sshd = await startSshd(path.join(dir, "ssh"), alias, { env: { PATH: pathOf(bin), XDG_CACHE_HOME: cache } });
  started.push(sshd);
  process.env.COFFER_SSH_CONFIG = sshd.configFile;
  return { sshd, alias, bin, cache, cached: path.join(cache, "coffer/agent", bundleHash, "coffer-agent.js") };
}

type FirstUse = { agent: RemoteAgent; version: AgentResult<"version"> } | { error: { code: string; message: string } };

/** What a new provider process does on `host`: finds (or installs) the agent, then asks its version through it. */
async function inNewProcess(host: Host, env: Record<string, string> = {}): Promise<FirstUse> {
  const dist = (module: string) => JSON.stringify(path.join(repoRoot, "dist/provider/backupSet", module));
  const script = [
    `const { remoteAgent } = require(${dist("remoteAgent.js")});`,
    `const { agentClient } = require(${dist("agentClient.js")});`,
    "const host = process.argv[1];",
    "(async () => {",
    "  const agent = await remoteAgent(host);",
    '  const version = await agentClient(host).call("version", {});',
    "  process.stdout.write(JSON.stringify({ agent, version }));",
    "})().catch((e) => process.stdout.write(JSON.stringify({ error: { code: e.code, message: e.message } })));",
  ].join("\n");
  const { COFFER_REMOTE_AGENT: _, ...inherited } = process.env;
  const provider = execFileAsync(process.execPath, ["-e", script, host.alias], {
    env: { ...inherited, COFFER_SSH_CONFIG: host.sshd.configFile, ...env },
  });
  provider.child.stdin?.end();
  return JSON.parse((await provider).stdout);
}

/** A coffer-agent on the host's PATH that notes each command it is given in `<bin>/commands`. */
async function installOnPath(host: Host, body: string): Promise<string> {
  const log = path.join(host.bin, "commands");
  await fs.writeFile(path.join(host.bin, "coffer-agent"), `#!/bin/sh\necho "$1" >> ${log}\n${body}\n`, { mode: 0o755 });
  return log;
}
const commandsGiven = async (log: string) => (await fs.readFile(log, "utf8")).trim().split("\n");

/** What is in the bundle's folder on the host: the bundle alone, no temporary file left. */
const cacheFolder = (host: Host) => fs.readdir(path.dirname(host.cached));

beforeAll(async () => {
  bundleHash = await sha256(bundleFile);
  delete process.env.COFFER_REMOTE_AGENT;
});
afterAll(async () => {
  process.env = saved;
  for (const sshd of started) await sshd.stop();
  rmSync(work, { recursive: true, force: true });
});

describe("the agent bundle", () => {
  test("runs alone with node, copied into an empty folder outside the repository", async () => {
    const alone = mkdtempSync(path.join(os.tmpdir(), "coffer-alone-"));
    try {
      await fs.copyFile(bundleFile, path.join(alone, "coffer-agent.js"));
      for (let dir = alone; dir !== path.dirname(dir); dir = path.dirname(dir)) {
        expect(existsSync(path.join(dir, "node_modules"))).toBe(false);
      }
      const { NODE_PATH: _, ...env } = process.env;
      const agent = execFileAsync(process.execPath, ["coffer-agent.js", "version"], { cwd: alone, env });
      agent.child.stdin?.end();
      const { stdout } = await agent;
      const reply = JSON.parse(stdout);
      expect(reply).toMatchObject({ ok: true, protocol: AGENT_PROTOCOL_VERSION, result: { coffer: cofferVersion() } });
      expect(reply.result.qemu).toMatch(/^\d+\.\d+/);
    } finally {
      rmSync(alone, { recursive: true, force: true });
    }
  });
});

describe("a host with Node.js and QEMU but no coffer-agent (a real sshd on 127.0.0.1)", () => {
  test("gets the bundle at first use; a set's backups, verify and delete run through it", async () => {
    const host = await startHost("kvm-bare");
    expect(existsSync(host.cached)).toBe(false);
    const target = path.join(work, "target");
    await makeTarget(target);
    const disks = [path.join(work, "there-1.raw"), path.join(work, "there-2.raw")];
    for (const disk of disks) await makeRawDisk(disk, 4);
    const input = {
      policy: {
        id: "p",
        zone: "zone-b",
        target: { kind: "directory", path: target },
        compression: "zstd",
        integrityCheck: "full",
        bandwidthLimitMiBps: 0,
        encrypted: true,
      },
      keys: { passphrase: PASSPHRASE, manifestKey: "a2V5" },
      // Two at once: their first calls share one check (and install) of the host.
      sources: disks.map((disk, i) => ({ name: `there-${i + 1}`, disk, host: host.alias })),
      trigger: "t1",
      deleteBackupsOnDestroy: true,
      concurrency: 2,
    };
    const checked = (await provider.check({}, input)).inputs;
    const { result, commandLines } = await watchCommandLines(() => provider.create(checked));
    expect(await sha256(host.cached)).toBe(bundleHash);
    expect(await cacheFolder(host)).toEqual(["coffer-agent.js"]);
    // The bundle is its owner's alone: nobody else may change the code that handles the keys.
    expect((await fs.stat(host.cached)).mode & 0o077).toBe(0);
    expect((await fs.stat(path.dirname(host.cached))).mode & 0o077).toBe(0);
    expect([...commandLines].some((l) => l.includes(`${host.cached} backup-item`))).toBe(true);
    expect([...commandLines].filter((l) => l.includes(PASSPHRASE))).toEqual([]);
    expect(result.outs.items.map((i: { name: string; via: string }) => [i.name, i.via])).toEqual([
      ["there-1", host.alias],
      ["there-2", host.alias],
    ]);
    expect((await provider.read(result.id, result.outs)).props.verification.status).toBe("ok");
    await provider.delete(result.id, result.outs);
    expect(await fs.readdir(target)).toEqual([".coffer"]);
  });

  test("a new provider process finds the bundle in the host's cache and uploads nothing", async () => {
    const host = await startHost("kvm-again");
    const first = await inNewProcess(host);
    expect(first).toMatchObject({ agent: { kind: "bundle", uploaded: true }, version: { coffer: cofferVersion() } });
    const installed = await fs.stat(host.cached);
    const again = await inNewProcess(host);
    expect(again).toMatchObject({ agent: { kind: "bundle", uploaded: false }, version: { coffer: cofferVersion() } });
    // An upload renames a new file into place: the same inode is the same file.
    expect((await fs.stat(host.cached)).ino).toBe(installed.ino);
    expect(await cacheFolder(host)).toEqual(["coffer-agent.js"]);
  });

  test("a damaged cached bundle is found and replaced", async () => {
    const host = await startHost("kvm-damaged");
    await inNewProcess(host);
    const bytes = await fs.readFile(host.cached);
    await fs.writeFile(host.cached, bytes.subarray(0, bytes.length >> 1));
    const replaced = await inNewProcess(host);
    expect(replaced).toMatchObject({ agent: { kind: "bundle", uploaded: true }, version: { coffer: cofferVersion() } });
    expect(await sha256(host.cached)).toBe(bundleHash);
    expect(await cacheFolder(host)).toEqual(["coffer-agent.js"]);
  });

  test("three processes installing at once each get a working agent and leave one intact bundle", async () => {
    const host = await startHost("kvm-race");
    const uses = await Promise.all([inNewProcess(host), inNewProcess(host), inNewProcess(host)]);
    for (const use of uses)
      expect(use).toMatchObject({ agent: { kind: "bundle" }, version: { coffer: cofferVersion() } });
    expect(uses.some((use) => "agent" in use && use.agent.uploaded)).toBe(true);
    expect(await sha256(host.cached)).toBe(bundleHash);
    expect(await cacheFolder(host)).toEqual(["coffer-agent.js"]);
  });

  test("without Node.js on the host the error says what to install, and nothing is uploaded", async () => {
    // Only sh on its PATH (ssh runs the login shell by its full path).
    const host = await startHost("kvm-nonode", (bin) => bin);
    await fs.symlink("/bin/sh", path.join(host.bin, "sh"));
    expect(await inNewProcess(host)).toEqual({
      error: {
        code: "AGENT_UNAVAILABLE",
        message: expect.stringMatching(
          new RegExp(
            "^Node.js is missing on host kvm-nonode \\(no node on its PATH\\): " +
              "install the nodejs package there \\(Node.js 18\\.19\\.0 or newer",
          ),
        ),
      },
    });
    expect(existsSync(host.cache)).toBe(false);
  });

  test("a cache folder that can't be made fails naming the folder, the host and what to do", async () => {
    const host = await startHost("kvm-nocache");
    await fs.writeFile(host.cache, "a file where the cache folder would be\n");
    const use = await inNewProcess(host);
    const where = `in ${path.dirname(host.cached)} on host kvm-nocache`;
    expect(use).toEqual({
      error: {
        code: "AGENT_UNAVAILABLE",
        message: expect.stringContaining(`coffer-agent ${cofferVersion()} could not be installed ${where}: `),
      },
    });
    expect("error" in use && use.error.message).toMatch(
      /Not a directory.*: make that folder writable for the ssh user/,
    );
  });
});

describe("a host with a coffer-agent on its PATH", () => {
  test.each([
    ["of an older Coffer", { ok: true, protocol: AGENT_PROTOCOL_VERSION, result: { qemu: "7", coffer: "0.0.1" } }],
    ["that does not say its version (an older Coffer)", { ok: true, protocol: AGENT_PROTOCOL_VERSION, result: {} }],
    ["of another protocol", { ok: true, protocol: AGENT_PROTOCOL_VERSION + 1, result: { coffer: "99.0.0" } }],
  ])("one %s: the bundle is installed and used instead", async (_, reply) => {
    const host = await startHost(`kvm-old-${started.length}`);
    const log = await installOnPath(host, `echo '${JSON.stringify(reply)}'`);
    const use = await inNewProcess(host);
    expect(use).toMatchObject({ agent: { kind: "bundle", uploaded: true }, version: { coffer: cofferVersion() } });
    expect(await sha256(host.cached)).toBe(bundleHash);
    // Asked its version once, by the probe, and given no command after it.
    expect(await commandsGiven(log)).toEqual(["version"]);
  });

  test("one of this Coffer version is used as it is, and no bundle is installed", async () => {
    const host = await startHost("kvm-same");
    const agent = path.join(repoRoot, "bin/coffer-agent.js");
    const log = await installOnPath(host, `exec ${process.execPath} ${agent} "$@"`);
    const use = await inNewProcess(host);
    expect(use).toMatchObject({ agent: { kind: "installed", uploaded: false }, version: { coffer: cofferVersion() } });
    expect(await commandsGiven(log)).toEqual(["version", "version"]);
    expect(existsSync(host.cache)).toBe(false);
  });

  test("COFFER_REMOTE_AGENT overrides it: nothing is probed or installed", async () => {
    const host = await startHost("kvm-override");
    const log = await installOnPath(host, "exit 1");
    const agent = `${process.execPath} ${path.join(repoRoot, "bin/coffer-agent.js")}`;
    const use = await inNewProcess(host, { COFFER_REMOTE_AGENT: agent });
    expect(use).toMatchObject({ agent: { kind: "override", command: agent }, version: { coffer: cofferVersion() } });
    expect(existsSync(log)).toBe(false);
    expect(existsSync(host.cache)).toBe(false);
  });
});
