import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { ItemRequest, backupItem, verifySet, writeManifest } from "../../provider/agent/backupSet";
import { backupImageOpts, restoreImage, streamSha256 } from "../../provider/agent/image";
import { MANIFEST_KIND, Manifest, ManifestItem } from "../../provider/agent/manifest";
import { makeRawDisk } from "../support/disks";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(120_000);
const tempDir = useTempDir();
const MANIFEST_SECRET = "source-format-test-manifest-key";
/** What a host file outside every VM's disk holds; no backup may contain it. */
const HOST_MARKER = "HOST-FILE-NOT-A-GUEST-DISK-7c2e91";
const MiB = 1024 * 1024;

const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex");
const qemuImg = (...args: string[]) => execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
const setDir = () => path.join(tempDir(), "target", "set-1");

/** Unencrypted and uncompressed, so the backup file's bytes can be searched for the host's. */
function request(name: string, source: ItemRequest["source"]): ItemRequest {
  const zoneDir = path.join(tempDir(), "target");
  const policy = { compression: "none", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "full" } as const;
  return { zoneDir, setId: "set-1", name, source, ...policy };
}

/** The error of a backup that must be refused; one that is taken fails the test. */
async function refusal(name: string, source: ItemRequest["source"]): Promise<{ code: string; message: string }> {
  const taken = await backupItem(request(name, source)).then(
    () => true,
    (error) => error,
  );
  if (taken === true) throw new Error(`source ${name} was backed up, not refused`);
  return taken;
}

/** A host file full of the marker (so any cluster read from it shows). */
async function hostFile(name = "host-secret.raw"): Promise<string> {
  const file = path.join(tempDir(), name);
  const line = Buffer.from(`${HOST_MARKER}\n`);
  const bytes = Buffer.alloc(8 * MiB);
  for (let at = 0; at + line.length <= bytes.length; at += line.length) line.copy(bytes, at);
  await fs.writeFile(file, bytes);
  return file;
}

/**
 * The attack: a raw disk whose guest wrote, over its first sectors, the header (and empty
 * tables) of a qcow2 image backed by a host file. Probed, it is that host file.
 */
async function attackDisk(): Promise<{ disk: string; host: string }> {
  const host = await hostFile();
  const header = path.join(tempDir(), "header.qcow2");
  qemuImg("create", "-q", "-f", "qcow2", "-b", host, "-F", "raw", header, "8M");
  const disk = path.join(tempDir(), "vm-1.raw");
  await makeRawDisk(disk, 8);
  const handle = await fs.open(disk, "r+");
  await handle.write(await fs.readFile(header), 0);
  await handle.close();
  expect((await fs.stat(disk)).size).toBe(8 * MiB);
  return { disk, host };
}

async function restored(item: ManifestItem): Promise<string> {
  const to = path.join(tempDir(), `restored-${item.name}.raw`);
  await restoreImage({
    file: path.join(setDir(), item.file),
    encrypted: false,
    key: undefined,
    to,
    format: "raw",
    subject: "test",
  });
  return to;
}

async function setFolderFiles(): Promise<string[]> {
  return fs.readdir(setDir()).catch(() => []);
}

