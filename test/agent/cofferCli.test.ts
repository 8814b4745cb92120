import * as path from "node:path";
import { fileSha256 } from "../../provider/agent/image";
import { provider } from "../../provider/backupSet";
import { makeRawDisk } from "../support/disks";
import { makeTarget } from "../support/targets";
import { runCoffer } from "../support/cofferCli";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const PASSPHRASE = "cli-test-passphrase-17";
const tempDir = useTempDir();

/** `coffer <args>` with the passphrase in the environment. */
const coffer = (args: string[]) => runCoffer(args, { COFFER_PASSPHRASE: PASSPHRASE });

describe("coffer's usage", () => {
  const commands: [string[], string[]][] = [
    [
      ["restore"],
      ["--manifest", "--item", "--to", "--format", "--force", "--quiet", "--passphrase-file", "--passphrase-stdin"],
    ],
    [
      ["verify"],
      [
        "--manifest",
        "--public-key",
        "--full",
        "--quiet",
        "--passphrase-file",
        "--passphrase-stdin",
        "--manifest-key-file",
      ],
    ],
    [
      ["escrow", "recover"],
      ["--store", "--id", "--key", "--version", "--out"],
    ],
    [["sets"], ["--target", "--zone", "--state"]],
    [["point-key"], ["--manifest", "--out", "--passphrase-file", "--passphrase-stdin", "--key"]],
  ];

  test.each(commands)(
    "coffer %j --help and coffer help name every option, with an example",
    async (command, options) => {
      // help takes one command name: the nested escrow recover's is `coffer escrow help recover`.
      const help = [...command.slice(0, -1), "help", command.at(-1)!];
      for (const args of [[...command, "--help"], help]) {
        const { code, stdout, stderr } = await coffer(args);
        expect([args, code, stderr]).toEqual([args, 0, ""]);
        expect(stdout).toMatch(new RegExp(`^Usage: coffer ${command.join(" ")} `));
        for (const option of options) expect(stdout).toMatch(new RegExp(`^  ${option}\\b.* \\w+`, "m"));
        expect(stdout).toMatch(new RegExp(`Example:\\n(  .*\\n)*  .*coffer ${command.join(" ")} `));
      }
    },
  );

  test("coffer --help and coffer help list every command with what it does; exit 0", async () => {
    for (const args of [["--help"], ["help"]]) {
      const { code, stdout } = await coffer(args);
      expect(code).toBe(0);
      for (const command of ["restore", "verify", "escrow", "sets"])
        expect(stdout).toMatch(new RegExp(`^  ${command}\\b.*  \\w+`, "m"));
      expect(stdout).toMatch(/Exit codes: 0 done, 1 failed .*, 2 usage/);
    }
  });

  test("an unknown option, an unknown command or none: the reason and the usage on stderr, exit 2", async () => {
    const unknownOption = await coffer(["restore", "--passphrase", PASSPHRASE]);
    expect(unknownOption).toMatchObject({ code: 2, stdout: "" });
    expect(unknownOption.stderr).toMatch(/^coffer: unknown option '--passphrase'/);
    expect(unknownOption.stderr).toMatch(/Usage: coffer restore --manifest <file>/);
    expect(unknownOption.stderr).not.toContain(PASSPHRASE);
    // A secret typed where none belongs is not echoed.
    const withValue = await coffer(["restore", `--passphrase=${PASSPHRASE}`]);
    expect(withValue).toMatchObject({ code: 2, stdout: "" });
    expect(withValue.stderr).toMatch(/^coffer: unknown option '--passphrase=\.\.\.'/);
    expect(withValue.stderr).not.toContain(PASSPHRASE);

    const unknownCommand = await coffer(["restroe"]);
    expect(unknownCommand).toMatchObject({ code: 2, stdout: "" });
    expect(unknownCommand.stderr).toMatch(/^coffer: unknown command 'restroe'\n\(Did you mean restore\?\)/);

    for (const args of [[], ["escrow"], ["escrow", "open"], ["verify", "extra"], ["restore", "--format", "vmdk"]]) {
      const { code, stderr } = await coffer(args);
      expect([args, code]).toEqual([args, 2]);
      expect(stderr).toMatch(/Usage: coffer/);
    }
    const missing = await coffer(["restore", "--item", "vm-root"]);
    expect(missing).toMatchObject({ code: 2, stdout: "" });
    expect(missing.stderr).toMatch(/^coffer: --manifest is required\n/);
  });
});

describe("coffer restore and verify show progress on stderr; stdout holds only the result", () => {
  test("a restore and a full verify, off a terminal: a plain line every 10%", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "vda.raw");
    await makeRawDisk(disk, 8);
    const checked = await provider.check(
      {},
      {
        policy: {
          id: "zone-a-1",
          zone: "zone-a",
          target: { kind: "directory", path: target },
          compression: "zstd",
          integrityCheck: "none",
          bandwidthLimitMiBps: 0,
          encrypted: true,
        },
        keys: { passphrase: PASSPHRASE },
        sources: [{ name: "vda", disk }],
        trigger: "monday",
      },
    );
    const { outs } = await provider.create(checked.inputs);
    const to = path.join(tempDir(), "restored.raw");

    const restored = await coffer(["restore", "--manifest", outs.manifestPath, "--item", "vda", "--to", to]);
    expect(restored.code).toBe(0);
    expect(JSON.parse(restored.stdout)).toMatchObject({ restored: "vda", to, format: "raw" });
    expect(await fileSha256(to)).toBe(await fileSha256(disk));
    const lines = restored.stderr.trimEnd().split("\n");
    for (const step of ["restore vda", "check restored vda"]) {
      const shown = lines.filter((line) => line.startsWith(`${step}: `));
      expect(shown.at(-1)).toBe(`${step}: 100% (8.0 MiB of 8.0 MiB)`);
      expect(shown.length).toBeGreaterThanOrEqual(2);
      expect(shown.length).toBeLessThanOrEqual(10);
    }
    expect(lines).toContain("restore vda: 50% (4.0 MiB of 8.0 MiB)");
    expect(restored.stderr).not.toMatch(/\r|\x1b/);

    const quiet = ["restore", "--manifest", outs.manifestPath, "--item", "vda", "--to", to, "--force", "--quiet"];
    expect(await coffer(quiet)).toMatchObject({ code: 0, stderr: "" });

    const verified = await coffer(["verify", "--manifest", outs.manifestPath, "--full"]);
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ status: "ok", level: "full" });
    expect(verified.stderr).toMatch(/^verify vda: 100% \(8\.0 MiB of 8\.0 MiB\)$/m);
    expect((await coffer(["verify", "--manifest", outs.manifestPath, "--full", "--quiet"])).stderr).toBe("");
  });
});
