/**
 * A point taken with a policy's signing key, through the real coffer-agent and qemu: the manifest
 * checks with the public key alone (coffer verify --public-key, and refresh with the key state
 * recorded), a changed manifest fails by its signature, and the private key is on no command line
 * and in no file.
 */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { provider } from "../../provider/backupSet";
import { publicKeyOf } from "../../provider/common/signingKey";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { filesContaining } from "../support/secretScan";
import { ed25519Pair } from "../support/signingKeys";
import { watchCommandLines } from "../support/stackProject";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const PASSPHRASE = "signed-manifest-passphrase-29";
const tempDir = useTempDir();
const keyFingerprintOf = (pair: { privateKey: string }) => publicKeyOf(pair.privateKey).fingerprint;

describe("a point signed with the policy's Ed25519 key", () => {
  test("checks with the public key alone; a changed manifest fails by its signature", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "vda.raw");
    await makeRawDisk(disk, 8);
    const signing = ed25519Pair();
    const other = ed25519Pair();
    const publicKeyFile = path.join(tempDir(), "signing.pub");
    const otherKeyFile = path.join(tempDir(), "other.pub");
    const privateKeyFile = path.join(tempDir(), "signing.pem");
    await fs.writeFile(publicKeyFile, signing.publicKey);
    await fs.writeFile(otherKeyFile, other.publicKey);
    const fingerprint = publicKeyOf(signing.privateKey).fingerprint;
    // A line of the key's base64: what would show if any of it leaked.
    const keyBody = signing.privateKey.split("\n")[1];

    const checked = await provider.check(
      {},
      {
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
        trigger: "monday",
      },
    );
    expect(checked.failures).toBeUndefined();
    const { result, commandLines } = await watchCommandLines(() => provider.create(checked.inputs));
    const { id, outs } = result;
    expect([...commandLines].some((l) => l.includes("coffer-agent.js write-manifest"))).toBe(true);
    expect([...commandLines].filter((l) => l.includes(keyBody))).toEqual([]);
    expect(await filesContaining(target, keyBody)).toEqual([]);
    expect(await filesContaining(os.tmpdir(), keyBody)).toEqual([]);
    expect(outs.points[0]).toMatchObject({ signedBy: fingerprint, status: "ok" });
    expect(outs.signers).toEqual([{ pem: signing.publicKey, fingerprint }]);
    const original = await fs.readFile(outs.manifestPath, "utf8");
    expect(JSON.parse(original)).toMatchObject({
      manifest: { signing: { algorithm: "ed25519", keyFingerprint: fingerprint } },
      ed25519Signature: expect.any(String),
    });

    // No passphrase anywhere: the signature and each file's SHA-256 are checked, and it says what was not.
    const verify = (args: string[], env: Record<string, string> = {}) =>
      runCoffer(["verify", "--manifest", outs.manifestPath, "--quiet", ...args], env);
    const byKey = await verify(["--public-key", publicKeyFile]);
    expect(byKey).toMatchObject({ code: 0, stderr: "" });
    expect(JSON.parse(byKey.stdout)).toEqual({
      status: "ok",
      checkedAt: expect.any(String),
      level: "none",
      failures: [],
      checked: [
        `the manifest's Ed25519 signature, with key ${fingerprint}`,
        "the manifest's place: its set's, point's and zone's folder",
        "each item's stored file: its size and SHA-256",
      ],
      notChecked: [
        "the manifest's HMAC: it needs the passphrase",
        "each item's qcow2 metadata and guest data: the backups are encrypted, and that needs the passphrase",
      ],
    });
    // With the passphrase too: everything, as before.
    const withPassphrase = await verify(["--public-key", publicKeyFile, "--full"], { COFFER_PASSPHRASE: PASSPHRASE });
    expect(withPassphrase.code).toBe(0);
    expect(JSON.parse(withPassphrase.stdout)).toMatchObject({
      status: "ok",
      level: "full",
      checked: expect.arrayContaining([
        "the manifest's HMAC, with the passphrase",
        "each item's guest data: its SHA-256",
      ]),
      notChecked: [],
    });
    // Refresh checks it with the key state recorded for the point.
    expect((await provider.read(id, outs)).props.points[0]).toMatchObject({ status: "ok" });

    // Another key's public key: the manifest names its own, and that is said.
    const wrongKey = await verify(["--public-key", otherKeyFile]);
    expect(wrongKey.code).toBe(1);
    expect(JSON.parse(wrongKey.stdout).failures).toEqual([
      `manifest: it is signed with key ${fingerprint}, not with the expected ${keyFingerprintOf(other)}`,
    ]);

    // A recorded hash changed on the target (as someone who swaps a backup would): the public key tells.
    const tampered = JSON.parse(original);
    tampered.manifest.items[0].fileSha256 = "0".repeat(64);
    await fs.writeFile(outs.manifestPath, JSON.stringify(tampered, null, 2));
    const changed = await verify(["--public-key", publicKeyFile]);
    expect(changed.code).toBe(1);
    expect(JSON.parse(changed.stdout)).toMatchObject({
      status: "failed",
      failures: [
        `manifest: its Ed25519 signature (key ${fingerprint}) does not match: the manifest was changed after signing`,
      ],
      notChecked: expect.arrayContaining(["the items: the manifest did not pass"]),
    });
    const drifted = (await provider.read(id, outs)).props;
    // Refresh holds the passphrase too: both the signature and the HMAC are named.
    expect(drifted.points[0]).toMatchObject({
      status: "failed",
      failures: [
        `manifest: its Ed25519 signature (key ${fingerprint}) does not match: the manifest was changed after signing`,
        "manifest: its HMAC does not match: it was changed, or the key is not this set's",
      ],
    });
    expect(drifted.verification.failures[0]).toMatch(new RegExp(`^point ${outs.points[0].id}: manifest: its Ed25519`));

    // The signature stripped: an unsigned manifest fails a check with the public key.
    const stripped = JSON.parse(original);
    delete stripped.ed25519Signature;
    delete stripped.manifest.signing;
    await fs.writeFile(outs.manifestPath, JSON.stringify(stripped, null, 2));
    const unsigned = await verify(["--public-key", publicKeyFile]);
    expect(unsigned.code).toBe(1);
    expect(JSON.parse(unsigned.stdout).failures).toEqual([
      `manifest: it is not signed; it should be signed with ${fingerprint}`,
    ]);

    // The private key given as the public one is a usage error that does not echo it.
    await fs.writeFile(privateKeyFile, signing.privateKey);
    const misused = await verify(["--public-key", privateKeyFile]);
    expect(misused.code).toBe(2);
    expect(misused.stderr).toMatch(/^coffer: --public-key \S+signing\.pem is a private key: give its public key/);
    expect(misused.stderr).not.toContain(keyBody);
  });
});
