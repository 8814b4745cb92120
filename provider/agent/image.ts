import { createHash } from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import { CofferError } from "../common/errors";
import * as path from "node:path";
import { LUKS_PAYLOAD_OFFSET_BYTES, writeLuksHeader } from "./luksHeader";
import { connectNbd } from "./nbdClient";
import { NBD_PID_FILE, NBD_SOCKET, SecretFd, withPrivateDir } from "./tempFiles";
import { KEY_FD_PATH, RunningTool, partialName, retryLuksCreation, run, start, toolFailure } from "./tools";

export type Compression = "none" | "zstd" | "zlib";

/**
 * How Coffer stores a backup. Unencrypted: a qcow2 file, compressed or not. Encrypted: a qcow2
 * image inside a LUKS container, whatever the compression. Never qcow2's own LUKS encryption:
 * QEMU 7.2 writes compressed clusters into it unencrypted, and a container encrypts every byte
 * of the qcow2 (metadata included) below the compression.
 */
export interface StoredFormat {
  compression: Compression;
  encrypted: boolean;
}

export const SECRET_ID = "coffer-key";

/** The names `backupFileName` gives: a finished backup file. */
export const BACKUP_FILE = /\.qcow2(\.luks)?$/;

export function backupFileName(item: string, format: StoredFormat): string {
  return format.encrypted ? `${item}.qcow2.luks` : `${item}.qcow2`;
}

/** Escapes a value for qemu's key=value option syntax (a comma is written twice). */
function optionValue(value: string): string {
  return value.replace(/,/g, ",,");
}

/** The passphrase as a qemu secret object: read from the unnamed file the tool gets as fd 3. */
export const SECRET_OBJECT = `secret,id=${SECRET_ID},file=${KEY_FD_PATH}`;

/**
 * The --image-opts string that opens a stored backup as the guest sees it. It follows no backing
 * file its header may name: Coffer never writes one, so a header that names one was tampered with.
 * An incremental backup's bases (nearest first, provider/agent/chain.ts) are given here instead;
 * a chain shares one key.
 */
export function backupImageOpts(file: string, encrypted: boolean, bases: readonly string[] = []): string {
  const layer = (at: string, file: string) => {
    const name = optionValue(file);
    const luks = `${at}file.driver=luks,${at}file.key-secret=${SECRET_ID},${at}file.file.driver=file`;
    const opened = encrypted
      ? `${luks},${at}file.file.filename=${name}`
      : `${at}file.driver=file,${at}file.filename=${name}`;
    return `${at}driver=qcow2,${opened}`;
  };
  const layers = [file, ...bases].map((f, depth) => layer("backing.".repeat(depth), f));
  return `${layers.join(",")},${"backing.".repeat(bases.length)}${NO_BACKING}`;
}

/**
 * Ends a qcow2 node's backing chain. QEMU 7.2 reads an empty `backing` as null (with a
 * deprecation warning): key=value options have no other way to say null.
 */
const NO_BACKING = "backing=";

function keyArgs(key: SecretFd | undefined): string[] {
  return key ? ["--object", SECRET_OBJECT] : [];
}

export type SourceFormat = "raw" | "qcow2";

/**
 * A stopped VM's disk as declared. Its format is never probed from its bytes (the guest writes
 * them), and it reads no other file unless that file is declared here.
 */
export interface DiskSource {
  disk: string;
  /** Absent: raw, refused if the disk starts with a known image header. */
  format?: SourceFormat;
  /** qcow2 only: the backing chain, nearest first. */
  backingFiles?: string[];
  /** qcow2 only: the external data file. */
  dataFile?: string;
}

/** The files of a source as Coffer opens them: every one named by the declaration, none by a header. */
export interface SourceLayout {
  disk: string;
  format: SourceFormat;
  /** Nearest first, each in the format its parent's header records. */
  backing: { file: string; format: SourceFormat }[];
  dataFile?: string;
}

export interface SourceInfo {
  layout: SourceLayout;
  virtualSize: number;
}

