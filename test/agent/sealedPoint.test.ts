import { promises as fs } from "node:fs";
import * as path from "node:path";
import { fileSha256 } from "../../provider/agent/image";
import { readManifest } from "../../provider/agent/manifest";
import { AgentClient, agentClient } from "../../provider/backupSet/agentClient";
import { SealFor, planPoint, sealedForRecipients } from "../../provider/backupSet/plan";
import { backupSetInputs } from "../../provider/backupSet/schema";
import { takePoint } from "../../provider/backupSet/take";
import { parseRecipientKey } from "../../provider/escrow/envelope";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { PemPair, rsaPair, x25519Pair } from "../support/escrowKeys";
import { ed25519Pair } from "../support/signingKeys";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const PASSPHRASE = "the policy's passphrase, sealed-point test";
const tempDir = useTempDir();
const signing = ed25519Pair();
const [drTeam, security, cto, stranger] = [x25519Pair(), rsaPair(), x25519Pair(), x25519Pair()];

/** Writes `text` to a file of its own in the test's folder (mode 0600) and returns its path. */
async function file(name: string, text: string): Promise<string> {
  const at = path.join(tempDir(), name);
  await fs.writeFile(at, text, { mode: 0o600 });
  return at;
}

const recipients = (pairs: Record<string, PemPair>): SealFor["recipients"] =>
  Object.entries(pairs).map(([name, pair]) => {
    const parsed = parseRecipientKey(pair.publicKey);
    if (!parsed.ok) throw new Error(parsed.reason);
    return { name, key: parsed.key };
  });

/**
 * Takes a point of an 8 MiB disk sealed for `sealFor`, as FinalStateBackup will (without: a plain
 * encrypted point, as EncryptedBackupSet takes it); its disk, manifest and log.
 */
async function takeSealedPoint(sealFor?: SealFor) {
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  const disk = path.join(tempDir(), "vda.raw");
  await makeRawDisk(disk, 8);
  const inputs = backupSetInputs.parse({
    policy: {
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: target },
      compression: "zstd",
      integrityCheck: "metadata",
      bandwidthLimitMiBps: 0,
      encrypted: true,
    },
    keys: { passphrase: PASSPHRASE, signingKey: signing.privateKey },
    sources: [{ name: "vda", disk }],
    trigger: "final",
  });
  const plain = planPoint(inputs, { setId: "final-vm-1", pointId: "p-1" });
  const plan = sealFor ? await sealedForRecipients(plain, sealFor) : plain;
  const log: string[] = [];
  const taken = await takePoint(plan, {
    agent: agentClient,
    now: () => new Date(),
    progress: (message) => log.push(message),
  });
  return { disk, taken, pointKey: plan.keys.passphrase!, log };
}

