import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { AGENT_PROTOCOL_VERSION } from "../../provider/agent/protocol";
import { provider } from "../../provider/backupSet";
import { agentClient } from "../../provider/backupSet/agentClient";
import { makeRawDisk } from "../support/disks";
import { TestSshd, startSshd } from "../support/sshd";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(120_000);
const SECRET = "protocol-test-passphrase-4410";
const tempDir = useTempDir();
const repoRoot = path.resolve(__dirname, "../..");
let sshd: TestSshd;
const saved = { ...process.env };

/** An agent of another Coffer on the "remote" host: it answers every command with `reply`. */
async function useRemoteAgent(reply: object, exitCode = 0): Promise<void> {
  const script = path.join(tempDir(), "other-agent.js");
  const body = [
    "process.stdin.resume();",
    `process.stdin.on("end", () => { process.stdout.write(${JSON.stringify(JSON.stringify(reply))} + "\\n");`,
    `process.exitCode = ${exitCode}; });`,
  ].join("\n");
  await fs.writeFile(script, body);
  process.env.COFFER_REMOTE_AGENT = `${process.execPath} ${script}`;
}

beforeAll(async () => {
  sshd = await startSshd(path.join(os.tmpdir(), `coffer-sshd-protocol-${process.pid}`));
  process.env.COFFER_SSH_CONFIG = sshd.configFile;
});
afterAll(async () => {
  process.env = saved;
  await sshd?.stop();
});

const target = () => ({ path: path.join(tempDir(), "target") });
const OLDER =
  /^coffer-agent on host kvm-07 speaks protocol 1 \(an older Coffer\); this provider needs 4: install the same coffer version where Pulumi runs and on every host$/;

describe("a provider and an agent of different Coffer versions", () => {
  test("an older agent (replies without protocol) is named, with what to do", async () => {
    await useRemoteAgent({ ok: true, result: { targetId: "0".repeat(32) } });
    const error = await agentClient(sshd.alias)
      .call("check-target", { target: target() })
      .catch((e) => e);
    expect(error).toMatchObject({ code: "AGENT_PROTOCOL_MISMATCH", message: expect.stringMatching(OLDER) });
  });

  test("an older agent that does not know the command says the same, not 'unknown command'", async () => {
    const unknown = 'unknown command "check-target": use one of backup-item, version';
    await useRemoteAgent({ ok: false, error: { code: "INVALID_INPUT", message: unknown } }, 2);
    const error = await agentClient(sshd.alias)
      .call("check-target", { target: target() })
      .catch((e) => e);
    expect(error).toMatchObject({ code: "AGENT_PROTOCOL_MISMATCH", message: expect.stringMatching(OLDER) });
  });

  test("a newer agent is named too", async () => {
    await useRemoteAgent({ ok: true, protocol: 5, result: { qemu: "9", node: "v30" } });
    const error = await agentClient(sshd.alias)
      .call("version", {})
      .catch((e) => e);
    expect(error).toMatchObject({
      code: "AGENT_PROTOCOL_MISMATCH",
      message: expect.stringMatching(
        /^coffer-agent on host kvm-07 speaks protocol 5 \(a newer Coffer\); this provider/,
      ),
    });
  });

  test("a set with a source on a host with an older agent fails naming the source, the host and the fix", async () => {
    await useRemoteAgent({ ok: true, result: { targetId: "0".repeat(32) } });
    const dir = target().path;
    await makeTarget(dir);
    const disk = path.join(tempDir(), "there.raw");
    await makeRawDisk(disk, 4);
    const input = {
      policy: {
        id: "p",
        zone: "zone-p",
        target: { kind: "directory", path: dir },
        compression: "none",
        integrityCheck: "none",
        bandwidthLimitMiBps: 0,
        encrypted: true,
      },
      keys: { passphrase: SECRET, manifestKey: "a2V5" },
      sources: [{ name: "there", disk, host: sshd.alias }],
      trigger: "t1",
    };
    const error = await provider.create((await provider.check({}, input)).inputs).catch((e) => e);
    expect(error.code).toBe("AGENT_PROTOCOL_MISMATCH");
    expect(error.message).toMatch(/source there: coffer-agent on host kvm-07 speaks protocol 1 \(an older Coffer\)/);
    expect(error.message).not.toContain(SECRET);
    expect(await fs.readdir(dir)).toEqual([".coffer"]);
  });
});

describe("this coffer-agent", () => {
  test("replies with its protocol version, and the client takes its result", async () => {
    const reply = await agentReply("version", "{}");
    expect(reply).toMatchObject({ ok: true, protocol: AGENT_PROTOCOL_VERSION, result: { node: process.version } });
    expect(await agentClient(undefined).call("version", {})).toMatchObject({ qemu: expect.any(String) });
  });

  test("checks a request before any work: INVALID_INPUT names the field, never a secret", async () => {
    await makeTarget(target().path);
    const request = {
      target: target(),
      zoneDir: path.join(target().path, "sets", "zone-a"),
      setId: "set-1",
      name: "d",
      source: { disk: "images/d.raw" },
      compression: "none",
      encrypted: true,
      bandwidthLimitMiBps: 0,
      integrityCheck: "none",
      passphrase: SECRET,
    };
    const error = await agentClient(undefined)
      .call("backup-item", request as never)
      .catch((e) => e);
    expect(error).toMatchObject({ code: "INVALID_INPUT", message: expect.stringMatching(/^source\.disk: /) });
    expect(error.message).toMatch(/disk must be an absolute path/);
    expect(error.message).not.toContain(SECRET);
    // Nothing was started: no set folder.
    expect(await fs.readdir(target().path)).toEqual([".coffer"]);
    const unknownKind = await agentReply("backup-item", JSON.stringify({ ...request, source: { volume: "v1" } }));
    expect(unknownKind).toMatchObject({
      ok: false,
      protocol: AGENT_PROTOCOL_VERSION,
      error: { code: "INVALID_INPUT" },
    });
  });

  test("a request that is not JSON is refused without quoting it (it may hold a secret)", async () => {
    const reply = await agentReply("verify-set", `{"manifestSecret": "${SECRET}", `);
    expect(reply).toEqual({
      ok: false,
      protocol: AGENT_PROTOCOL_VERSION,
      error: { code: "INVALID_INPUT", message: "the request on stdin is not valid JSON" },
    });
  });

  test("an unknown command carries the protocol, so a newer provider can tell", async () => {
    expect(await agentReply("prune-sets", "{}")).toMatchObject({
      ok: false,
      protocol: AGENT_PROTOCOL_VERSION,
      error: { code: "INVALID_INPUT", message: expect.stringMatching(/^unknown command "prune-sets"/) },
    });
  });
});

/** The real coffer-agent's reply to `stdin`, as parsed JSON. */
async function agentReply(command: string, stdin: string): Promise<unknown> {
  const agent = spawn(process.execPath, [path.join(repoRoot, "bin/coffer-agent.js"), command], { stdio: "pipe" });
  let out = "";
  agent.stdout!.on("data", (c) => (out += c));
  agent.stdin!.end(stdin);
  await new Promise((r) => agent.once("exit", r));
  return JSON.parse(out);
}
