import { promises as fs } from "node:fs";
import * as path from "node:path";
import { provider } from "../../provider/backupSet";
import { makeRawDisk } from "../support/disks";
import { TestSshd, startSshd } from "../support/sshd";
import { watchCommandLines } from "../support/stackProject";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(180_000);
const PASSPHRASE = "remote-test-passphrase-2209";
const tempDir = useTempDir();
const repoRoot = path.resolve(__dirname, "../..");
let sshd: TestSshd;
const saved = { ...process.env };

beforeAll(async () => {
  sshd = await startSshd(path.join(require("node:os").tmpdir(), `coffer-sshd-${process.pid}`));
  process.env.COFFER_SSH_CONFIG = sshd.configFile;
  // On the "remote" host the agent is this checkout's; the ssh session's PATH is sshd's default.
  process.env.COFFER_REMOTE_AGENT = `PATH=${path.dirname(process.execPath)}:$PATH ${process.execPath} ${path.join(repoRoot, "bin/coffer-agent.js")}`;
});
afterAll(async () => {
  process.env = saved;
  await sshd?.stop();
});

describe("sources on another host, over ssh (a real sshd on 127.0.0.1)", () => {
  test("a set that spans this machine and kvm-07, with the passphrase on no command line", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const here = path.join(tempDir(), "here.raw");
    const there = path.join(tempDir(), "there.raw");
    await makeRawDisk(here, 4);
    await makeRawDisk(there, 4);
    const input = {
      policy: {
        id: "p",
        zone: "zone-r",
        target: { kind: "directory", path: target },
        compression: "zstd",
        integrityCheck: "full",
        bandwidthLimitMiBps: 0,
        encrypted: true,
      },
      keys: { passphrase: PASSPHRASE, manifestKey: "a2V5" },
      sources: [
        { name: "here", disk: here },
        { name: "there", disk: there, host: sshd.alias },
      ],
      trigger: "t1",
      // Its destroy deletes the points (the default keeps them): the target is left as it was.
      deleteBackupsOnDestroy: true,
      concurrency: 2,
    };
    const checked = (await provider.check({}, input)).inputs;
    const { result, commandLines, samples } = await watchCommandLines(() => provider.create(checked));
    expect(samples).toBeGreaterThan(5);
    expect([...commandLines].some((l) => l.includes(`-- ${sshd.alias}`))).toBe(true);
    expect([...commandLines].filter((l) => l.includes(PASSPHRASE))).toEqual([]);
    const outs = result.outs;
    expect(outs.items.map((i: { name: string; via: string }) => [i.name, i.via])).toEqual([
      ["here", "local"],
      ["there", sshd.alias],
    ]);
    expect((await provider.read(result.id, outs)).props.verification.status).toBe("ok");
    await provider.delete(result.id, outs);
    expect(await fs.readdir(target)).toEqual([".coffer"]);
  });

  test("an unreachable host is named, with what to check", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const input = {
      policy: {
        id: "p",
        zone: "zone-r",
        target: { kind: "directory", path: target },
        compression: "none",
        integrityCheck: "none",
        bandwidthLimitMiBps: 0,
        encrypted: false,
      },
      keys: { manifestKey: "a2V5" },
      sources: [{ name: "far", disk: "/x.raw", host: "no-such-host.invalid" }],
      trigger: "t1",
    };
    const error = await provider.create((await provider.check({}, input)).inputs).catch((e) => e);
    expect(error).toMatchObject({ code: "HOST_UNREACHABLE" });
    expect(error.message).toMatch(
      /host no-such-host.invalid can't be reached over ssh: .*check the host name, ssh keys/,
    );
  });
});