describe("a point sealed for recipients, taken with qemu-img and opened with the coffer CLI", () => {
  test("a recipient's private key (X25519 or RSA) verifies and restores it byte for byte; the passphrase can't", async () => {
    const sealFor = { recipients: recipients({ "dr-team": drTeam, security }), threshold: 1 };
    const { disk, taken, pointKey, log } = await takeSealedPoint(sealFor);
    const text = await fs.readFile(taken.manifestPath, "utf8");
    const read = readManifest(text);
    if (!read.ok) throw new Error(read.problem);
    expect(read.manifest).toMatchObject({
      schemaVersion: 5,
      keySource: "recipients",
      policy: { encrypted: true },
      signing: { keyFingerprint: expect.stringMatching(/^SHA256:/) },
      items: [{ name: "vda", format: "qcow2-in-luks", encrypted: true }],
    });
    expect(read.manifest.sealedKey?.recipients.map((r) => r.name)).toEqual(["dr-team", "security"]);
    // The point's key is nowhere in clear: not in the manifest, not in the log.
    expect(text).not.toContain(pointKey);
    expect(log.join("\n")).not.toContain(pointKey);

    const manifest = taken.manifestPath;
    const publicKey = await file("signing.pub", signing.publicKey);
    for (const [name, pair] of [
      ["dr-team", drTeam],
      ["security", security],
    ] as const) {
      const key = await file(`${name}.pem`, pair.privateKey);
      const verified = await runCoffer([
        "verify",
        "--manifest",
        manifest,
        "--full",
        "--key",
        key,
        "--public-key",
        publicKey,
      ]);
      expect([name, verified.code, verified.stderr]).toEqual([name, 0, expect.any(String)]);
      const report = JSON.parse(verified.stdout);
      expect(report).toMatchObject({ status: "ok", level: "full" });
      expect(report.checked).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^the manifest's Ed25519 signature/),
          "the manifest's HMAC, with the point's key (a recipient's private key opens it)",
          "each item's guest data: its SHA-256",
        ]),
      );
      const to = path.join(tempDir(), `restored-${name}.raw`);
      const restored = await runCoffer(["restore", "--manifest", manifest, "--item", "vda", "--to", to, "--key", key]);
      expect([name, restored.code, restored.stderr]).toEqual([name, 0, expect.any(String)]);
      expect(JSON.parse(restored.stdout)).toMatchObject({ restored: "vda", to, format: "raw" });
      expect(await fileSha256(to)).toBe(await fileSha256(disk));
      expect(`${verified.stdout}${verified.stderr}${restored.stdout}${restored.stderr}`).not.toContain(pointKey);
      // `coffer point-key` writes the point's key for qemu-img alone, and says nothing of it.
      const keyOut = path.join(tempDir(), `${name}-point.key`);
      const written = await runCoffer(["point-key", "--manifest", manifest, "--key", key, "--out", keyOut]);
      expect([name, written.code, written.stdout]).toEqual([name, 0, ""]);
      expect(written.stderr).not.toContain(pointKey);
      expect(await fs.readFile(keyOut, "utf8")).toBe(pointKey);
    }

    // The policy's passphrase, given or in the environment, opens nothing of it.
    const to = path.join(tempDir(), "refused.raw");
    const restore = ["restore", "--manifest", manifest, "--item", "vda", "--to", to];
    const opensWith =
      /this point is sealed for recipients \(dr-team, security\): it opens with a recipient's private key/;
    const withPassphrase = await runCoffer([...restore, "--passphrase-file", await file("pass.txt", PASSPHRASE)]);
    expect(withPassphrase).toMatchObject({ code: 2, stdout: "" });
    expect(withPassphrase.stderr).toMatch(opensWith);
    expect(withPassphrase.stderr).toMatch(/not with a passphrase or manifest key/);
    const withoutKey = await runCoffer(restore, { COFFER_PASSPHRASE: PASSPHRASE });
    expect(withoutKey).toMatchObject({ code: 2, stdout: "" });
    expect(withoutKey.stderr).toMatch(opensWith);
    expect(withoutKey.stderr).toMatch(/give it with --key <private\.pem>/);
    const verifyWithPassphrase = await runCoffer(["verify", "--manifest", manifest, "--passphrase-stdin"]);
    expect(verifyWithPassphrase).toMatchObject({ code: 2, stdout: "" });
    expect(verifyWithPassphrase.stderr).toMatch(opensWith);
    await expect(fs.access(to)).rejects.toMatchObject({ code: "ENOENT" });

    // A key of no recipient is refused, naming who may open it.
    const strangers = await runCoffer([...restore, "--key", await file("stranger.pem", stranger.privateKey)]);
    expect(strangers).toMatchObject({ code: 1, stdout: "" });
    expect(strangers.stderr).toMatch(/is not one of this point's key's recipients \(dr-team, security\)/);

    // The public key alone checks the signature; the HMAC and the encrypted data wait for a recipient.
    const signatureOnly = await runCoffer(["verify", "--manifest", manifest, "--public-key", publicKey]);
    expect(signatureOnly.code).toBe(0);
    expect(JSON.parse(signatureOnly.stdout).notChecked).toEqual(
      expect.arrayContaining(["the manifest's HMAC: it needs the point's key (a recipient's private key opens it)"]),
    );
  });

  test("--key is refused for a point not sealed for recipients; its passphrase restores it", async () => {
    const { disk, taken } = await takeSealedPoint();
    expect(taken.manifest).toMatchObject({ schemaVersion: 6, keySource: "passphrase" });
    const to = path.join(tempDir(), "restored.raw");
    const restore = ["restore", "--manifest", taken.manifestPath, "--item", "vda", "--to", to];
    const withKey = await runCoffer([...restore, "--key", await file("dr-team.pem", drTeam.privateKey)]);
    expect(withKey).toMatchObject({ code: 2, stdout: "" });
    expect(withKey.stderr).toMatch(/--key opens points sealed for recipients, and this one is not/);
    expect(await runCoffer(restore, { COFFER_PASSPHRASE: PASSPHRASE })).toMatchObject({ code: 0 });
    expect(await fileSha256(to)).toBe(await fileSha256(disk));
  });

  test("an agent too old for schema 5 manifests is refused before any backup, naming the fix", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const inputs = backupSetInputs.parse({
      policy: {
        id: "zone-a-1",
        zone: "zone-a",
        target: { kind: "directory", path: target },
        compression: "zstd",
        integrityCheck: "metadata",
        bandwidthLimitMiBps: 0,
        encrypted: true,
      },
      keys: { passphrase: PASSPHRASE },
      sources: [{ name: "vda", disk: path.join(tempDir(), "never-read.raw") }],
      trigger: "final",
    });
    const sealFor = { recipients: recipients({ "dr-team": drTeam }), threshold: 1 };
    const plan = await sealedForRecipients(planPoint(inputs, { setId: "final-vm-1", pointId: "p-1" }), sealFor);
    const calls: string[] = [];
    // The real agent, answering `version` as one before schema 5 does: without manifestSchema.
    const olderAgent = (host: string | undefined): AgentClient => {
      const real = agentClient(host);
      return {
        where: real.where,
        call: (async (command: string, request: object, options?: object) => {
          calls.push(command);
          const result = await real.call(command as "version", request as {}, options);
          if (command !== "version") return result;
          const { manifestSchema: _newer, ...older } = result;
          return older;
        }) as AgentClient["call"],
      };
    };
    const taking = takePoint(plan, { agent: olderAgent, now: () => new Date(), progress: () => undefined });
    await expect(taking).rejects.toMatchObject({
      code: "AGENT_PROTOCOL_MISMATCH",
      message:
        "coffer-agent on this machine writes manifests up to schema 4 (an older Coffer); a point sealed for " +
        "recipients needs schema 5: install the same coffer version where Pulumi runs and on every host",
    });
    expect(calls).toEqual(["check-target", "version"]);
    await expect(fs.access(plan.pointDir)).rejects.toMatchObject({ code: "ENOENT" });
  });

  test("threshold 2 of 3: two recipients' keys restore it, one is not enough", async () => {
    const sealFor = { recipients: recipients({ "dr-team": drTeam, security, cto }), threshold: 2 };
    const { disk, taken } = await takeSealedPoint(sealFor);
    const keys = {
      drTeam: await file("dr-team.pem", drTeam.privateKey),
      security: await file("security.pem", security.privateKey),
      cto: await file("cto.pem", cto.privateKey),
    };
    const to = path.join(tempDir(), "restored.raw");
    const restore = ["restore", "--manifest", taken.manifestPath, "--item", "vda", "--to", to];
    const one = await runCoffer([...restore, "--key", keys.security]);
    expect(one).toMatchObject({ code: 1, stdout: "" });
    expect(one.stderr).toMatch(/this point's key needs keys of 2 recipients; got 1/);
    const oneMissing = await runCoffer(restore);
    expect(oneMissing.stderr).toMatch(/give it with --key <private\.pem> \(2 of them: repeat --key\)/);
    const two = await runCoffer([...restore, "--key", keys.cto, "--key", keys.security]);
    expect([two.code, two.stderr]).toEqual([0, expect.any(String)]);
    expect(await fileSha256(to)).toBe(await fileSha256(disk));
  });
});
