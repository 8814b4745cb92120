import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  StoredFormat,
  backupImageOpts,
  checkImage,
  convertDisk,
  fileSha256,
  restoreImage,
  sourceImageOpts,
  sourceInfo,
  streamSha256,
} from "../../provider/agent/image";
import { SecretFd, withSecretFd } from "../../provider/agent/tempFiles";
import { KEY_FD_PATH, run } from "../../provider/agent/tools";
import { PLAINTEXT_MARKER, makeRawDisk } from "../support/disks";
import { killLeftovers, processesMentioning } from "../support/processes";
import { filesContaining } from "../support/secretScan";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(120_000);
const PASSPHRASE = "agent-test-passphrase-91";
const tempDir = useTempDir();
const rawOpts = (disk: string) => sourceImageOpts({ disk, format: "raw", backing: [] });
/** The convert request of a 4 MiB raw disk, unthrottled. */
const small = (source: string, target: string) => ({
  sourceImageOpts: rawOpts(source),
  target,
  virtualSize: 4 << 20,
  bandwidthLimitMiBps: 0,
});

const modes: [string, StoredFormat][] = [
  ["plain", { compression: "none", encrypted: false }],
  ["zstd", { compression: "zstd", encrypted: false }],
  ["zlib", { compression: "zlib", encrypted: false }],
  ["LUKS", { compression: "none", encrypted: true }],
  ["zstd+LUKS", { compression: "zstd", encrypted: true }],
  ["zlib+LUKS", { compression: "zlib", encrypted: true }],
];