/** The --image-opts of a source: an explicit node tree, its backing chain ended explicitly. */
export function sourceImageOpts(layout: SourceLayout): string {
  const levels = [{ file: layout.disk, format: layout.format }, ...layout.backing];
  const options = levels.flatMap((level, depth) => {
    const at = "backing.".repeat(depth);
    return [`${at}driver=${level.format}`, `${at}file.driver=file`, `${at}file.filename=${optionValue(level.file)}`];
  });
  if (layout.dataFile) options.push("data-file.driver=file", `data-file.filename=${optionValue(layout.dataFile)}`);
  if (levels.at(-1)!.format === "qcow2") options.push("backing.".repeat(levels.length - 1) + NO_BACKING);
  return options.join(",");
}

/** Headers a disk of undeclared format must not start with: it would be backed up as raw. */
const IMAGE_HEADERS: { name: string; magic: string; at?: number }[] = [
  { name: "qcow2", magic: "QFI\xfb" },
  { name: "LUKS", magic: "LUKS\xba\xbe" },
  { name: "QED", magic: "QED\0" },
  { name: "VMDK", magic: "KDMV" },
  { name: "VMDK", magic: "COWD" },
  { name: "VMDK descriptor", magic: "# Disk DescriptorFile" },
  { name: "VDI", magic: "\x7f\x10\xda\xbe", at: 64 },
  { name: "VHDX", magic: "vhdxfile" },
  { name: "VHD", magic: "conectix" },
  { name: "Parallels", magic: "WithoutFreeSpace" },
  { name: "Parallels", magic: "WithouFreSpacExt" },
  { name: "Bochs", magic: "Bochs Virtual HD Image" },
];
const QCOW2_MAGIC = "QFI\xfb";

function startsWith(head: Buffer, magic: string, at = 0): boolean {
  return head.subarray(at, at + magic.length).equals(Buffer.from(magic, "latin1"));
}

const refused = (message: string) => new CofferError("INVALID_INPUT", message);

function cannotOpen(subject: string, file: string, fix: string, cause: unknown): CofferError {
  return new CofferError("SOURCE_MISSING", `${subject}: ${file} does not exist or can't be opened: ${fix}`, { cause });
}

