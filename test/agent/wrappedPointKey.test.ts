/**
 * Encrypted points keyed by their own random key, which the passphrase wraps (manifest schema 6), with
 * the real agent and QEMU's tools: the LUKS container opens with the point key (no key stretching), not
 * with the passphrase; refresh, `coffer verify` and `coffer restore` open it with the passphrase; and a
 * point of the release before (schema 4: the passphrase keys LUKS and the HMAC) still verifies and
 * restores byte for byte.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { fileSha256 } from "../../provider/agent/image";
import { LUKS_PAYLOAD_OFFSET_BYTES, writeLuksHeader } from "../../provider/agent/luksHeader";
import { pointSecret, readManifest } from "../../provider/agent/manifest";
import { provider } from "../../provider/backupSet";
import { runCoffer } from "../support/cofferCli";
import { makeRawDisk } from "../support/disks";
import { filesContaining } from "../support/secretScan";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(300_000);
const run = promisify(execFile);
const PASSPHRASE = "wrapped-point-key-passphrase-31";
const tempDir = useTempDir();

/** The release before wrapped keys made this point (test/fixtures/point-schema4-encrypted.tar.gz). */
const SCHEMA4 = {
  passphrase: "schema-4-fixture-passphrase",
  manifest: "sets/zone-f/fixture-60505a28/20261127T073627Z-9977/manifest.json",
  /** The 1 MiB disk it holds as item vda. */
  diskSha256: "94ed500150d928e80afc24b37071dfbe521e2cc115823b4d7ec73a7595d7cefe",
};

async function passphraseFile(passphrase: string): Promise<string> {
  const file = path.join(tempDir(), `passphrase-${createHash("sha256").update(passphrase).digest("hex").slice(0, 8)}`);
  await fs.writeFile(file, passphrase, { mode: 0o600 });
  return file;
}

/** Whether `secret` opens the LUKS container (qemu-io reads a sector through it). */
async function opensWith(container: string, secret: string): Promise<boolean> {
  const key = path.join(tempDir(), "luks-key");
  await fs.writeFile(key, secret, { mode: 0o600 });
  const opts = `driver=luks,key-secret=k,file.driver=file,file.filename=${container}`;
  const args = ["--object", `secret,id=k,file=${key}`, "--image-opts", opts, "-c", "read 0 512"];
  return run("qemu-io", args).then(
    () => true,
    () => false,
  );
}

/** The PBKDF iterations of the container's active keyslot (the header says; no key needed). */
async function luksIterations(container: string): Promise<number | undefined> {
  const { stdout } = await run("qemu-img", ["info", "--output=json", "-f", "luks", container]);
  const info = JSON.parse(stdout) as { "format-specific": { data: { slots: { active: boolean; iters?: number }[] } } };
  return info["format-specific"].data.slots.find((s) => s.active)?.iters;
}

/** SHA-256 of a backup's guest data as qemu-img alone writes it out, the README's way. */
async function withQemuImgAlone(container: string, keyFile: string): Promise<string> {
  const out = path.join(tempDir(), "by-qemu-img.raw");
  const opts = `driver=qcow2,file.driver=luks,file.key-secret=k,file.file.filename=${container}`;
  await run("qemu-img", ["convert", "-O", "raw", "--object", `secret,id=k,file=${keyFile}`, "--image-opts", opts, out]);
  return fileSha256(out);
}