describe("a source's format is declared, never probed from what the guest wrote", () => {
  test("a raw disk whose guest wrote a qcow2 header naming a host file backs up as itself, not that file", async () => {
    const { disk } = await attackDisk();
    const item = await backupItem(request("vm-1-root", { disk, format: "raw" }));
    expect(item.source).toEqual({ kind: "disk", path: disk, format: "raw" });
    expect(item.virtualSize).toBe(8 * MiB);
    expect((await fs.readFile(path.join(setDir(), item.file))).includes(HOST_MARKER)).toBe(false);
    const to = await restored(item);
    expect(await sha256(to)).toBe(await sha256(disk));
    expect((await fs.readFile(to)).includes(HOST_MARKER)).toBe(false);
  });

  test("the same disk without a declared format is refused, naming source and format; nothing is left", async () => {
    const { disk } = await attackDisk();
    const error = await refusal("vm-1-root", { disk });
    expect(error.code).toBe("INVALID_INPUT");
    expect(error.message).toMatch(/^source vm-1-root: .*vm-1\.raw starts with a qcow2 header/);
    expect(error.message).toMatch(/set format: "qcow2" .*format: "raw"/);
    expect(await setFolderFiles()).toEqual([]);
  });

  test.each([
    ["LUKS", 0, "LUKS\xba\xbe"],
    ["VMDK", 0, "KDMV"],
    ["VHDX", 0, "vhdxfile"],
    ["VDI", 64, "\x7f\x10\xda\xbe"],
    ["QED", 0, "QED\0"],
  ])("a disk of undeclared format that starts with a %s header is refused", async (name, at, magic) => {
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 4);
    const handle = await fs.open(disk, "r+");
    await handle.write(Buffer.from(magic, "latin1"), 0, magic.length, at);
    await handle.close();
    expect((await refusal("d", { disk })).message).toContain(`starts with a ${name} header`);
  });

  test("a qcow2 disk declared raw-by-default is refused; declared qcow2 it backs up", async () => {
    const disk = path.join(tempDir(), "d.qcow2");
    const raw = path.join(tempDir(), "d.raw");
    await makeRawDisk(raw, 4);
    qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, disk);
    expect((await refusal("d", { disk })).message).toMatch(/qcow2 header .*format: "qcow2"/);
    const item = await backupItem(request("d", { disk, format: "qcow2" }));
    expect(item.source).toEqual({ kind: "disk", path: disk, format: "qcow2" });
    expect(await sha256(await restored(item))).toBe(await sha256(raw));
    // Declared qcow2, a raw file is refused as not qcow2.
    expect((await refusal("r", { disk: raw, format: "qcow2" })).message).toMatch(/is not a qcow2 image.*format: "raw"/);
  });
});

