import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { makeRawDisk } from "../support/disks";
import { pulumiCliReady } from "../support/pulumiCli";
import { stackProject } from "../support/stackProject";

jest.setTimeout(900_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;
const PASSPHRASE = "KNOWN-hardening-e2e-passphrase-3d";

// One policy and one set of one disk, everything from stack config so a test can move them.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const spec = config.requireObject("spec");
const policy = new coffer.BackupPolicy("gold", {
  zone: spec.zone,
  target: { kind: "directory", path: spec.target },
  encryption: { passphrase: config.requireSecret("passphrase") },
});
const set = new coffer.EncryptedBackupSet("nightly", {
  policy, sources: [{ name: "web-1-root", disk: spec.disk }], trigger: spec.trigger || "2026-11-26",
});
exports.documentPath = policy.documentPath;
exports.setDir = set.setDir;
`;

/** Issue 9's operator mishaps, through the real Pulumi engine. */
describeE2e("hardening end to end: an unmounted NAS, and a failed target change reverted", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let work: string;
  let disk: string;
  const log = { output: "" };
  const record = { onOutput: (out: string) => (log.output += out) };
  const declare = (spec: { zone: string; target: string; disk: string; trigger?: string }) =>
    env.stack.setConfig("spec", { value: JSON.stringify(spec) });
  const resourcesInState = async () =>
    (await env.stack.exportStack()).deployment.resources.map((r: { type: string }) => r.type);

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-hardening-e2e-"));
    disk = path.join(work, "web-1.raw");
    await makeRawDisk(disk, 4);
    env = await stackProject(PROGRAM);
    env.setSecretConfig("passphrase", PASSPHRASE);
  });
  afterAll(async () => {
    await env?.stack.destroy().catch(() => undefined);
    await env?.remove();
    await fs.rm(work, { recursive: true, force: true });
  });

  test("an unmounted NAS (its empty mount point left) is an error on refresh and up: nothing dropped, nothing written", async () => {
    const nas = path.join(work, "nas");
    await fs.mkdir(nas);
    await declare({ zone: "zone-a", target: nas, disk });
    expect((await env.stack.up(record)).summary.result).toBe("succeeded");
    const before = await resourcesInState();

    // Unmount: the share's files go away, the mount point stays.
    await fs.rename(nas, path.join(work, "nas-share"));
    await fs.mkdir(nas);
    let refreshOutput = "";
    await expect(env.stack.refresh({ onOutput: (out) => (refreshOutput += out) })).rejects.toThrow();
    expect(refreshOutput).toMatch(
      new RegExp(`backup target ${nas} has no Coffer target identity .*is the NAS mounted\\?`),
    );
    expect(await resourcesInState()).toEqual(before);
    // A plain up has nothing to do (the state still holds both); with a refresh first it stops there.
    expect((await env.stack.up(record)).summary.resourceChanges).toEqual({ same: 3 });
    await expect(env.stack.up({ ...record, refresh: true })).rejects.toThrow();
    expect(await fs.readdir(nas)).toEqual([]);

    // Mounted again: all is as it was.
    await fs.rmdir(nas);
    await fs.rename(path.join(work, "nas-share"), nas);
    expect((await env.stack.refresh(record)).summary.result).toBe("succeeded");
    expect((await env.stack.preview({ diff: true, ...record })).changeSummary).toEqual({ same: 3 });
  });

  test("a target change whose set fails can be reverted: the old target's document is the resource's own", async () => {
    const first = path.join(work, "first");
    const second = path.join(work, "second");
    await fs.mkdir(first);
    await fs.mkdir(second);
    await declare({ zone: "zone-b", target: first, disk });
    expect((await env.stack.up(record)).summary.result).toBe("succeeded");

    // Moved to a second target, with a source that fails: the new policy is made, the set's point is not.
    await declare({ zone: "zone-b", target: second, disk: path.join(work, "no-such-disk.raw"), trigger: "t2" });
    await expect(env.stack.up(record)).rejects.toThrow(/no-such-disk\.raw/);

    // Back to the first target: before issue 9, "already holds the policy of another BackupPolicy".
    await declare({ zone: "zone-b", target: first, disk });
    const reverted = await env.stack.up(record);
    expect(reverted.summary.result).toBe("succeeded");
    const documentPath = path.join(first, ".coffer", "zones", "zone-b", "policy.json");
    expect(reverted.outputs.documentPath.value).toBe(documentPath);
    const document = JSON.parse(await fs.readFile(documentPath, "utf8"));
    const policy = (await env.stack.exportStack()).deployment.resources.find((r: { urn: string }) =>
      r.urn.endsWith("::gold"),
    );
    expect(document).toMatchObject({ policyId: policy.id, owner: "coffer-e2e/e2e/gold" });
    expect((await env.stack.preview({ diff: true, ...record })).changeSummary).toEqual({ same: 3 });
  });
});