describe("the backup data path with Debian's qemu-img", () => {
  test.each(modes)("%s: backup, check, stream hash and restore round trip byte for byte", async (_mode, format) => {
    const source = path.join(tempDir(), "disk.raw");
    await makeRawDisk(source, 16);
    const info = await sourceInfo({ disk: source }, "test");
    expect(info).toEqual({ layout: { disk: source, format: "raw", backing: [] }, virtualSize: 16 * 1024 * 1024 });
    const target = path.join(tempDir(), "backup");
    await withSecretFd(PASSPHRASE, async (key) => {
      const progress: number[] = [];
      const used = format.encrypted ? key : undefined;
      await convertDisk({
        sourceImageOpts: rawOpts(source),
        target,
        format,
        virtualSize: info.virtualSize,
        bandwidthLimitMiBps: 0,
        key: used,
        subject: "test",
        onProgress: (p) => progress.push(p),
      });
      expect(progress.at(-1)).toBe(100);
      await checkImage(target, format.encrypted, key, "test");
      const expected = await streamSha256(rawOpts(source), undefined, "test");
      expect(await streamSha256(backupImageOpts(target, format.encrypted), used, "test")).toBe(expected);
      const restored = path.join(tempDir(), "restored.raw");
      await restoreImage({
        file: target,
        encrypted: format.encrypted,
        key,
        to: restored,
        format: "raw",
        subject: "test",
      });
      expect(await fileSha256(restored)).toBe(await fileSha256(source));
    });
    const bytes = await fs.readFile(target);
    if (format.encrypted) {
      // No byte of guest data in plaintext: neither the marker nor any qcow2 structure.
      expect(bytes.includes(PLAINTEXT_MARKER)).toBe(false);
      expect(bytes.includes("QFI\xfb")).toBe(false);
      expect(bytes.subarray(0, 6).toString("latin1")).toBe("LUKS\xba\xbe");
    } else if (format.compression === "none") {
      expect(bytes.includes(PLAINTEXT_MARKER)).toBe(true);
    }
    if (format.compression !== "none") {
      // 12 of the 16 MiB are non-zero, half of it random (incompressible); LUKS adds a 2 MiB header.
      const luksHeader = format.encrypted ? 2.1 * 1024 * 1024 : 0;
      expect(bytes.length).toBeLessThan(12 * 1024 * 1024 * 0.8 + luksHeader);
    }
  });

  test("a wrong passphrase is named as such, by the check and by a read-back", async () => {
    const source = path.join(tempDir(), "disk.raw");
    await makeRawDisk(source, 4);
    const target = path.join(tempDir(), "backup");
    const format = { compression: "zstd", encrypted: true } as const;
    await withSecretFd(PASSPHRASE, (key) => convertDisk({ ...small(source, target), format, key, subject: "src-1" }));
    const wrongKey = <T>(fn: (key: SecretFd) => Promise<T>) => withSecretFd("not-the-passphrase!", fn).catch((e) => e);
    const error = await wrongKey((key) => checkImage(target, true, key, "src-1"));
    expect(error).toMatchObject({ code: "WRONG_PASSPHRASE" });
    expect(error.message).toMatch(/^src-1: /);
    expect(error.message).not.toContain("not-the-passphrase!");

    const readBack = await wrongKey((key) => streamSha256(backupImageOpts(target, true), key, "item web-1-root"));
    expect(readBack).toMatchObject({ code: "WRONG_PASSPHRASE", message: expect.stringMatching(/^item web-1-root: /) });
    expect(readBack.message).not.toContain("not-the-passphrase!");
    expect(processesMentioning(tempDir())).toEqual([]);
  });

  test("a missing source and a source a running QEMU holds get their own errors", async () => {
    const missing = path.join(tempDir(), "nope.qcow2");
    await expect(sourceInfo({ disk: missing, format: "qcow2" }, "web-1-root")).rejects.toMatchObject({
      code: "SOURCE_MISSING",
      message: expect.stringMatching(/^web-1-root: .*check the disk path/),
    });
    const disk = path.join(tempDir(), "held.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "16M"]);
    // qemu-io holds the image's write lock, as a running VM would.
    const { spawn } = await import("node:child_process");
    const holder = spawn("qemu-io", ["-f", "qcow2", disk], { stdio: ["pipe", "ignore", "ignore"] });
    try {
      await new Promise((r) => setTimeout(r, 500));
      await expect(sourceInfo({ disk, format: "qcow2" }, "db-1-vda")).rejects.toMatchObject({
        code: "SOURCE_LOCKED",
        message: expect.stringMatching(/QMP socket/),
      });
    } finally {
      holder.kill();
    }
  });

  describe("a read-back stopped by its signal", () => {
    // A tool left running would hold the disk's lock and the pipe the run waits on.
    afterEach(() => expect(killLeftovers(tempDir())).toEqual([]));

    test.each([
      ["before it starts", -1],
      ["as it starts", 0],
      ["1 ms in", 1],
      ["5 ms in", 5],
      ["20 ms in", 20],
      ["100 ms in", 100],
    ])("%s is ABORTED or done, and leaves no tool running", async (_when, delayMs) => {
      const source = path.join(tempDir(), "disk.raw");
      await makeRawDisk(source, 64);
      const abort = new AbortController();
      if (delayMs < 0) abort.abort();
      const hashing = streamSha256(rawOpts(source), undefined, "source web-1-root", abort.signal);
      if (delayMs >= 0) setTimeout(() => abort.abort(), delayMs);
      const outcome = await hashing.then(
        (hash) => ({ hash }),
        (error) => ({ code: error.code, message: error.message }),
      );
      if ("hash" in outcome) {
        // Finished before the signal came: then it must be the right hash.
        expect(delayMs).toBeGreaterThan(0);
        expect(outcome.hash).toBe(await streamSha256(rawOpts(source), undefined, "test"));
      } else {
        expect(outcome).toEqual({ code: "ABORTED", message: "source web-1-root: stopped before it finished" });
      }
      expect(processesMentioning(tempDir())).toEqual([]);
    });

    test("while qemu-nbd unlocks a LUKS backup is ABORTED", async () => {
      const source = path.join(tempDir(), "disk.raw");
      await makeRawDisk(source, 4);
      const target = path.join(tempDir(), "backup");
      await withSecretFd(PASSPHRASE, async (key) => {
        const format = { compression: "none", encrypted: true } as const;
        await convertDisk({ ...small(source, target), format, key, subject: "test" });
        const abort = new AbortController();
        // Unlocking takes about 2 s of PBKDF: the signal comes while qemu-nbd is still starting.
        const hashing = streamSha256(backupImageOpts(target, true), key, "item web-1-root", abort.signal);
        setTimeout(() => abort.abort(), 200);
        await expect(hashing).rejects.toMatchObject({
          code: "ABORTED",
          message: "item web-1-root: stopped before it finished",
        });
      });
      expect(processesMentioning(tempDir())).toEqual([]);
    });
  });

  test("a read-back of a damaged image names qemu-nbd's reason, not just a dropped connection", async () => {
    const source = path.join(tempDir(), "disk.raw");
    await makeRawDisk(source, 4);
    const target = path.join(tempDir(), "backup");
    await convertDisk({ ...small(source, target), format: { compression: "zlib", encrypted: false }, subject: "test" });
    // Scribble over the first L2 table (qcow2 header: L1 offset at byte 40; L1[0] names the L2 table).
    const handle = await fs.open(target, "r+");
    const header = Buffer.alloc(48);
    await handle.read(header, 0, 48, 0);
    const l1Entry = Buffer.alloc(8);
    await handle.read(l1Entry, 0, 8, Number(header.readBigUInt64BE(40)));
    const l2Offset = Number(l1Entry.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    expect(l2Offset).toBeGreaterThan(0);
    await handle.write(Buffer.alloc(512, 0xaa), 0, 512, l2Offset);
    await handle.close();
    const error = await streamSha256(backupImageOpts(target, false), undefined, "item web-1-root").catch((e) => e);
    expect(error).toMatchObject({
      code: "QEMU_FAILED",
      message: expect.stringMatching(/^item web-1-root: qemu-nbd failed: .*Image is corrupt/),
    });
    // The `backing=` that keeps a backup's header from naming a file is on purpose: its warning is not the reason.
    expect(error.message).not.toContain("deprecated");
    expect(error.message).not.toContain("coffer-nbd-");
    expect(processesMentioning(tempDir())).toEqual([]);
  });

  describe("the passphrase on its way to a tool", () => {
    // Unique per run: other runs share the temp folder, and the scan below looks for this value.
    const secret = `fd-test-passphrase-${randomBytes(6).toString("hex")}`;
    const linkOf = (fd: number) => fs.readlink(`/proc/self/fd/${fd}`).catch(() => "closed");

    const oursInTmp = async () => (await fs.readdir(os.tmpdir())).filter((e) => e.includes(`-${process.pid}-`));

    test("reaches the tool as /dev/fd/3 from a file that never has a name, closed after use", async () => {
      let fd = -1;
      await withSecretFd(secret, async (key) => {
        fd = key.fd;
        expect(key.value).toBe(secret);
        const stat = await fs.stat(`/proc/self/fd/${fd}`);
        expect({ mode: stat.mode & 0o777, links: stat.nlink }).toEqual({ mode: 0o600, links: 0 });
        // The exact bytes, no newline: what the tool reads is the passphrase.
        expect(await run("cat", [KEY_FD_PATH], { subject: "test", key })).toBe(secret);
        // Not on disk under any name while in use; a tool's error never shows it.
        expect(await filesContaining(os.tmpdir(), secret)).toEqual([]);
        const echoing = ["-c", `cat ${KEY_FD_PATH} >&2; exit 1`];
        const failure = await run("sh", echoing, { subject: "test", key }).catch((e) => e);
        expect(failure.message).toMatch(/^test: sh failed: /);
        expect(failure.message).not.toContain(secret);
        expect(await linkOf(fd)).toMatch(/\(deleted\)$/);
        expect(await oursInTmp()).toEqual([]);
      });
      expect(await linkOf(fd)).not.toMatch(/\(deleted\)$/);
      const failing = withSecretFd(secret, async (key) => ((fd = key.fd), Promise.reject(new Error("boom"))));
      await expect(failing).rejects.toThrow("boom");
      expect(await linkOf(fd)).not.toMatch(/\(deleted\)$/);
    });

    test("on a file system without O_TMPFILE, the file loses its name before the secret is written", async () => {
      const refused = Object.assign(new Error("not supported"), { code: "EOPNOTSUPP" });
      const open = jest.spyOn(fs, "open").mockRejectedValueOnce(refused);
      try {
        await withSecretFd(secret, async (key) => {
          expect(open).toHaveBeenCalledTimes(2);
          expect((await fs.stat(`/proc/self/fd/${key.fd}`)).nlink).toBe(0);
          expect(await run("cat", [KEY_FD_PATH], { subject: "test", key })).toBe(secret);
          expect(await filesContaining(os.tmpdir(), secret)).toEqual([]);
          expect(await oursInTmp()).toEqual([]);
        });
      } finally {
        open.mockRestore();
      }
    });
  });
});