describe("a qcow2 reads no file its header names unless that file is declared", () => {
  test("an undeclared backing file outside the disk is refused, naming it and backingFiles; nothing left", async () => {
    const host = await hostFile();
    const disk = path.join(tempDir(), "overlay.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-b", host, "-F", "raw", disk, "8M");
    const error = await refusal("vm-1-root", { disk, format: "qcow2" });
    expect(error.code).toBe("INVALID_INPUT");
    expect(error.message).toMatch(/^source vm-1-root: .*overlay\.qcow2 has a backing file, .*, that is not declared/);
    expect(error.message).toMatch(/set backingFiles: \[/);
    expect(error.message).toContain(`backing file, ${host}, that`);
    expect(await setFolderFiles()).toEqual([]);
  });

  test("an undeclared external data file outside the disk is refused, naming dataFile; nothing is left", async () => {
    const disk = path.join(tempDir(), "with-data-file.qcow2");
    const host = path.join(tempDir(), "host-secret.raw");
    // Creating the image creates its data file; the host's content is written after.
    qemuImg("create", "-q", "-f", "qcow2", "-o", `data_file=${host},data_file_raw=on`, disk, "8M");
    await hostFile();
    const error = await refusal("vm-1-root", { disk, format: "qcow2" });
    expect(error.code).toBe("INVALID_INPUT");
    expect(error.message).toMatch(/^source vm-1-root: .*has an external data file, .*, that is not declared.*dataFile/);
    expect(error.message).toContain(`data file, ${host}, that`);
    expect(await setFolderFiles()).toEqual([]);
  });

  test("a declared external data file is read as declared", async () => {
    const data = path.join(tempDir(), "data.raw");
    const disk = path.join(tempDir(), "with-data-file.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-o", `data_file=${data},data_file_raw=on`, disk, "8M");
    await makeRawDisk(data, 8);
    const item = await backupItem(request("d", { disk, format: "qcow2", dataFile: data }));
    expect(item.source).toEqual({ kind: "disk", path: disk, format: "qcow2", dataFile: data });
    expect(await sha256(await restored(item))).toBe(await sha256(data));
    const other = await hostFile("other.raw");
    const error = await refusal("e", { disk, format: "qcow2", dataFile: other });
    expect(error.message).toMatch(/names its data file .*data\.raw, but dataFile is .*other\.raw/);
  });

  test("a json: backing file name is refused, declared or not", async () => {
    const host = await hostFile();
    const disk = path.join(tempDir(), "json-backed.qcow2");
    const name = `json:{"driver":"file","filename":"${host}"}`;
    qemuImg("create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw", disk, "8M");
    expect(JSON.parse(qemuImg("info", "--output=json", "-U", disk))["backing-filename"]).toBe(name);
    for (const backingFiles of [undefined, [host]]) {
      const error = await refusal("vm-1-root", { disk, format: "qcow2", backingFiles });
      expect(error.code).toBe("INVALID_INPUT");
      expect(error.message).toMatch(/^source vm-1-root: .*names its backing file as json:.*never followed/);
    }
    expect(await setFolderFiles()).toEqual([]);
  });

  test("a declared backing chain backs up byte for byte as QEMU reads it, and the full check passes", async () => {
    const base = path.join(tempDir(), "base.raw");
    await makeRawDisk(base, 8);
    const middle = path.join(tempDir(), "middle.qcow2");
    const top = path.join(tempDir(), "top.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", middle, "8M");
    execFileSync("qemu-io", ["-c", "write -P 0xaa 1M 128k", middle]);
    // A relative name, resolved against the image's folder as QEMU does.
    qemuImg("create", "-q", "-f", "qcow2", "-b", "middle.qcow2", "-F", "qcow2", top, "8M");
    execFileSync("qemu-io", ["-c", "write -P 0xbb 5M 64k", top]);
    const expected = path.join(tempDir(), "expected.raw");
    qemuImg("convert", "-O", "raw", top, expected);

    const source = { disk: top, format: "qcow2" as const, backingFiles: [middle, base] };
    const item = await backupItem(request("vm-1-root", source));
    expect(item.verifiedAtBackup).toBe("full");
    expect(item.source).toEqual({ kind: "disk", path: top, format: "qcow2", backingFiles: [middle, base] });
    expect(await sha256(await restored(item))).toBe(await sha256(expected));
    const manifest: Manifest = {
      kind: MANIFEST_KIND,
      schemaVersion: 1,
      setId: "set-1",
      name: "t",
      trigger: "t",
      zone: "z",
      policy: { compression: "none", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "full" },
      keySource: "manifest-key",
      qemuVersion: "7.2",
      createdAt: "t",
      items: [item],
    };
    await writeManifest(setDir(), manifest, MANIFEST_SECRET);
    const verified = await verifySet(setDir(), "full", { manifestSecret: MANIFEST_SECRET });
    expect(verified).toMatchObject({ status: "ok", failures: [] });

    // The chain ends where the declaration ends, and it must be the chain the headers name.
    expect((await refusal("short", { ...source, backingFiles: [middle] })).message).toMatch(
      /middle\.qcow2 has a backing file, .*base\.raw, that is not declared.*add it to backingFiles after/,
    );
    expect((await refusal("swapped", { ...source, backingFiles: [base, middle] })).message).toMatch(
      /has the backing file .*middle\.qcow2, but backingFiles\[0\] is .*base\.raw/,
    );
    expect((await refusal("long", { ...source, backingFiles: [middle, base, expected] })).message).toMatch(
      /backingFiles\[2\] is .*expected\.raw, but .*base\.raw has no backing file/,
    );
  });

  test("a backing file whose format the header does not record is refused", async () => {
    const base = path.join(tempDir(), "base.raw");
    await makeRawDisk(base, 4);
    const disk = path.join(tempDir(), "overlay.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", disk, "4M");
    // QEMU 7.2 won't write such a header: turn the backing format extension into an unknown one.
    const header = await fs.readFile(disk);
    const at = header.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(at).toBeGreaterThan(0);
    header.writeUInt32BE(0x0c0ffee0, at);
    await fs.writeFile(disk, header);
    expect(JSON.parse(qemuImg("info", "--output=json", disk))).not.toHaveProperty("backing-filename-format");
    const error = await refusal("d", { disk, format: "qcow2", backingFiles: [base] });
    expect(error.message).toMatch(/does not record its backing file's format/);
  });
});

describe("a stored backup is opened without following a backing file its header names", () => {
  test("a backup whose header was rebased onto a host file still restores and hashes as the disk", async () => {
    const host = await hostFile();
    const disk = path.join(tempDir(), "d.raw");
    await makeRawDisk(disk, 8); // a quarter zeros: clusters the backup leaves unallocated
    const backup = path.join(tempDir(), "backup.qcow2");
    qemuImg("convert", "-f", "raw", "-O", "qcow2", disk, backup);
    qemuImg("rebase", "-u", "-b", host, "-F", "raw", backup);
    const to = path.join(tempDir(), "restored.raw");
    await restoreImage({ file: backup, encrypted: false, key: undefined, to, format: "raw", subject: "test" });
    expect((await fs.readFile(to)).includes(HOST_MARKER)).toBe(false);
    expect(await sha256(to)).toBe(await sha256(disk));
    // The stream hash is the SHA-256 of the guest's bytes: a raw disk's own.
    expect(await streamSha256(backupImageOpts(backup, false), undefined, "test")).toBe(await sha256(disk));
  });
});