async function readHead(file: string, subject: string): Promise<Buffer> {
  try {
    const handle = await fs.open(file, "r");
    try {
      const head = Buffer.alloc(512);
      const { bytesRead } = await handle.read(head, 0, head.length, 0);
      return head.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw cannotOpen(subject, file, "check the disk path", error);
  }
}

/** A name QEMU would not take as a plain file: `json:{...}`, or `<protocol>:` before any `/`. */
function isPseudoFilename(name: string): boolean {
  return /^[^/]*:/.test(name);
}

/**
 * What a stopped VM's disk holds, read from headers that only the declared files may fill: the
 * format is the declared one, and each backing or data file a header names must be declared.
 * A disk a running QEMU holds is refused (it is "locked").
 */
export async function sourceInfo(source: DiskSource, subject: string): Promise<SourceInfo> {
  const { disk } = source;
  if (source.format !== undefined && source.format !== "raw" && source.format !== "qcow2") {
    throw refused(`${subject}: format must be "raw" or "qcow2"`);
  }
  const head = source.format === "raw" ? undefined : await readHead(disk, subject);
  const header = source.format === undefined ? IMAGE_HEADERS.find((h) => startsWith(head!, h.magic, h.at)) : undefined;
  if (header) {
    throw refused(
      `${subject}: ${disk} starts with a ${header.name} header and its format is not declared: set format: "qcow2" ` +
        'if it is a qcow2 image, or format: "raw" if it is a raw disk whose guest wrote that header ' +
        "(Coffer never takes a format from the disk's bytes)",
    );
  }
  if (source.format !== "qcow2") {
    const info = await imageInfo({ file: disk, format: "raw" }, subject, "check the disk path");
    return { layout: { disk, format: "raw", backing: [] }, virtualSize: info["virtual-size"] };
  }
  if (!startsWith(head!, QCOW2_MAGIC)) {
    throw refused(
      `${subject}: ${disk} is not a qcow2 image, but its format is declared "qcow2": set format: "raw" if it is one`,
    );
  }
  const top = await imageInfo({ file: disk, format: "qcow2" }, subject, "check the disk path");
  const dataFile = checkDataFile(source, top, subject);
  const backing = await checkBackingChain(source, top, subject);
  const layout: SourceLayout = { disk, format: "qcow2", backing, ...(dataFile ? { dataFile } : {}) };
  return { layout, virtualSize: top["virtual-size"] };
}

interface QemuImageInfo {
  format: string;
  "virtual-size": number;
  encrypted?: boolean;
  "backing-filename"?: string;
  "backing-filename-format"?: string;
  "format-specific"?: { data?: { "data-file"?: string } };
}

/** `qemu-img info` of one file opened as `format`; it opens neither backing nor data files. */
async function imageInfo(image: { file: string; format: SourceFormat }, subject: string, fix: string) {
  const { file, format } = image;
  let text: string;
  try {
    const opts = sourceImageOpts({ disk: file, format, backing: [] });
    text = await run("qemu-img", ["info", "--output=json", "--image-opts", opts], { subject });
  } catch (error) {
    if ((error as CofferError).code === "SOURCE_LOCKED") {
      throw new CofferError(
        "SOURCE_LOCKED",
        `${subject}: ${file} is in use by a running QEMU: back it up through the VM's QMP socket (qmpSocket + device) instead`,
        { cause: error },
      );
    }
    if ((error as CofferError).code === "SOURCE_MISSING") throw cannotOpen(subject, file, fix, error);
    throw error;
  }
  const info = JSON.parse(text) as QemuImageInfo;
  if (info.encrypted) {
    throw new CofferError(
      "QEMU_FAILED",
      `${subject}: ${file} is an encrypted qcow2: Coffer can't read it without its key`,
    );
  }
  return info;
}

/** The declared data file, when the header names the same one; any other data file is refused. */
function checkDataFile(source: DiskSource, info: QemuImageInfo, subject: string): string | undefined {
  const named = info["format-specific"]?.data?.["data-file"];
  const { disk, dataFile } = source;
  if (named === undefined) {
    if (dataFile === undefined) return undefined;
    throw refused(`${subject}: dataFile is ${dataFile}, but ${disk} has no external data file: remove dataFile`);
  }
  const fix = "record a plain absolute path (qemu-img amend -o data_file=<path>)";
  if (isPseudoFilename(named)) {
    throw refused(
      `${subject}: ${disk} names its data file as ${named}: a json: or protocol name is never followed; ${fix}`,
    );
  }
  if (!path.isAbsolute(named)) {
    throw refused(
      `${subject}: ${disk} names its data file relatively (${named}), which QEMU looks up from where it runs: ${fix}`,
    );
  }
  if (dataFile === undefined) {
    throw refused(
      `${subject}: ${disk} has an external data file, ${named}, that is not declared: Coffer reads no file a disk's ` +
        `header names unless it is declared; set dataFile: "${named}" if it is part of this disk`,
    );
  }
  if (path.resolve(named) !== path.resolve(dataFile)) {
    throw refused(
      `${subject}: ${disk} names its data file ${named}, but dataFile is ${dataFile}: declare the one it uses`,
    );
  }
  return dataFile;
}

/**
 * Follows the backing chain header by header, as far as `backingFiles` declares it: each name
 * must be a plain file (relative names resolve against the image's folder, as QEMU does) equal
 * to the declared one, with its format recorded in the header. A backing file beyond the declared
 * chain is refused.
 */
async function checkBackingChain(source: DiskSource, top: QemuImageInfo, subject: string) {
  const declared = source.backingFiles ?? [];
  const chain: SourceLayout["backing"] = [];
  let image = { file: source.disk, info: top };
  for (;;) {
    const named = image.info["backing-filename"];
    if (named === undefined) break;
    const depth = chain.length;
    if (isPseudoFilename(named)) {
      throw refused(
        `${subject}: ${image.file} names its backing file as ${named}: a json: or protocol name is never followed, ` +
          "declared or not; rebase the image onto a plain file (qemu-img rebase -u -b <path> -F <format>)",
      );
    }
    const resolved = path.resolve(path.dirname(image.file), named);
    if (depth >= declared.length) {
      const fix = depth === 0 ? `set backingFiles: ["${resolved}"]` : `add it to backingFiles after ${image.file}`;
      throw refused(
        `${subject}: ${image.file} has a backing file, ${resolved}, that is not declared: Coffer reads no file a ` +
          `disk's header names unless it is declared; if it is part of this disk, ${fix}`,
      );
    }
    if (resolved !== path.resolve(declared[depth])) {
      throw refused(
        `${subject}: ${image.file} has the backing file ${resolved}, but backingFiles[${depth}] is ` +
          `${declared[depth]}: declare the chain the image uses, nearest first`,
      );
    }
    const format = image.info["backing-filename-format"];
    if (format !== "raw" && format !== "qcow2") {
      const what = format === undefined ? "does not record its backing file's format" : `has a ${format} backing file`;
      throw refused(
        `${subject}: ${image.file} ${what}: Coffer reads raw and qcow2 backing files whose format the header ` +
          `records (qemu-img rebase -u -b ${named} -F raw|qcow2)`,
      );
    }
    chain.push({ file: declared[depth], format });
    if (format === "raw") break;
    const info = await imageInfo({ file: declared[depth], format }, subject, "check backingFiles");
    if (info["format-specific"]?.data?.["data-file"] !== undefined) {
      throw refused(
        `${subject}: backing file ${declared[depth]} has an external data file: only the disk itself may have one`,
      );
    }
    image = { file: declared[depth], info };
  }
  if (chain.length < declared.length) {
    const last = chain.at(-1)?.file ?? source.disk;
    const extra = declared[chain.length];
    throw refused(`${subject}: backingFiles[${chain.length}] is ${extra}, but ${last} has no backing file: remove it`);
  }
  return chain;
}

/**
 * The persistent bitmaps in a stopped qcow2 disk's header, as `qemu-img info` reads them (shared, so
 * it neither waits for nor takes a lock): "in-use" marks one a QEMU had open and did not save.
 * The header holds no dirty count; only an open QEMU knows it.
 */
export async function storedBitmaps(layout: SourceLayout, subject: string) {
  const args = ["info", "-U", "--output=json", "--image-opts", sourceImageOpts(layout)];
  const info = JSON.parse(await run("qemu-img", args, { subject })) as {
    "format-specific"?: { data?: { bitmaps?: { name: string; flags: string[] }[] } };
  };
  return (info["format-specific"]?.data?.bitmaps ?? []).map((b) => ({
    name: b.name,
    recording: b.flags.includes("auto"),
    busy: false,
    inconsistent: b.flags.includes("in-use"),
  }));
}

/**
 * Makes an empty backup image of `virtualSize` at `file` to write into with `convert -n` or a
 * QMP job: a qcow2 (with the compression type set), wrapped in LUKS when a key is given.
 */
export async function createEmptyBackup(
  file: string,
  virtualSize: number,
  compression: Compression,
  key: SecretFd | undefined,
  subject: string,
) {
  const compressionType = compression === "zlib" ? "zlib" : "zstd";
  if (!key) {
    await run(
      "qemu-img",
      ["create", "-q", "-f", "qcow2", "-o", `compression_type=${compressionType}`, file, String(virtualSize)],
      { subject },
    );
    return;
  }
  // The bytes of an empty qcow2 become the payload of a LUKS container; qcow2 then grows inside it.
  // A partial name: if this process is killed here, sweeps and deletes still find the file.
  const inner = path.join(path.dirname(file), partialName(`${path.basename(file)}-inner`));
  try {
    await run(
      "qemu-img",
      ["create", "-q", "-f", "qcow2", "-o", `compression_type=${compressionType}`, inner, String(virtualSize)],
      { subject },
    );
    if (key.random) {
      // A random key needs no stretching, and QEMU's creation spends ~2 s timing its PBKDF: the header is ours.
      await writeLuksHeader(file, key.value);
      await fs.truncate(file, LUKS_PAYLOAD_OFFSET_BYTES + (await fs.stat(inner)).size);
      const payload = `driver=luks,key-secret=${SECRET_ID},file.driver=file,file.filename=${optionValue(file)}`;
      const into = ["-n", "--target-image-opts", payload];
      await run("qemu-img", ["convert", "-f", "raw", ...keyArgs(key), inner, ...into], { subject, key });
      return;
    }
    const toLuks = ["convert", "-f", "raw", "-O", "luks", ...keyArgs(key), "-o", `key-secret=${SECRET_ID}`];
    await retryLuksCreation(() =>
      run("qemu-img", [...toLuks, inner, file], {
        subject,
        key,
      }),
    );
  } finally {
    await fs.rm(inner, { force: true });
  }
}

export interface ConvertRequest {
  /** The source's --image-opts (`sourceImageOpts`): qemu never parses a source's file name. */
  sourceImageOpts: string;
  target: string;
  format: StoredFormat;
  virtualSize: number;
  bandwidthLimitMiBps: number;
  key?: SecretFd;
  subject: string;
  signal?: AbortSignal;
  onProgress?: (percent: number) => void;
}

/** Reads the lines `qemu-img convert -p` writes ("    (40.00/100%)") into percents. */
function qemuImgProgress(onProgress: (percent: number) => void): (line: string) => void {
  return (line) => {
    const match = /\(([\d.]+)\/100%\)/.exec(line);
    if (match) onProgress(Number(match[1]));
  };
}

/** Progress of reading `totalBytes` of data: called with the percent read so far. */
export interface ReadProgress {
  totalBytes: number;
  onProgress(percent: number): void;
}

/** Counts the chunks read into `progress`'s percents. */
function countChunks(progress: ReadProgress | undefined): (chunk: Buffer) => void {
  if (!progress || progress.totalBytes <= 0) return () => undefined;
  let read = 0;
  return (chunk) => {
    read += chunk.length;
    progress.onProgress(Math.min(100, (100 * read) / progress.totalBytes));
  };
}

/** Copies a stopped VM's disk into a new backup image in one pass. */
export async function convertDisk(req: ConvertRequest): Promise<void> {
  const compress = req.format.compression !== "none";
  const common = [
    "convert",
    "-p",
    ...(compress ? ["-c", "-m", "4", "-W"] : []),
    // -r counts the source's non-zero bytes per second.
    ...(req.bandwidthLimitMiBps > 0 ? ["-r", `${req.bandwidthLimitMiBps}M`] : []),
    "--image-opts",
  ];
  const onStdoutLine = req.onProgress && qemuImgProgress(req.onProgress);
  if (req.format.encrypted) {
    if (!req.key) throw new Error("an encrypted backup needs its key");
    await createEmptyBackup(req.target, req.virtualSize, req.format.compression, req.key, req.subject);
    const target = ["-n", "--target-image-opts", backupImageOpts(req.target, true)];
    await run("qemu-img", [...common, req.sourceImageOpts, ...keyArgs(req.key), ...target], {
      subject: req.subject,
      key: req.key,
      signal: req.signal,
      onStdoutLine,
    });
  } else {
    const options = compress ? ["-o", `compression_type=${req.format.compression}`] : [];
    await run("qemu-img", [...common, "-O", "qcow2", ...options, req.sourceImageOpts, req.target], {
      subject: req.subject,
      signal: req.signal,
      onStdoutLine,
    });
  }
}

/** `qemu-img check` of a backup: metadata only (it passes flipped bytes in data clusters). */
export async function checkImage(file: string, encrypted: boolean, key: SecretFd | undefined, subject: string) {
  const used = encrypted ? key : undefined;
  const image = ["--image-opts", backupImageOpts(file, encrypted)];
  await run("qemu-img", ["check", "-q", ...keyArgs(used), ...image], { subject, key: used });
}

/**
 * SHA-256 of the data the guest would see in the image: decrypted and decompressed by qemu-nbd and
 * read here over NBD (qemu-img can't write to a pipe), never written to disk.
 */
export async function streamSha256(
  imageOpts: string,
  key: SecretFd | undefined,
  subject: string,
  signal?: AbortSignal,
  progress?: ReadProgress,
): Promise<string> {
  const secrets = key ? [key.value] : [];
  // Named by host and pid: if this process is killed, the next start stops the server and removes the folder.
  return withPrivateDir("nbd", async (dir) => {
    const socket = path.join(dir, NBD_SOCKET);
    const pidFile = path.join(dir, NBD_PID_FILE);
    const serve = ["-r", "-k", socket, `--pid-file=${pidFile}`, ...keyArgs(key), "--image-opts", imageOpts];
    const server = await start("qemu-nbd", serve, {
      subject,
      key,
      signal,
      discardStdout: true,
    });
    try {
      await untilServing(server, pidFile, subject);
      const hash = createHash("sha256");
      const counted = countChunks(progress);
      const read = async () => {
        const image = await connectNbd(socket);
        try {
          await image.readRange(0, image.size, (chunk) => (hash.update(chunk), counted(chunk)), signal);
        } finally {
          await image.close();
        }
      };
      await read().catch(async (error) => {
        if (signal?.aborted) throw new CofferError("ABORTED", `${subject}: stopped before it finished`, { secrets });
        // The client only sees the connection drop; qemu-nbd says why (e.g. an unreadable cluster).
        server.stop();
        const reason = await server.stderr;
        throw reason
          ? toolFailure("qemu-nbd", reason, { subject, secrets }, error)
          : new CofferError("QEMU_FAILED", `${subject}: reading the image back failed: ${(error as Error).message}`, {
              secrets,
              cause: error,
            });
      });
      return hash.digest("hex");
    } finally {
      server.stop();
      await server.finished.catch(() => undefined);
    }
  });
}

/** qemu-nbd writes its pid file once its socket listens; its failure (or abort) ends the wait. */
async function untilServing(server: RunningTool, pidFile: string, subject: string): Promise<void> {
  const exited = server.finished.then(() => {
    throw new CofferError("QEMU_FAILED", `${subject}: qemu-nbd exited before it served the image`);
  });
  exited.catch(() => undefined); // settles after the wait when the server is stopped
  let waiting = true;
  const listening = (async () => {
    while (waiting) {
      if (
        await fs.access(pidFile).then(
          () => true,
          () => false,
        )
      )
        return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  try {
    await Promise.race([listening, exited]);
  } finally {
    waiting = false;
  }
}

/** SHA-256 of a file's own bytes: catches bit rot without the key. */
export async function fileSha256(file: string, progress?: ReadProgress): Promise<string> {
  const hash = createHash("sha256");
  const counted = countChunks(progress);
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    counted(chunk as Buffer);
  }
  return hash.digest("hex");
}

/** Writes the guest data of a backup to `to` as raw or qcow2. */
export interface RestoreRequest {
  /** The backup file. */
  file: string;
  /** An incremental backup's bases, nearest first (chainBases). */
  bases?: readonly string[];
  encrypted: boolean;
  key: SecretFd | undefined;
  /** The disk file to write. */
  to: string;
  format: "raw" | "qcow2";
  subject: string;
  onProgress?: (percent: number) => void;
}

/**
 * Opens a LUKS container with `key` (an encrypted Cinder volume's data, whose LUKS passphrase is
 * the hex of its Barbican key) and writes its plain data to `to`: qemu-img's luks driver, no
 * dm-crypt. A wrong key fails with WRONG_PASSPHRASE.
 */
export async function openLuks(req: {
  file: string;
  key: SecretFd;
  to: string;
  format: "raw" | "qcow2";
  subject: string;
  onProgress?: (percent: number) => void;
}): Promise<void> {
  const image = `driver=luks,key-secret=${SECRET_ID},file.driver=file,file.filename=${optionValue(req.file)}`;
  const progress = req.onProgress ? ["-p"] : [];
  await run(
    "qemu-img",
    ["convert", ...progress, ...keyArgs(req.key), "--image-opts", image, "-O", req.format, req.to],
    {
      subject: req.subject,
      key: req.key,
      onStdoutLine: req.onProgress && qemuImgProgress(req.onProgress),
    },
  );
}

/**
 * Seals a plain raw disk into a LUKS container with `key`, as Cinder's encryptor would (LUKS1,
 * aes-xts-plain64 with a 256-bit key unless the volume type's spec says otherwise).
 */
export async function sealLuks(req: {
  file: string;
  key: SecretFd;
  to: string;
  spec?: { cipher?: string; keySize?: number };
  subject: string;
}): Promise<void> {
  const [alg, mode, ivgen] = (req.spec?.cipher ?? "aes-xts-plain64").split("-");
  // XTS splits its key in two: a 256-bit XTS key is AES-128.
  const bits = (req.spec?.keySize ?? 256) / (mode === "xts" ? 2 : 1);
  const options = `key-secret=${SECRET_ID},cipher-alg=${alg}-${bits},cipher-mode=${mode},ivgen-alg=${ivgen}`;
  const args = ["convert", ...keyArgs(req.key), "-f", "raw", "-O", "luks", "-o", options, req.file, req.to];
  await retryLuksCreation(() => run("qemu-img", args, { subject: req.subject, key: req.key }));
}

export async function restoreImage({ file, bases, encrypted, key, to, format, subject, onProgress }: RestoreRequest) {
  const used = encrypted ? key : undefined;
  const image = ["--image-opts", backupImageOpts(file, encrypted, bases)];
  const progress = onProgress ? ["-p"] : [];
  await run("qemu-img", ["convert", ...progress, ...keyArgs(used), ...image, "-O", format, to], {
    subject,
    key: used,
    onStdoutLine: onProgress && qemuImgProgress(onProgress),
  });
}
