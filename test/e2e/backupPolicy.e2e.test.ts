import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { pulumiCliReady } from "../support/pulumiCli";
import { Stack, filesContaining, snapshotTree, stackProject, watchCommandLines } from "../support/stackProject";

const PASSPHRASE = "KNOWN-e2e-passphrase-7f3a9c";

// The program a user would write, with its policy taken from stack config so tests can vary it.
const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const config = new pulumi.Config();
const declared = config.requireObject("policy");
const passphrase = config.getSecret("passphrase");
const args = { ...declared };
if (declared.encryption === "from-config") args.encryption = { passphrase };
if (declared.encryption === "unknown-during-preview") {
  // Known only once another resource exists: unknown during the first preview.
  const seed = new coffer.BackupPolicy("seed", { zone: declared.zone + "-seed", target: declared.target });
  args.encryption = { passphrase: pulumi.all([seed.documentPath, passphrase]).apply(([, p]) => p) };
}
const policy = new coffer.BackupPolicy("gold", args);
exports.documentPath = policy.documentPath;
exports.revision = policy.revision;
`;

// Each step runs the real CLI; a whole lifecycle takes tens of seconds on a loaded machine.
jest.setTimeout(300_000);
const describeE2e = pulumiCliReady() ? describe : describe.skip;

describeE2e("BackupPolicy end to end with the real Pulumi CLI", () => {
  let env: Awaited<ReturnType<typeof stackProject>>;
  let stack: Stack;
  let target: string;
  let output = "";

  const setSecretFromStdin = (key: string, value: string) => env.setSecretConfig(key, value);
  const declare = (policy: Record<string, unknown>) => stack.setConfig("policy", { value: JSON.stringify(policy) });
  const gold = (overrides: Record<string, unknown> = {}) => ({
    zone: "zone-a",
    target: { kind: "directory", path: target },
    compression: "zstd",
    encryption: "from-config",
    bandwidthLimitMiBps: 50,
    integrityCheck: "full",
    retention: { keepLast: 7, maxAgeDays: 30 },
    ...overrides,
  });
  const record = { onOutput: (out: string) => (output += out) };
  const docFile = () => path.join(target, ".coffer/zones/zone-a/policy.json");
  const readDoc = async () => JSON.parse(await fs.readFile(docFile(), "utf8"));

  beforeAll(async () => {
    env = await stackProject(PROGRAM);
    stack = env.stack;
    target = path.join(env.root, "target");
    await fs.mkdir(target);
    // Backup data already on the target: nothing Coffer does to the policy may touch it.
    await fs.mkdir(path.join(target, "vm-1"));
    await fs.writeFile(path.join(target, "vm-1", "disk.qcow2"), "backup bytes");
    setSecretFromStdin("passphrase", PASSPHRASE);
  });
  afterAll(async () => {
    await stack?.destroy().catch(() => undefined);
    await env?.remove();
  });

  test("up → idempotent preview → out-of-band edit → refresh shows drift → up restores → destroy leaves nothing", async () => {
    await declare(gold());
    const { result: up, commandLines, samples } = await watchCommandLines(() => stack.up(record));
    expect(up.summary.result).toBe("succeeded");
    expect(up.outputs.documentPath.value).toBe(docFile());
    expect(statSync(docFile()).mode & 0o777).toBe(0o600);
    expect(await readDoc()).toMatchObject({
      zone: "zone-a",
      revision: 1,
      settings: { compression: "zstd", integrityCheck: "full", bandwidthLimitMiBps: 50 },
    });
    expect(samples).toBeGreaterThan(5);
    expect([...commandLines].filter((line) => line.includes("pulumi"))).not.toHaveLength(0);
    expect([...commandLines].filter((line) => line.includes(PASSPHRASE))).toEqual([]);

    const idle = await stack.preview({ diff: true, ...record });
    expect(idle.changeSummary).toEqual({ same: 2 });

    const edited = await readDoc();
    edited.settings.compression = "none";
    edited.settings.encryption = { enabled: false };
    await fs.writeFile(docFile(), JSON.stringify(edited));
    let refreshOutput = "";
    const refresh = await stack.refresh({ onOutput: (out) => ((refreshOutput += out), (output += out)) });
    expect(refresh.summary.resourceChanges).toMatchObject({ update: 1 });
    expect(refreshOutput).toContain("[diff: -encryption~compression]");
    const refreshed = (await stack.exportStack()).deployment.resources.find((r: { urn: string }) =>
      r.urn.endsWith("::gold"),
    );
    expect(refreshed.outputs).toMatchObject({ compression: "none", settings: { encryption: { enabled: false } } });

    let previewOutput = "";
    const drifted = await stack.preview({ diff: true, onOutput: (out) => ((previewOutput += out), (output += out)) });
    expect(drifted.changeSummary).toMatchObject({ update: 1 });
    expect(previewOutput).toMatch(/compression\s*: "none" => "zstd"/);

    const repair = await stack.up(record);
    expect(repair.summary.resourceChanges).toMatchObject({ update: 1 });
    expect((await readDoc()).settings).toMatchObject({
      compression: "zstd",
      encryption: { enabled: true, format: "luks" },
    });
    expect((await stack.preview(record)).changeSummary).toEqual({ same: 2 });

    // The state as stored (Automation API's exportStack would decrypt it: it runs --show-secrets).
    expect(await filesContaining(env.root, PASSPHRASE)).toEqual([]);
    const stored = env.exportedState();
    expect(JSON.stringify(stored)).not.toContain(PASSPHRASE);
    expect(
      stored.deployment.resources.find((r: { urn: string }) => r.urn.endsWith("::gold")).outputs.encryption,
    ).toHaveProperty("ciphertext");
    expect(await fs.readFile(docFile(), "utf8")).not.toContain(PASSPHRASE);

    const { commandLines: destroyLines } = await watchCommandLines(() => stack.destroy(record));
    expect([...destroyLines].filter((line) => line.includes(PASSPHRASE))).toEqual([]);
    // The target's identity stays with the target.
    expect(await fs.readdir(target)).toEqual([".coffer", "vm-1"]);
    expect(await fs.readdir(path.join(target, ".coffer"))).toEqual(["target.json"]);
    expect(await fs.readFile(path.join(target, "vm-1", "disk.qcow2"), "utf8")).toBe("backup bytes");
    expect(output).not.toContain(PASSPHRASE);
  });

  test("a deleted document shows as gone on refresh and is written again by up", async () => {
    await declare(gold());
    await stack.up(record);
    await fs.rm(docFile());
    const refresh = await stack.refresh(record);
    expect(refresh.summary.resourceChanges).toMatchObject({ delete: 1 });
    const up = await stack.up(record);
    expect(up.summary.resourceChanges).toMatchObject({ create: 1 });
    expect((await readDoc()).settings.compression).toBe("zstd");
    await stack.destroy(record);
    expect(output).not.toContain(PASSPHRASE);
  });

  test("a passphrase unknown during preview passes check and is applied by up", async () => {
    await declare(gold({ encryption: "unknown-during-preview" }));
    const preview = await stack.preview(record);
    expect(preview.changeSummary).toMatchObject({ create: 3 });
    await stack.up(record);
    expect((await readDoc()).settings.encryption).toMatchObject({ enabled: true });
    expect(await filesContaining(env.root, PASSPHRASE)).toEqual([]);
    await stack.destroy(record);
  });

  test.each([
    ["encryption without a passphrase", { encryption: {} }, "encryption.passphrase", "required when encryption is set"],
    [
      "a too-short passphrase",
      { encryption: { passphrase: "short-pw" } },
      "encryption.passphrase",
      "at least 12 characters",
    ],
    ["a negative bandwidth", { bandwidthLimitMiBps: -1 }, "bandwidthLimitMiBps", "must not be negative"],
    ["a fractional bandwidth", { bandwidthLimitMiBps: 1.5 }, "bandwidthLimitMiBps", "whole number"],
    ["an unknown compression", { compression: "lz4" }, "compression", 'one of "none", "zstd", "zlib"'],
    ["a relative target path", { target: { kind: "directory", path: "backups" } }, "target.path", "must be absolute"],
    ["a missing target path", { target: { kind: "directory" } }, "target.path", "target.path is required"],
    ["a keepLast below 1", { retention: { keepLast: 0 } }, "retention.keepLast", "at least 1"],
    ["a maxAgeDays below 1", { retention: { maxAgeDays: 0 } }, "retention.maxAgeDays", "at least 1"],
  ])("%s fails at preview, naming the field, before any work", async (_what, change, field, reason) => {
    await declare(gold(change));
    const before = await snapshotTree(target);
    let seen = "";
    const error = await stack.preview({ onOutput: (out) => (seen += out) }).catch((e) => e);
    expect(error).toBeInstanceOf(Error);
    const text = `${seen}\n${error.message}`;
    expect(text).toContain(field);
    expect(text).toContain(reason);
    expect(text).not.toContain("short-pw");
    expect(text).not.toContain(PASSPHRASE);
    expect(await snapshotTree(target)).toEqual(before);
  });
});