describe("an encrypted point keyed by its own random key", () => {
  test("its container opens with no key stretching, and only through the passphrase's wrap", async () => {
    const target = path.join(tempDir(), "target");
    await makeTarget(target);
    const disk = path.join(tempDir(), "vda.raw");
    await makeRawDisk(disk, 8);
    const checked = await provider.check(
      {},
      {
        policy: {
          id: "zone-w-1",
          zone: "zone-w",
          target: { kind: "directory", path: target },
          compression: "zstd",
          integrityCheck: "full",
          bandwidthLimitMiBps: 0,
          encrypted: true,
        },
        keys: { passphrase: PASSPHRASE },
        sources: [{ name: "vda", disk }],
        trigger: "monday",
      },
    );
    expect(checked.failures).toBeUndefined();
    const { id, outs } = await provider.create(checked.inputs);
    const read = readManifest(await fs.readFile(outs.manifestPath, "utf8"));
    if (!read.ok) throw new Error(read.problem);
    expect(read.manifest).toMatchObject({ schemaVersion: 6, keySource: "passphrase", mac: { kdf: "hkdf-sha256" } });
    expect(read.manifest.wrappedKey).toMatchObject({ kdf: "scrypt", cipher: "aes-256-gcm" });

    // The passphrase is not the container's key; the point key is, with LUKS1's minimum of PBKDF2 work.
    const container = path.join(path.dirname(outs.manifestPath), read.manifest.items[0].file);
    const pointKey = (await pointSecret(read.manifest, PASSPHRASE))!;
    expect(await opensWith(container, PASSPHRASE)).toBe(false);
    expect(await opensWith(container, pointKey)).toBe(true);
    // LUKS1's minimum, where QEMU's default (2 s of PBKDF2) counts a million or more here; cryptsetup opens it too.
    expect(await luksIterations(container)).toBe(1000);
    const keyFile = path.join(tempDir(), "point-key");
    await fs.writeFile(keyFile, pointKey, { mode: 0o600 });
    await run("cryptsetup", ["open", "--test-passphrase", "--key-file", keyFile, container]);
    const wrongKey = await passphraseFile("not-the-point-key");
    await expect(run("cryptsetup", ["open", "--test-passphrase", "--key-file", wrongKey, container])).rejects.toThrow(
      /No key available/,
    );
    // The point key is nowhere on the target, in the outputs or on disk around it.
    expect(await filesContaining(target, pointKey)).toEqual([]);
    expect(JSON.stringify(outs)).not.toContain(pointKey);

    // Refresh verifies with the passphrase from state; a wrong one is named.
    expect((await provider.read(id, outs)).props.verification).toMatchObject({ status: "ok", level: "full" });
    const wrong = { ...outs, keys: { passphrase: "not-the-passphrase-at-all" } };
    expect((await provider.read(id, wrong)).props.verification).toMatchObject({
      status: "failed",
      failures: [expect.stringMatching(/the passphrase does not unwrap the point's key/)],
    });

    // Without Pulumi: verify and restore with the passphrase, byte for byte.
    const key = await passphraseFile(PASSPHRASE);
    const verified = await runCoffer(["verify", "--manifest", outs.manifestPath, "--full", "--passphrase-file", key]);
    expect([verified.code, verified.stderr]).toEqual([0, expect.any(String)]);
    const to = path.join(tempDir(), "restored.raw");
    const restored = await runCoffer([
      ...["restore", "--manifest", outs.manifestPath, "--item", "vda", "--to", to, "--quiet"],
      ...["--passphrase-file", key],
    ]);
    expect([restored.code, restored.stderr]).toEqual([0, ""]);
    expect(await fileSha256(to)).toBe(await fileSha256(disk));
    const wrongFile = await passphraseFile("not-the-passphrase-at-all");
    const refused = await runCoffer(["verify", "--manifest", outs.manifestPath, "--passphrase-file", wrongFile]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/the passphrase does not unwrap the point's key/);

    // With qemu-img alone, given the point's key that `coffer point-key` writes.
    const keyOut = path.join(tempDir(), "point.key");
    const written = await runCoffer([
      ...["point-key", "--manifest", outs.manifestPath, "--passphrase-file", key, "--out", keyOut],
    ]);
    expect([written.code, written.stdout, written.stderr]).toEqual([
      0,
      "",
      expect.stringMatching(/^coffer: wrote the key/),
    ]);
    expect((await fs.stat(keyOut)).mode & 0o777).toBe(0o600);
    expect(await fs.readFile(keyOut, "utf8")).toBe(pointKey);
    expect(await withQemuImgAlone(container, keyOut)).toBe(await fileSha256(disk));
  });

  test("the LUKS1 header Coffer writes is what cryptsetup and QEMU make: fresh salts and master key each time", async () => {
    const key = "0123456789abcdef".repeat(4);
    const [a, b] = [path.join(tempDir(), "a.luks"), path.join(tempDir(), "b.luks")];
    for (const file of [a, b]) await writeLuksHeader(file, key);
    expect((await fs.stat(a)).mode & 0o777).toBe(0o600);
    expect((await fs.stat(a)).size).toBe(LUKS_PAYLOAD_OFFSET_BYTES);
    const dump = async (file: string) => (await run("cryptsetup", ["luksDump", file])).stdout;
    const [dumpA, dumpB] = [await dump(a), await dump(b)];
    for (const [field, value] of [
      ["Version", "1"],
      ["Cipher name", "aes"],
      ["Cipher mode", "xts-plain64"],
      ["Hash spec", "sha256"],
      ["Payload offset", "4096"],
      ["MK bits", "512"],
      ["MK iterations", "1000"],
    ]) {
      expect([field, new RegExp(`^${field}:\\s+(.*)$`, "m").exec(dumpA)?.[1]]).toEqual([field, value]);
    }
    expect(dumpA).toMatch(/Key Slot 0: ENABLED\n\s+Iterations:\s+1000\n/);
    expect(dumpA.match(/: DISABLED/g)).toHaveLength(7);
    const digest = (d: string) => /MK digest:\s+(.*)/.exec(d)?.[1];
    expect(digest(dumpA)).not.toBe(digest(dumpB));
    // Data round-trips through QEMU's driver over it.
    await fs.truncate(a, LUKS_PAYLOAD_OFFSET_BYTES + (1 << 20));
    const keyFile = path.join(tempDir(), "k");
    await fs.writeFile(keyFile, key, { mode: 0o600 });
    const opts = `driver=luks,key-secret=k,file.driver=file,file.filename=${a}`;
    const io = ["--object", `secret,id=k,file=${keyFile}`, "--image-opts", opts];
    await run("qemu-io", [...io, "-c", "write -P 0x5a 0 1M"]);
    const { stdout } = await run("qemu-io", [...io, "-c", "read -P 0x5a 0 1M"]);
    expect(stdout).toMatch(/^read 1048576\/1048576 bytes/m);
  });

  test("a point of the release before (schema 4) still verifies and restores byte for byte", async () => {
    const target = path.join(tempDir(), "old-target");
    await fs.mkdir(target);
    await run("tar", ["-xzf", path.resolve(__dirname, "../fixtures/point-schema4-encrypted.tar.gz"), "-C", target]);
    const manifestPath = path.join(target, SCHEMA4.manifest);
    const read = readManifest(await fs.readFile(manifestPath, "utf8"));
    if (!read.ok) throw new Error(read.problem);
    expect(read.manifest).toMatchObject({ schemaVersion: 4, keySource: "passphrase", mac: { kdf: "scrypt" } });
    expect(read.manifest.wrappedKey).toBeUndefined();
    const key = await passphraseFile(SCHEMA4.passphrase);
    const verified = await runCoffer(["verify", "--manifest", manifestPath, "--full", "--passphrase-file", key]);
    expect([verified.code, verified.stdout]).toEqual([0, expect.stringMatching(/"status":\s*"ok"/)]);
    const to = path.join(tempDir(), "old.raw");
    const restored = await runCoffer([
      ...["restore", "--manifest", manifestPath, "--item", "vda", "--to", to, "--quiet"],
      ...["--passphrase-file", key],
    ]);
    expect([restored.code, restored.stderr]).toEqual([0, ""]);
    expect(await fileSha256(to)).toBe(SCHEMA4.diskSha256);
    // Its backups are keyed by the passphrase itself: point-key says so, and qemu-img takes the passphrase.
    const noKey = await runCoffer([
      ...["point-key", "--manifest", manifestPath, "--passphrase-file", key, "--out", path.join(tempDir(), "k")],
    ]);
    expect([noKey.code, noKey.stderr]).toEqual([2, expect.stringMatching(/keyed by the passphrase itself/)]);
    const container = path.join(path.dirname(manifestPath), read.manifest.items[0].file);
    expect(await withQemuImgAlone(container, key)).toBe(SCHEMA4.diskSha256);
  });
});
